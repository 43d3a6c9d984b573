//! The IO edge: one HTTP(S) listener serving health, metrics and the websocket fork
//! endpoints; shared state; start-up recovery; graceful drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use thiserror::Error;

use crate::app::{config_redactors, AppState, Health, Intake, Lifecycle, Records, Viewers};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::recorder::{RecorderPool, RecorderSettings};
use crate::store::spool::{recover_inflight, StoreLayout};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("storage directory {path}: {source}")]
    Storage { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS certificate/key: {0}")]
    Tls(std::io::Error),
    #[error("refusing to listen on non-loopback {addr} while tenant(s) {tenants} use the demo secret (pass --allow-demo-secrets to override)")]
    DemoSecretExposed { addr: SocketAddr, tenants: String },
    #[error("recorder threads: {0}")]
    Recorder(std::io::Error),
    #[error(transparent)]
    Playbook(#[from] crate::coach::playbooks::PlaybookLoadError),
    #[error("storage: {0}")]
    Store(crate::store::objects::StorageError),
    #[error(transparent)]
    Sip(#[from] crate::ingest::sip::listener::SipStartError),
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
}

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/fork/twilio/{tenant}", get(crate::ingest::twilio::socket::handler))
        .route("/fork/pcm", get(crate::ingest::pcm::socket::handler))
        .route("/fork/pcm/{tenant}", get(crate::ingest::pcm::socket::handler_with_tenant))
        .route("/live", get(crate::live::socket::handler))
        .route("/overlay", get(crate::live::overlay::index))
        .route("/overlay/", get(crate::live::overlay::index))
        .route("/overlay/overlay.js", get(crate::live::overlay::script))
        .route("/overlay/overlay.css", get(crate::live::overlay::style))
        .merge(crate::admin::router())
        .merge(crate::ingest::whip::endpoint::router())
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<Health>>) -> impl IntoResponse {
    if app.lifecycle.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let layout = app.layout.clone();
    let writable = tokio::task::spawn_blocking(move || layout.is_writable()).await.unwrap_or(false);
    if !writable {
        return (StatusCode::SERVICE_UNAVAILABLE, "storage not writable\n");
    }
    (StatusCode::OK, "ready\n")
}

async fn metrics(State(app): State<Arc<Health>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}

#[derive(Default)]
pub struct ServeOptions {
    pub allow_demo_secrets: bool,
    /// Receives every call's 16 kHz per-channel audio (the ASR feature registers here).
    pub recogniser: Option<(Arc<dyn crate::media::recogniser::RecogniserHub>, crate::media::recogniser::FeedSettings)>,
    /// Metrics registry to use (so parts built before the server, like the ASR hub,
    /// report into the same one); a fresh one when `None`.
    pub metrics: Option<Metrics>,
    /// The config file, re-read for what reloads without a restart (retention policies).
    pub config_path: Option<std::path::PathBuf>,
    /// The clock; the system's when `None`.
    pub clock: Option<Clock>,
}

/// A running server.
pub struct Server {
    pub app: AppState,
    pub local_addr: SocketAddr,
    /// The SIP listener's address (UDP and TCP), when `[sip]` is configured.
    pub sip_addr: Option<SocketAddr>,
    sip: Option<crate::ingest::sip::listener::SipListener>,
    handle: axum_server::Handle<SocketAddr>,
    serve_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Refuses a non-loopback listener while a tenant uses the demo secret (checked before
/// anything slow, like loading models, so the refusal is immediate).
pub fn check_exposure(config: &Config, allow_demo_secrets: bool) -> Result<(), ServerError> {
    let demo = config.demo_secret_tenants();
    if !demo.is_empty() && !config.http.listen.ip().is_loopback() && !allow_demo_secrets {
        return Err(ServerError::DemoSecretExposed { addr: config.http.listen, tenants: demo.join(", ") });
    }
    Ok(())
}

impl Server {
    /// Validates the deployment, recovers crashed recordings, binds and starts serving.
    pub async fn start(config: Config, opts: ServeOptions) -> Result<Server, ServerError> {
        let demo = config.demo_secret_tenants();
        if !demo.is_empty() {
            tracing::warn!(tenants = ?demo, "!!! tenant(s) use the well-known demo fork secret `demo`: anyone who can reach this port can push calls. Set a real fork_secret before exposing Earshot.");
        }
        check_exposure(&config, opts.allow_demo_secrets)?;
        let root = config.storage.spool_dir();
        std::fs::create_dir_all(&root).map_err(|source| ServerError::Storage { path: root.clone(), source })?;
        let layout = StoreLayout::new(root);
        let store = crate::store::objects::Store::open(&config.storage).map_err(ServerError::Store)?;
        store.keys().ensure_tenants(config.tenants.iter().map(|t| t.id.as_str())).map_err(ServerError::Store)?;
        for t in &config.tenants {
            if t.retention_days.is_none() {
                tracing::warn!(tenant = %t.id, "tenant has no retention_days: its calls are kept until deleted by hand");
            }
        }
        tracing::info!(store = store.describe(), spool = %layout.root().display(), keyring = %store.keys().path().display(), "storage");
        let metrics = opts.metrics.clone().unwrap_or_default();
        let recovery_layout = layout.clone();
        let recovered =
            tokio::task::spawn_blocking(move || recover_inflight(&recovery_layout)).await.unwrap_or_default();
        for r in recovered {
            match r {
                Ok(c) => {
                    metrics.recovered_calls.inc();
                    metrics.calls_ended.with_label_values(&[c.source.as_str(), "recovered_after_crash"]).inc();
                    tracing::warn!(call_id = %c.call_id, dir = %c.dir.display(), audio_bytes = ?c.audio_bytes, "recovered a call left open by a crash");
                }
                Err(e) => tracing::error!(error = %e, "could not recover a call left open by a crash"),
            }
        }
        let clock: Clock = opts.clock.clone().unwrap_or_else(crate::clock::system);
        let recorder = RecorderPool::start(
            layout.clone(),
            RecorderSettings {
                ring_seconds: config.recorder.ring_seconds,
                checkpoint_interval: config.recorder.checkpoint_interval,
                threads: config.recorder.threads,
                fsync: config.recorder.fsync,
            },
            metrics.clone(),
            clock.clone(),
        )
        .map_err(ServerError::Recorder)?;
        let tasks = crate::shutdown::Tasks::new();
        let uploader = crate::store::uploader::Uploader::start(
            store.clone(),
            metrics.clone(),
            config.storage.upload_backoff_max,
            &tasks,
        );
        let deleted = crate::store::privacy::deleted_tenants(&store).await.map_err(ServerError::Store)?;
        if !deleted.is_empty() {
            tracing::warn!(tenants = ?deleted, "deleted tenants are still configured: their calls are refused");
        }
        let playbooks = crate::coach::playbooks::Playbooks::preload(&config)?;
        let live = crate::live::hub::LiveHub::new(config.live.clone(), metrics.clone(), clock.clone());
        let webhooks = crate::call::webhooks::Webhooks::start(config.webhooks.clone(), metrics.clone(), &tasks);
        let postcall = crate::call::postcall::PostCallQueue::start(webhooks, metrics.clone(), &tasks);
        {
            // Ended calls stay resumable for `live.linger`, then go.
            let live = live.clone();
            tasks.spawn_background(async move {
                let mut iv = tokio::time::interval(Duration::from_secs(30));
                loop {
                    iv.tick().await;
                    live.sweep();
                }
            });
        }
        let listen = config.http.listen;
        let tls = config.http.tls.clone();
        let redactors = config_redactors(&config);
        // Bind here so that a taken port is an error now, not later in the task.
        let std_listener =
            std::net::TcpListener::bind(listen).map_err(|source| ServerError::Bind { addr: listen, source })?;
        std_listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr: listen, source })?;
        let local_addr = std_listener.local_addr().map_err(|source| ServerError::Bind { addr: listen, source })?;
        let cluster = match config.redis.clone() {
            Some(rc) => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                let url = rc
                    .advertise_url
                    .clone()
                    .or_else(|| config.http.public_url.clone())
                    .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
                if rc.advertise_url.is_none() && config.http.public_url.is_none() && local_addr.ip().is_unspecified() {
                    tracing::warn!(url = %url, "redis.advertise_url is not set and the listener is on every address: other nodes cannot redirect WHIP clients here; set redis.advertise_url");
                }
                Some(
                    crate::cluster::node::Cluster::start(
                        rc,
                        url,
                        live.clone(),
                        metrics.clone(),
                        clock.clone(),
                        tasks.clone(),
                    )
                    .map_err(ServerError::Redis)?,
                )
            }
            None => None,
        };
        let events = Arc::new(crate::live::outlet::EventOutlet::new(
            metrics.clone(),
            live.clone(),
            cluster.clone(),
            config.events.bus_capacity,
        ));
        let config = Arc::new(config);
        let lifecycle = Lifecycle::default();
        let deleted_tenants = Arc::new(std::sync::RwLock::new(deleted));
        let app = AppState {
            health: Arc::new(Health { metrics: metrics.clone(), layout: layout.clone(), lifecycle: lifecycle.clone() }),
            viewers: Arc::new(Viewers {
                config: config.clone(),
                metrics: metrics.clone(),
                live: live.clone(),
                lifecycle: lifecycle.clone(),
            }),
            records: Arc::new(Records {
                config: config.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
                tasks: tasks.clone(),
                deleted_tenants: deleted_tenants.clone(),
                store,
                exports: Default::default(),
                config_path: opts.config_path.clone(),
                live,
                cluster: cluster.clone(),
            }),
            intake: Arc::new(Intake {
                config,
                metrics,
                clock,
                tasks: tasks.clone(),
                lifecycle,
                deleted_tenants,
                events,
                recorder,
                layout,
                uploader,
                redactors,
                recogniser: opts.recogniser,
                playbooks,
                postcall,
                whip: Default::default(),
                cluster,
            }),
        };
        crate::store::sweeper::spawn_sweeper(app.records.clone(), opts.config_path.clone());
        let sip = match app.config().sip.clone() {
            Some(cfg) => Some(crate::ingest::sip::listener::start(app.intake.clone(), cfg).await?),
            None => None,
        };
        let handle = axum_server::Handle::new();
        let make = router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let serve_task = match tls {
            Some(tls) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let cfg = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_path, &tls.key_path)
                    .await
                    .map_err(ServerError::Tls)?;
                let server = axum_server::from_tcp_rustls(std_listener, cfg)
                    .map_err(|source| ServerError::Bind { addr: listen, source })?
                    .handle(handle.clone());
                tasks.spawn(async move { server.serve(make).await })
            }
            None => {
                let server = axum_server::from_tcp(std_listener)
                    .map_err(|source| ServerError::Bind { addr: listen, source })?
                    .handle(handle.clone());
                tasks.spawn(async move { server.serve(make).await })
            }
        };
        let scheme = if app.config().http.tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{local_addr}");
        Ok(Server { app, local_addr, sip_addr: sip.as_ref().map(|s| s.addr), sip, handle, serve_task })
    }

    /// Graceful drain: refuse new calls, let open calls go on for up to `drain_timeout`
    /// (or until `force` fires), then close them as `shutdown`, finalise every
    /// recording and stop the listener.
    pub async fn drain(self, force: impl std::future::Future<Output = ()>) {
        self.app.begin_drain();
        let app = self.app.intake.clone();
        let open = app.lifecycle.active_calls.load(Ordering::Relaxed);
        let timeout = app.config.shutdown.drain_timeout;
        tracing::info!(open_calls = open, ?timeout, "draining: new calls are refused");
        app.lifecycle.tracker.close();
        tokio::select! {
            _ = app.lifecycle.tracker.wait() => {}
            _ = tokio::time::sleep(timeout) => tracing::warn!("drain timeout: closing the remaining calls"),
            _ = force => tracing::warn!("second signal: closing the remaining calls now"),
        }
        app.lifecycle.force_close.cancel();
        // Closing is quick (close frame + recorder finalise); bound it anyway.
        let _ = tokio::time::timeout(Duration::from_secs(10), app.lifecycle.tracker.wait()).await;
        if let Some((hub, _)) = app.recogniser.clone() {
            // The calls have ended; let their last words be transcribed and saved.
            let _ = tokio::task::spawn_blocking(move || hub.drain(Duration::from_secs(15))).await;
        }
        if let Some(sip) = &self.sip {
            sip.stop();
        }
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = tokio::time::timeout(Duration::from_secs(3), self.serve_task).await;
        let app2 = app.clone();
        let _ = tokio::task::spawn_blocking(move || app2.recorder.shutdown()).await;
        // Give finished calls a moment to reach the store; what does not stays in the
        // spool and is uploaded at the next start.
        if !app.uploader.flush(Duration::from_secs(10)).await {
            tracing::warn!("stopping with calls still in the spool: they are uploaded at the next start");
        }
        if let Some(c) = &app.cluster {
            c.flush(Duration::from_secs(2)).await;
            c.shutdown();
        }
        // Last: stop the background loops and wait for the server's other tasks.
        if !app.tasks.shutdown(Duration::from_secs(5)).await {
            tracing::warn!(running = app.tasks.running(), "tasks still running at exit");
        }
        tracing::info!(open_recordings = app.recorder.open_recordings(), "stopped");
    }
}
