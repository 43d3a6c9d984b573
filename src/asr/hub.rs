//! Live transcription: the `RecogniserHub` that runs Whisper on every call.
//!
//! One scheduler thread owns every live channel stream: it reads the channel's 16 kHz
//! ring, runs the streaming policy, and hands decode jobs to a fixed pool of worker
//! threads (one whisper.cpp inference each, one thread inside whisper — measured: two
//! collapse under contention). Each stream has at most one decode in flight, so the
//! shared FIFO job queue serves streams fairly. Results come back to the scheduler,
//! which hands `transcript.partial` / `transcript.final` (never waiting) to the call's
//! owner and, when the call's channels are done, writes `transcript.json` and
//! `transcript.txt` beside the recording. Nothing here ever blocks a call's task.
//!
//! This file is the handle and its start; the rest lives beside it: `scheduler`,
//! `workers` and `transcript_file`.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::asr::engine::Model;
use crate::asr::scheduler::{Command, Scheduler};
pub use crate::asr::settings::{AsrSettings, TenantAsr};
use crate::asr::workers::{self, Job, JobResult};
use crate::call::owner::CallHandle;
use crate::call::CallInfo;
use crate::media::recogniser::RecogniserHub;
use crate::media::recogniser_feed::{FeedDrops, RecogniserTap};
use crate::metrics::Metrics;
use crate::store::spool::StoreLayout;

pub struct AsrHub {
    tx: SyncSender<Command>,
}

impl AsrHub {
    /// Starts the scheduler and `settings.workers` inference threads. `models[0]` is the
    /// default; tenants may name others. Each worker keeps one whisper state per model.
    pub fn start(
        models: Vec<Arc<Model>>,
        settings: AsrSettings,
        layout: StoreLayout,
        metrics: Metrics,
    ) -> std::io::Result<AsrHub> {
        assert!(!models.is_empty(), "at least one model");
        let (tx, rx) = mpsc::sync_channel(1024);
        // No room of its own: a job is handed over only to a worker waiting for one, so
        // the rest wait in the scheduler's backlog, where finals go first and stale
        // audio can still be shed under overload.
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(0);
        let (res_tx, res_rx) = mpsc::sync_channel::<JobResult>(4096);
        // Workers share one receiver: the lock is held only to take the next job.
        let job_rx = Arc::new(Mutex::new(job_rx));
        workers::spawn(settings.workers.max(1), &models, &job_rx, &res_tx, &metrics)?;
        let scheduler = Scheduler::new(rx, job_tx, res_rx, settings, layout, metrics);
        std::thread::Builder::new().name("earshot-asr-scheduler".into()).spawn(move || scheduler.run())?;
        Ok(AsrHub { tx })
    }
}

impl RecogniserHub for AsrHub {
    fn attach(&self, call: &CallInfo, taps: Vec<RecogniserTap>, _drops: Arc<FeedDrops>, owner: CallHandle) {
        // Held until the call's transcript is written: the scorecard waits for it.
        let cmd = Command::Attach { call: call.clone(), taps, owner };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(cmd) {
            tracing::error!(call_id = %call.call_id, "ASR scheduler busy: call not transcribed");
        }
    }

    fn drain(&self, limit: Duration) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Command::Drain(tx)).is_ok() && rx.recv_timeout(limit).is_err() {
            tracing::warn!("shutdown: some transcripts were not finished in time");
        }
    }
}
