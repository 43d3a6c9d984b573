//! The whisper worker threads: each takes the next job from the shared queue, runs
//! one whisper.cpp inference (a live decode or a post-call refinement) and sends the
//! result back to the scheduler.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::asr::engine::Model;
use crate::asr::hypothesis::Hypothesis;
use crate::asr::refine::RefineTask;
use crate::asr::stream_policy::DecodeRequest;
use crate::metrics::Metrics;

pub(super) struct Job {
    /// Set by the scheduler to stop a partial whose result nobody needs any more.
    pub(super) cancel: Arc<std::sync::atomic::AtomicBool>,
    pub(super) stream: u64,
    pub(super) model: usize,
    pub(super) language: Arc<str>,
    pub(super) req: DecodeRequest,
    pub(super) audio: Vec<f32>,
    pub(super) queued_at: Instant,
    /// A post-call refinement instead of a live decode.
    pub(super) refine: Option<(RefineTask, u32)>,
}

pub(super) struct JobResult {
    pub(super) stream: u64,
    pub(super) req: DecodeRequest,
    /// `Err(None)`: aborted on request.
    pub(super) text: Result<Hypothesis, Option<String>>,
    pub(super) refine: Option<(RefineTask, Result<usize, Option<String>>)>,
    pub(super) seconds: f64,
}

/// Starts `n` worker threads on the shared job queue.
pub(super) fn spawn(
    n: usize,
    models: &[Arc<Model>],
    job_rx: &Arc<Mutex<Receiver<Job>>>,
    res_tx: &SyncSender<JobResult>,
    metrics: &Metrics,
) -> std::io::Result<()> {
    for i in 0..n {
        let (models, job_rx, res_tx) = (models.to_vec(), job_rx.clone(), res_tx.clone());
        let m = metrics.clone();
        std::thread::Builder::new().name(format!("earshot-asr-{i}")).spawn(move || run(models, job_rx, res_tx, m))?;
    }
    Ok(())
}

/// One worker: keeps one whisper state per model; returns when either queue is gone.
fn run(models: Vec<Arc<Model>>, job_rx: Arc<Mutex<Receiver<Job>>>, res_tx: SyncSender<JobResult>, m: Metrics) {
    let mut states: Vec<Option<whisper_rs::WhisperState>> = models.iter().map(|_| None).collect();
    loop {
        let job = match job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let t0 = Instant::now();
        let model = &models[job.model.min(models.len() - 1)];
        let slot = &mut states[job.model.min(models.len() - 1)];
        if slot.is_none() {
            match model.new_state() {
                Ok(st) => *slot = Some(st),
                Err(e) => tracing::error!(error = %e, "whisper state"),
            }
        }
        if let Some((task, beam)) = job.refine {
            let out = match slot.as_mut() {
                Some(state) => {
                    crate::asr::refine::refine(&task, model, state, beam, &job.cancel).map_err(|e| match e {
                        crate::asr::ModelError::Aborted => None,
                        e => Some(e.to_string()),
                    })
                }
                None => Err(Some("no whisper state".to_string())),
            };
            m.asr_inference_seconds.with_label_values(&["refine"]).observe(t0.elapsed().as_secs_f64());
            let r = JobResult {
                stream: 0,
                req: job.req,
                text: Ok(Hypothesis::default()),
                seconds: 0.0,
                refine: Some((task, out)),
            };
            if res_tx.send(r).is_err() {
                return;
            }
            continue;
        }
        m.asr_queue_depth.dec();
        m.asr_queue_wait_seconds.observe(job.queued_at.elapsed().as_secs_f64());
        let text = match slot.as_mut() {
            Some(state) => model
                .decode_window(state, &job.audio, &job.req.prompt, &job.language, Some(&job.cancel))
                .map_err(|e| match e {
                    crate::asr::ModelError::Aborted => None,
                    e => Some(e.to_string()),
                }),
            None => Err(Some("no whisper state".to_string())),
        };
        let seconds = t0.elapsed().as_secs_f64();
        let kind = if job.req.is_final { "final" } else { "partial" };
        m.asr_inference_seconds.with_label_values(&[kind]).observe(seconds);
        let audio_secs = job.audio.len() as f64 / 16000.0;
        if audio_secs > 0.0 {
            m.asr_realtime_factor.observe(seconds / audio_secs);
        }
        let r = JobResult { stream: job.stream, req: job.req, text, seconds, refine: None };
        if res_tx.send(r).is_err() {
            return;
        }
    }
}
