//! The handles every route shares: configuration, metrics, the spool and the store,
//! the recorder and uploader, the live hub and event outlet, Redis, and the wall clock.
//! Hot-path state lives in the call tasks, not here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::store::recorder::RecorderPool;
use crate::store::spool::StoreLayout;

/// Shared by every connection. Hot-path state lives in the call tasks, not here.
pub struct AppState {
    pub config: Config,
    pub metrics: Metrics,
    /// Where numbered events go (live hub, Redis, the in-process bus).
    pub events: Arc<crate::live::outlet::EventOutlet>,
    pub recorder: RecorderPool,
    /// The spool: where calls are written until uploaded.
    pub layout: StoreLayout,
    /// Finished calls, encrypted: local or S3-compatible.
    pub store: crate::store::objects::Store,
    pub uploader: crate::store::uploader::Uploader,
    /// Wall clock (tests inject one to cross 24-hour links and 7-day grace periods).
    pub clock: Clock,
    /// Tenants deleted for good: ingest refused while they are still configured.
    pub deleted_tenants: std::sync::RwLock<std::collections::BTreeSet<String>>,
    /// Per tenant: what is masked in transcripts, hints and keyed digits.
    pub redactors: std::collections::HashMap<String, Arc<crate::call::redact::Redactor>>,
    /// Exports being built: id → (done, total).
    pub exports: std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>,
    pub config_path: Option<std::path::PathBuf>,
    pub active_calls: AtomicUsize,
    pub(crate) draining: AtomicBool,
    /// Cancelled when the drain timeout expires: calls still open close as `shutdown`.
    pub force_close: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for their recordings.
    pub tracker: TaskTracker,
    /// Every other task the server starts (background loops, call owners, jobs).
    pub tasks: crate::shutdown::Tasks,
    /// Where live audio goes for transcription; `None` in media-only deployments.
    pub recogniser: Option<(Arc<dyn crate::media::recogniser::RecogniserHub>, crate::media::recogniser::FeedSettings)>,
    /// Live clients (`/live`): replay buffers, snapshots, fan-out.
    pub live: Arc<crate::live::hub::LiveHub>,
    pub playbooks: crate::coach::playbooks::Playbooks,
    pub postcall: crate::call::postcall::PostCallQueue,
    /// WHIP sessions and the calls they publish into.
    pub whip: crate::ingest::whip::registry::WhipState,
    /// Redis: other nodes' events, the call registry, job locks (`[redis]`).
    pub cluster: Option<Arc<crate::cluster::node::Cluster>>,
}

pub(crate) fn config_redactors(
    config: &Config,
) -> std::collections::HashMap<String, Arc<crate::call::redact::Redactor>> {
    config
        .tenants
        .iter()
        .map(|t| (t.id.clone(), Arc::new(crate::call::redact::Redactor::new(&t.redact_patterns).unwrap_or_default())))
        .collect()
}

impl AppState {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    /// The tenant's redactor (card numbers at least).
    pub fn redactor(&self, tenant: &str) -> Arc<crate::call::redact::Redactor> {
        self.redactors.get(tenant).cloned().unwrap_or_default()
    }

    /// A configured tenant that may send calls (not deleted).
    pub fn ingest_tenant(&self, id: &str) -> Option<&crate::config::TenantConfig> {
        if self.deleted_tenants.read().unwrap_or_else(|e| e.into_inner()).contains(id) {
            return None;
        }
        self.config.tenant(id)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.set(1);
    }

    /// Puts an event on the in-process bus. Never waits: the bus is a bounded broadcast
    /// ring; a subscriber that falls behind is told by its receiver that it lagged.
    pub fn publish(&self, event: Event) -> Arc<Event> {
        self.events.publish(event)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
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
