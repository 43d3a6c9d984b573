//! After a call: the worker that saves `hints.json` / `scorecard.json` and queues
//! webhooks, off the call path (bounded; drops counted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::call::webhooks::Webhooks;
use crate::events::Event;
use crate::metrics::Metrics;

/// Work after a call, off the call path.
pub enum PostCall {
    /// Save the call's hints and scorecard next to its recording.
    /// The seal (if any) is let go once they are written: the call may then be uploaded.
    Files {
        dir: PathBuf,
        hints: Vec<Arc<Event>>,
        scorecard: Arc<Event>,
        seal: Option<crate::store::uploader::Seal>,
        redactor: Arc<crate::call::redact::Redactor>,
    },
    /// POST an event to the tenant's webhook.
    Webhook { url: String, secret: String, event: Arc<Event> },
}

#[derive(Clone)]
pub struct PostCallQueue {
    tx: mpsc::Sender<PostCall>,
    metrics: Metrics,
}

impl PostCallQueue {
    /// Starts the worker on the current tokio runtime.
    pub fn start(webhooks: Webhooks, metrics: Metrics, tasks: &crate::shutdown::Tasks) -> PostCallQueue {
        let (tx, mut rx) = mpsc::channel::<PostCall>(4096);
        tasks.spawn_background(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    PostCall::Files { dir, hints, scorecard, seal, redactor } => {
                        let _ = tokio::task::spawn_blocking(move || {
                            if let Err(e) = write_files(&dir, &hints, &scorecard, &redactor) {
                                tracing::error!(dir = %dir.display(), error = %e, "writing hints/scorecard");
                            }
                            drop(seal);
                        })
                        .await;
                    }
                    PostCall::Webhook { url, secret, event } => webhooks.enqueue(&url, &secret, &event),
                }
            }
        });
        PostCallQueue { tx, metrics }
    }

    /// Never waits; a full queue drops the job (counted).
    pub fn submit(&self, job: PostCall) {
        if self.tx.try_send(job).is_err() {
            self.metrics.postcall_dropped.inc();
        }
    }
}

fn write_files(
    dir: &Path,
    hints: &[Arc<Event>],
    scorecard: &Event,
    redactor: &crate::call::redact::Redactor,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let hints: Vec<&Event> = hints.iter().map(|h| h.as_ref()).collect();
    // What is stored never holds a card number, whatever the overlays were shown.
    let mut hints = serde_json::to_value(&hints)?;
    let mut card = serde_json::to_value(scorecard)?;
    redactor.apply_json(&mut hints);
    redactor.apply_json(&mut card);
    for (name, bytes) in
        [("hints.json", serde_json::to_vec_pretty(&hints)?), ("scorecard.json", serde_json::to_vec_pretty(&card)?)]
    {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}
