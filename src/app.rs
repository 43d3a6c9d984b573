//! The handles the routes need, one struct per route group, so that each route sees only
//! what it uses: [`Intake`] (the fork websockets, WHIP, the SIP listener and the calls
//! they start), [`Records`] (the admin API and the retention sweeper), [`Viewers`]
//! (`/live`) and [`Health`] (`/readyz`, `/metrics`). [`AppState`] holds one of each and
//! hands them to axum through `FromRef`. What several groups share (the drain, deleted
//! tenants, the config) is behind `Arc`s cloned into each. Hot-path state lives in the
//! call tasks, not here.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::FromRef;
use axum::http::{header, HeaderMap};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::redact::Redactor;
use crate::clock::Clock;
use crate::cluster::node::Cluster;
use crate::config::{Config, TenantConfig};
use crate::live::hub::LiveHub;
use crate::media::recogniser::{FeedSettings, RecogniserHub};
use crate::metrics::Metrics;
use crate::store::recorder::RecorderPool;
use crate::store::spool::StoreLayout;

/// Tenants deleted for good: read by ingest and the API, written by the sweeper.
pub type DeletedTenants = Arc<RwLock<BTreeSet<String>>>;

/// Where live audio goes for transcription; `None` in media-only deployments.
pub type Recogniser = Option<(Arc<dyn RecogniserHub>, FeedSettings)>;

/// Calls in progress and the drain, shared by ingest, `/live`, health and the server.
#[derive(Clone, Default)]
pub struct Lifecycle {
    pub active_calls: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
    /// Cancelled when the drain timeout expires: calls still open close as `shutdown`.
    pub force_close: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for their recordings.
    pub tracker: TaskTracker,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

fn active_tenant<'c>(config: &'c Config, deleted: &DeletedTenants, id: &str) -> Option<&'c TenantConfig> {
    if deleted.read().unwrap_or_else(|e| e.into_inner()).contains(id) {
        return None;
    }
    config.tenant(id)
}

/// The ingest side: fork websockets (Twilio, PCM), WHIP, the SIP listener, and the call
/// sessions they start (recorder, recogniser, coach, publishing).
pub struct Intake {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Wall clock (tests inject one).
    pub clock: Clock,
    /// Every task the ingest side starts that is not a connection (call owners, jobs).
    pub tasks: crate::shutdown::Tasks,
    pub lifecycle: Lifecycle,
    pub deleted_tenants: DeletedTenants,
    /// Where numbered events go (live hub, Redis, the in-process bus).
    pub events: Arc<crate::live::outlet::EventOutlet>,
    pub recorder: RecorderPool,
    /// The spool: where calls are written until uploaded.
    pub layout: StoreLayout,
    pub uploader: crate::store::uploader::Uploader,
    /// Per tenant: what is masked in transcripts, hints and keyed digits.
    pub redactors: HashMap<String, Arc<Redactor>>,
    pub recogniser: Recogniser,
    pub playbooks: crate::coach::playbooks::Playbooks,
    pub postcall: crate::call::postcall::PostCallQueue,
    /// WHIP sessions and the calls they publish into.
    pub whip: crate::ingest::whip::registry::WhipState,
    /// Redis: the call registry and WHIP claims (`[redis]`).
    pub cluster: Option<Arc<Cluster>>,
}

impl Intake {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    /// The tenant's redactor (card numbers at least).
    pub fn redactor(&self, tenant: &str) -> Arc<Redactor> {
        self.redactors.get(tenant).cloned().unwrap_or_default()
    }

    /// A configured tenant that may send calls (not deleted).
    pub fn active_tenant(&self, id: &str) -> Option<&TenantConfig> {
        active_tenant(&self.config, &self.deleted_tenants, id)
    }

    pub fn is_draining(&self) -> bool {
        self.lifecycle.is_draining()
    }

    /// URLs a Twilio signature may have been computed over for `path`.
    pub fn signature_urls(&self, headers: &HeaderMap, path: &str) -> Vec<String> {
        let mut urls = Vec::new();
        if let Some(base) = &self.config.http.public_url {
            urls.push(format!("{}{}", base.trim_end_matches('/'), path));
        }
        if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            for scheme in ["wss", "https", "ws", "http"] {
                urls.push(format!("{scheme}://{host}{path}"));
            }
        }
        urls
    }
}

/// The admin API (`/v1`) and the retention sweeper: the encrypted store, exports,
/// holds, erasure, audit.
pub struct Records {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Wall clock (tests inject one to cross 24-hour links and 7-day grace periods).
    pub clock: Clock,
    pub tasks: crate::shutdown::Tasks,
    pub deleted_tenants: DeletedTenants,
    /// Finished calls, encrypted: local or S3-compatible.
    pub store: crate::store::objects::Store,
    /// Exports being built: id → (done, total).
    pub exports: Mutex<HashMap<String, (usize, usize)>>,
    /// The config file, re-read for what reloads without a restart.
    pub config_path: Option<std::path::PathBuf>,
    /// Live calls (the team view lists them when there is no Redis).
    pub live: Arc<LiveHub>,
    /// Redis: job locks and the call registry (`[redis]`).
    pub cluster: Option<Arc<Cluster>>,
}

impl Records {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    /// A configured tenant that is not deleted.
    pub fn active_tenant(&self, id: &str) -> Option<&TenantConfig> {
        active_tenant(&self.config, &self.deleted_tenants, id)
    }
}

/// `/live`: tokens, the live hub's replay and fan-out.
pub struct Viewers {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub live: Arc<LiveHub>,
    pub lifecycle: Lifecycle,
}

impl Viewers {
    pub fn is_draining(&self) -> bool {
        self.lifecycle.is_draining()
    }
}

/// `/readyz` and `/metrics`.
pub struct Health {
    pub metrics: Metrics,
    pub layout: StoreLayout,
    pub lifecycle: Lifecycle,
}

/// One handle per route group (see the module's text); the router's state.
#[derive(Clone)]
pub struct AppState {
    pub intake: Arc<Intake>,
    pub records: Arc<Records>,
    pub viewers: Arc<Viewers>,
    pub health: Arc<Health>,
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.intake.config
    }

    /// Refuse new calls from now on.
    pub fn begin_drain(&self) {
        self.intake.lifecycle.begin_drain();
        self.intake.metrics.draining.set(1);
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::events::Event>> {
        self.intake.events.subscribe()
    }
}

impl FromRef<AppState> for Arc<Intake> {
    fn from_ref(s: &AppState) -> Self {
        s.intake.clone()
    }
}

impl FromRef<AppState> for Arc<Records> {
    fn from_ref(s: &AppState) -> Self {
        s.records.clone()
    }
}

impl FromRef<AppState> for Arc<Viewers> {
    fn from_ref(s: &AppState) -> Self {
        s.viewers.clone()
    }
}

impl FromRef<AppState> for Arc<Health> {
    fn from_ref(s: &AppState) -> Self {
        s.health.clone()
    }
}

pub(crate) fn config_redactors(config: &Config) -> HashMap<String, Arc<Redactor>> {
    config
        .tenants
        .iter()
        .map(|t| (t.id.clone(), Arc::new(Redactor::new(&t.redact_patterns).unwrap_or_default())))
        .collect()
}
