//! Recorder threads: drain each call's SPSC ring (filled by the call's network task,
//! which never waits) into its WAV file, fix the header up periodically, and finalise
//! the recording and manifest when the call ends.
//!
//! Disk IO never runs on the async runtime. A call is pinned to one recorder thread;
//! each thread owns its calls' writers outright, so there is no lock on the data path.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::call::{CallId, CallInfo, Outcome, SampleEncoding};
use crate::clock::Clock;
use crate::media::g711;
use crate::metrics::Metrics;
use crate::store::manifest::{AudioInfo, DtmfEvent, Manifest, MediaStats};
use crate::store::spool::{StoreLayout, AUDIO_FILE};
use crate::store::wav;
use crate::store::wav::WavWriter;

/// How long a recorder thread sleeps when it found nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(20);
const COMMAND_QUEUE: usize = 4096;
/// After shutdown was asked, how long a recording may wait for its call to finish it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecorderError {
    #[error("recorder ring full: storage is not keeping up")]
    RingFull,
    #[error("recording failed: storage error")]
    Failed,
    #[error("cannot start recording in {dir}: {source}")]
    Start { dir: PathBuf, source: std::io::Error },
    #[error("recorder threads are gone")]
    Closed,
}

#[derive(Debug, Clone)]
pub struct RecorderSettings {
    pub ring_seconds: u32,
    pub checkpoint_interval: Duration,
    pub threads: usize,
    pub fsync: bool,
}

/// What the call's task knows at the end and the recorder writes into the manifest.
#[derive(Debug, Clone)]
pub struct CallEnd {
    pub outcome: Outcome,
    pub ended_at: DateTime<Utc>,
    pub stats: MediaStats,
    pub dtmf: Vec<DtmfEvent>,
}

/// Result of finalising a call.
#[derive(Debug, Clone)]
pub struct Finalised {
    pub manifest: Manifest,
}

#[derive(Default)]
struct JobShared {
    failed: AtomicBool,
}

struct Job {
    dir: PathBuf,
    marker: PathBuf,
    manifest: Manifest,
    encoding: SampleEncoding,
    cons: Option<HeapCons<u8>>,
    writer: Option<WavWriter>,
    shared: Arc<JobShared>,
    last_checkpoint: Instant,
    finish: Option<(CallEnd, oneshot::Sender<Finalised>)>,
}

enum Command {
    Start(Box<Job>),
    Finish {
        call_id: CallId,
        end: CallEnd,
        done: oneshot::Sender<Finalised>,
    },
    /// Exit once every job has been finalised.
    Shutdown,
}

/// The call task's side of its recording: the ring producer plus a way to finish.
pub struct RecorderHandle {
    call_id: CallId,
    finished: bool,
    prod: Option<HeapProd<u8>>,
    shared: Arc<JobShared>,
    worker: SyncSender<Command>,
    clock: Clock,
}

impl RecorderHandle {
    /// Queues encoded audio (the call's `SampleEncoding`, interleaved). Never blocks.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), RecorderError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(RecorderError::Failed);
        }
        let Some(prod) = self.prod.as_mut() else { return Ok(()) };
        if prod.push_slice(bytes) < bytes.len() {
            return Err(RecorderError::RingFull);
        }
        Ok(())
    }

    /// Fill of the ring in 0..=1 (0 when not recording).
    pub fn fill_ratio(&self) -> f64 {
        self.prod.as_ref().map_or(0.0, |p| p.occupied_len() as f64 / p.capacity().get() as f64)
    }

    /// Ends the recording: the recorder drains what is queued, finalises the WAV and
    /// the manifest, and answers on the returned channel. Never blocks.
    pub fn finish(mut self, end: CallEnd) -> oneshot::Receiver<Finalised> {
        self.finished = true;
        self.prod.take();
        let (done, rx) = oneshot::channel();
        let cmd = Command::Finish { call_id: self.call_id, end, done };
        match self.worker.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(cmd)) => {
                // Lifecycle message, not media: hand the wait to a helper thread rather
                // than block the caller.
                let worker = self.worker.clone();
                std::thread::spawn(move || {
                    let _ = worker.send(cmd);
                });
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
        rx
    }
}

pub struct RecorderPool {
    workers: Vec<SyncSender<Command>>,
    next: AtomicUsize,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    layout: StoreLayout,
    settings: RecorderSettings,
    active: Arc<AtomicU64>,
    clock: Clock,
}

impl RecorderPool {
    pub fn start(
        layout: StoreLayout,
        settings: RecorderSettings,
        metrics: Metrics,
        clock: Clock,
    ) -> std::io::Result<Self> {
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        let active = Arc::new(AtomicU64::new(0));
        for i in 0..settings.threads.max(1) {
            let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
            let worker = Worker {
                rx,
                jobs: HashMap::new(),
                settings: settings.clone(),
                metrics: metrics.clone(),
                scratch: Vec::new(),
                active: active.clone(),
                clock: clock.clone(),
            };
            let handle =
                std::thread::Builder::new().name(format!("earshot-recorder-{i}")).spawn(move || worker.run())?;
            workers.push(tx);
            threads.push(handle);
        }
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
            threads: std::sync::Mutex::new(threads),
            layout,
            settings,
            active,
            clock,
        })
    }

    /// Calls whose recording is open (started and not yet finalised).
    pub fn open_recordings(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Creates the call's directory, manifest, in-flight marker and WAV file, and hands
    /// the job to a recorder thread. Blocking IO: call from a blocking context.
    pub fn open(&self, info: &CallInfo, recording: bool) -> Result<RecorderHandle, RecorderError> {
        let dir = self.layout.call_dir(&info.tenant, info.call_id);
        let start_err = |source| RecorderError::Start { dir: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(start_err)?;
        std::fs::create_dir_all(self.layout.inflight_dir()).map_err(start_err)?;
        let manifest = Manifest::for_call(info, recording);
        manifest.write_to_dir(&dir).map_err(start_err)?;
        let marker = self.layout.inflight_marker(info.call_id);
        let rel = StoreLayout::relative_call_dir(&info.tenant, info.call_id);
        std::fs::write(&marker, rel.to_string_lossy().as_bytes()).map_err(start_err)?;
        let channels = info.layout.channels();
        let (prod, cons, writer) = if recording {
            let writer =
                WavWriter::create(&dir.join(AUDIO_FILE), info.sample_rate, channels as u16).map_err(start_err)?;
            let cap = self.settings.ring_seconds as usize
                * info.sample_rate as usize
                * channels
                * info.encoding.bytes_per_sample();
            let (p, c) = HeapRb::<u8>::new(cap).split();
            (Some(p), Some(c), Some(writer))
        } else {
            (None, None, None)
        };
        let shared = Arc::new(JobShared::default());
        let job = Job {
            dir,
            marker,
            manifest,
            encoding: info.encoding,
            cons,
            writer,
            shared: shared.clone(),
            last_checkpoint: Instant::now(),
            finish: None,
        };
        let idx = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let worker = self.workers[idx].clone();
        worker.send(Command::Start(Box::new(job))).map_err(|_| RecorderError::Closed)?;
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(RecorderHandle { call_id: info.call_id, finished: false, prod, shared, worker, clock: self.clock.clone() })
    }

    /// Stops the threads once every open recording has been finalised (their handles
    /// must have been finished or dropped first).
    pub fn shutdown(&self) {
        // Held only at shutdown, never on the data path.
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let handles: Vec<JoinHandle<()>> = threads.drain(..).collect();
        drop(threads);
        for w in &self.workers {
            let _ = w.send(Command::Shutdown);
        }
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for RecorderHandle {
    fn drop(&mut self) {
        // Dropped without `finish` (the owning task panicked or was cancelled): still
        // finalise, so nothing already received is lost.
        if !self.finished {
            self.prod.take();
            let (done, _rx) = oneshot::channel();
            let _ = self.worker.try_send(Command::Finish {
                call_id: self.call_id,
                end: CallEnd {
                    outcome: Outcome::InternalError,
                    ended_at: (self.clock)(),
                    stats: MediaStats::default(),
                    dtmf: Vec::new(),
                },
                done,
            });
        }
    }
}

struct Worker {
    rx: Receiver<Command>,
    jobs: HashMap<CallId, Job>,
    settings: RecorderSettings,
    metrics: Metrics,
    scratch: Vec<i16>,
    active: Arc<AtomicU64>,
    clock: Clock,
}

impl Worker {
    fn run(mut self) {
        let mut disconnected = false;
        let mut shutdown_at: Option<Instant> = None;
        loop {
            // A recording whose call never said goodbye must not hold the process
            // forever: after the grace period it is finalised as `shutdown`.
            if shutdown_at.is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE) {
                for job in self.jobs.values_mut().filter(|j| j.finish.is_none()) {
                    let (done, _rx) = oneshot::channel();
                    job.finish = Some((
                        CallEnd {
                            outcome: Outcome::Shutdown,
                            ended_at: (self.clock)(),
                            stats: MediaStats::default(),
                            dtmf: Vec::new(),
                        },
                        done,
                    ));
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(Command::Shutdown) => {
                        disconnected = true;
                        shutdown_at.get_or_insert_with(Instant::now);
                    }
                    Ok(cmd) => self.handle(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            let pass_start = Instant::now();
            let moved = self.pass();
            if moved > 0 {
                self.metrics.recorder_write_seconds.observe(pass_start.elapsed().as_secs_f64());
            }
            if disconnected && self.jobs.is_empty() {
                return;
            }
            if moved == 0 {
                match self.rx.recv_timeout(IDLE_WAIT) {
                    Ok(Command::Shutdown) => {
                        disconnected = true;
                        shutdown_at.get_or_insert_with(Instant::now);
                    }
                    Ok(cmd) => self.handle(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        disconnected = true;
                        // Nothing can arrive any more; keep finalising without spinning.
                        if !self.jobs.is_empty() {
                            std::thread::sleep(IDLE_WAIT);
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start(job) => {
                self.jobs.insert(job.manifest.call_id, *job);
            }
            Command::Shutdown => {}
            Command::Finish { call_id, end, done } => {
                if let Some(job) = self.jobs.get_mut(&call_id) {
                    // The first finish wins (a Drop-time finish after a real one is ignored).
                    if job.finish.is_none() {
                        job.finish = Some((end, done));
                    }
                }
            }
        }
    }

    /// One pass over every job; returns bytes moved.
    fn pass(&mut self) -> usize {
        let mut moved = 0;
        let mut finished = Vec::new();
        let now = Instant::now();
        for (id, job) in self.jobs.iter_mut() {
            moved += drain(job, &mut self.scratch, &self.metrics);
            if let Some(writer) = job.writer.as_mut() {
                if !job.shared.failed.load(Ordering::Relaxed)
                    && now.duration_since(job.last_checkpoint) >= self.settings.checkpoint_interval
                {
                    if let Err(e) = writer.checkpoint(self.settings.fsync) {
                        fail(job, &self.metrics, "io", &e);
                    }
                    job.last_checkpoint = now;
                }
            }
            if job.finish.is_some() {
                finished.push(*id);
            }
        }
        for id in finished {
            if let Some(job) = self.jobs.remove(&id) {
                finalise(job, &mut self.scratch, &self.metrics);
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        moved
    }
}

fn fail(job: &mut Job, metrics: &Metrics, code: &str, err: &std::io::Error) {
    if !job.shared.failed.swap(true, Ordering::Relaxed) {
        tracing::error!(call_id = %job.manifest.call_id, error = %err, "recording failed");
        metrics.errors.with_label_values(&["recorder", code]).inc();
    }
}

/// Moves everything queued in the job's ring into its WAV writer.
fn drain(job: &mut Job, scratch: &mut Vec<i16>, metrics: &Metrics) -> usize {
    let (Some(cons), Some(writer)) = (job.cons.as_mut(), job.writer.as_mut()) else { return 0 };
    let occupied = cons.occupied_len();
    if occupied == 0 {
        return 0;
    }
    metrics.ring_fill.with_label_values(&["recorder"]).observe(occupied as f64 / cons.capacity().get() as f64);
    let bps = job.encoding.bytes_per_sample();
    let (a, b) = cons.as_slices();
    // Only whole samples: a 16-bit sample may straddle the ring's wrap point.
    let usable = occupied - occupied % bps;
    scratch.clear();
    let bytes: std::borrow::Cow<'_, [u8]> = if a.len() >= usable {
        std::borrow::Cow::Borrowed(&a[..usable])
    } else {
        let mut v = Vec::with_capacity(usable);
        v.extend_from_slice(a);
        v.extend_from_slice(&b[..usable - a.len()]);
        std::borrow::Cow::Owned(v)
    };
    match job.encoding {
        SampleEncoding::Mulaw => g711::decode_ulaw_into(&bytes, scratch),
        SampleEncoding::Alaw => g711::decode_alaw_into(&bytes, scratch),
        SampleEncoding::L16 => scratch.extend(bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
    }
    drop(bytes);
    cons.skip(usable);
    if job.shared.failed.load(Ordering::Relaxed) {
        return usable; // keep the ring moving; the call is being ended as storage_error
    }
    match writer.write_samples(scratch) {
        Ok(()) => metrics.recorded_bytes.inc_by(scratch.len() as u64 * 2),
        Err(e) => {
            if !job.shared.failed.swap(true, Ordering::Relaxed) {
                tracing::error!(call_id = %job.manifest.call_id, error = %e, "recording write failed");
                metrics.errors.with_label_values(&["recorder", "io"]).inc();
            }
        }
    }
    usable
}

fn finalise(mut job: Job, scratch: &mut Vec<i16>, metrics: &Metrics) {
    while drain(&mut job, scratch, metrics) > 0 {}
    let (end, done) = job.finish.take().expect("finalise only finished jobs");
    let mut manifest = job.manifest;
    let mut outcome = end.outcome;
    if let Some(writer) = job.writer.take() {
        let sample_rate = writer.sample_rate();
        let frames = writer.frames();
        let channels = manifest.layout.channels() as u16;
        match writer.finish() {
            Ok(data_bytes) => {
                manifest.audio = Some(AudioInfo {
                    file: AUDIO_FILE.into(),
                    format: "wav/pcm_s16le".into(),
                    sample_rate,
                    channels,
                    frames,
                    duration_ms: frames * 1000 / sample_rate.max(1) as u64,
                    bytes: data_bytes + wav::HEADER_LEN,
                });
            }
            Err(e) => {
                metrics.errors.with_label_values(&["recorder", "io"]).inc();
                tracing::error!(call_id = %manifest.call_id, error = %e, "finalising recording failed");
                outcome = Outcome::StorageError;
            }
        }
    }
    if job.shared.failed.load(Ordering::Relaxed) && outcome == Outcome::Completed {
        outcome = Outcome::StorageError;
    }
    manifest.ended_at = Some(end.ended_at);
    manifest.outcome = Some(outcome.manifest_str());
    manifest.stats = end.stats;
    manifest.dtmf = end.dtmf;
    match manifest.write_to_dir(&job.dir) {
        Ok(()) => {
            let _ = std::fs::remove_file(&job.marker);
        }
        Err(e) => {
            // Leave the in-flight marker: the next start-up recovers the call.
            metrics.errors.with_label_values(&["recorder", "io"]).inc();
            tracing::error!(call_id = %manifest.call_id, error = %e, "writing final manifest failed");
        }
    }
    let _ = done.send(Finalised { manifest });
}
