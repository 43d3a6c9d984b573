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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::asr::engine::Model;
use crate::asr::overload::{Overload, OverloadSettings};
use crate::asr::refine::RefineTask;
use crate::asr::stream_policy::{DecodeRequest, Degrade, PolicySettings, StreamPolicy, TranscriptUpdate, RATE};
use crate::call::owner::CallHandle;
use crate::call::{CallId, CallInfo, Role};
use crate::coach::Voice;
use crate::media::recogniser::RecogniserHub;
use crate::media::recogniser_feed::{FeedDrops, RecogniserTap};
use crate::metrics::Metrics;
use crate::store::spool::StoreLayout;

#[derive(Debug, Clone)]
pub struct AsrSettings {
    pub workers: usize,
    pub language: String,
    pub policy: PolicySettings,
    pub overload: OverloadSettings,
    /// Tenants that use another model (an index into the hub's models) or language.
    pub tenants: HashMap<String, TenantAsr>,
    /// Post-call refinement for tenants that do not say (see `asr::refine`).
    pub refine: bool,
    /// Model (index) refinements use; `None`: the call's own.
    pub refine_model: Option<usize>,
    pub refine_beam: u32,
    /// Names of the hub's models, for the records refinements write.
    pub model_names: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantAsr {
    pub model: usize,
    pub language: Option<String>,
    pub refine: Option<bool>,
}

impl AsrSettings {
    pub fn new(workers: usize, language: &str) -> Self {
        Self {
            workers,
            language: language.into(),
            policy: PolicySettings::default(),
            overload: OverloadSettings::default(),
            tenants: HashMap::new(),
            refine: false,
            refine_model: None,
            refine_beam: 5,
            model_names: Vec::new(),
        }
    }
}

enum Command {
    Attach {
        call: CallInfo,
        taps: Vec<RecogniserTap>,
        owner: CallHandle,
    },
    /// Answer once no stream is left.
    Drain(SyncSender<()>),
}

struct Job {
    /// Set by the scheduler to stop a partial whose result nobody needs any more.
    cancel: Arc<std::sync::atomic::AtomicBool>,
    stream: u64,
    model: usize,
    language: Arc<str>,
    req: DecodeRequest,
    audio: Vec<f32>,
    queued_at: Instant,
    /// A post-call refinement instead of a live decode.
    refine: Option<(RefineTask, u32)>,
}

struct JobResult {
    stream: u64,
    req: DecodeRequest,
    /// `Err(None)`: aborted on request.
    text: Result<String, Option<String>>,
    refine: Option<(RefineTask, Result<usize, Option<String>>)>,
    seconds: f64,
}

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
        // One waiting job per worker: the rest wait in the scheduler's backlog, where
        // they can still be shed under overload.
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(settings.workers.max(1));
        let (res_tx, res_rx) = mpsc::sync_channel::<JobResult>(4096);
        // Workers share one receiver: the lock is held only to take the next job.
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..settings.workers.max(1) {
            let (models, job_rx, res_tx) = (models.clone(), job_rx.clone(), res_tx.clone());
            let m = metrics.clone();
            std::thread::Builder::new().name(format!("earshot-asr-{i}")).spawn(move || {
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
                            Some(state) => crate::asr::refine::refine(&task, model, state, beam, &job.cancel).map_err(
                                |e| match e {
                                    crate::asr::ModelError::Aborted => None,
                                    e => Some(e.to_string()),
                                },
                            ),
                            None => Err(Some("no whisper state".to_string())),
                        };
                        m.asr_inference_seconds.with_label_values(&["refine"]).observe(t0.elapsed().as_secs_f64());
                        let r = JobResult {
                            stream: 0,
                            req: job.req,
                            text: Ok(String::new()),
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
                            .decode_utterance(
                                state,
                                &job.audio,
                                &job.req.prompt,
                                &job.language,
                                job.req.is_final,
                                Some(&job.cancel),
                            )
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
            })?;
        }
        let scheduler = Scheduler {
            rx,
            jobs: job_tx,
            results: res_rx,
            backlog: VecDeque::new(),
            streams: BTreeMap::new(),
            next_stream: 0,
            calls: HashMap::new(),
            policy: settings.policy,
            language: settings.language.as_str().into(),
            tenants: settings.tenants,
            refine_default: settings.refine,
            refine_model: settings.refine_model,
            refine_beam: settings.refine_beam,
            model_names: settings.model_names,
            refine_queue: VecDeque::new(),
            refining: None,
            overload: Overload::new(settings.overload),
            max_lag: settings.overload.max_lag_ms * RATE / 1000,
            started: Instant::now(),
            now: Instant::now(),
            layout,
            metrics,
        };
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

#[derive(Debug, Clone, Serialize)]
struct FinalSegment {
    channel: Role,
    utterance_id: String,
    text: String,
    start_ms: u64,
    end_ms: u64,
}

/// Speech shed unheard under overload (kept in the recording).
#[derive(Debug, Clone, Serialize)]
struct Gap {
    channel: Role,
    utterance_id: String,
    start_ms: u64,
    end_ms: u64,
    reason: &'static str,
}

struct CallState {
    info: CallInfo,
    /// The call's owner; held until the transcript is written (the scorecard waits).
    owner: CallHandle,
    /// Released (dropped) once the transcript is written.
    /// Handed to the refinement, if any, so the call is uploaded after it.
    seal: Option<crate::store::uploader::Seal>,
    open_streams: usize,
    finals: Vec<FinalSegment>,
    gaps: Vec<Gap>,
}

struct Stream {
    call: CallId,
    role: Role,
    model: usize,
    language: Arc<str>,
    tap: RecogniserTap,
    policy: StreamPolicy,
    /// Audio from sample `base` on, kept while a decode may still need it.
    audio: Vec<f32>,
    base: u64,
    in_flight: bool,
    /// The running (or waiting) job's cancel flag and whether it is a plain partial.
    in_flight_partial: Option<Arc<std::sync::atomic::AtomicBool>>,
    flushed: bool,
    /// When the channel's audio ended: from then on its pending work ages in wall time.
    ended_at: Option<Instant>,
    done: bool,
}

impl Stream {
    /// Samples of wall time since the channel's audio ended (0 while it is live): the
    /// audio clock stops at the end of a call, the people waiting for its transcript don't.
    fn idle(&self, now: Instant) -> u64 {
        self.ended_at.map_or(0, |t| (now.saturating_duration_since(t).as_secs_f64() * RATE as f64) as u64)
    }
}

struct Scheduler {
    rx: Receiver<Command>,
    jobs: SyncSender<Job>,
    results: Receiver<JobResult>,
    backlog: VecDeque<Job>,
    /// Keyed by a stable id (jobs in flight refer to it), not by position.
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
    calls: HashMap<CallId, CallState>,
    policy: PolicySettings,
    language: Arc<str>,
    tenants: HashMap<String, TenantAsr>,
    refine_default: bool,
    refine_model: Option<usize>,
    refine_beam: u32,
    model_names: Vec<String>,
    /// Finished calls waiting for the pool to be idle.
    refine_queue: VecDeque<RefineTask>,
    /// The refinement running now (its abort flag).
    refining: Option<Arc<std::sync::atomic::AtomicBool>>,
    overload: Overload,
    /// Shedding horizon, in samples.
    max_lag: u64,
    started: Instant,
    /// The time of the current step: read once per loop turn by `run`, the only place
    /// the scheduler reads the clock; every timing decision below takes it from here.
    now: Instant,
    layout: StoreLayout,
    metrics: Metrics,
}

impl Scheduler {
    /// Watches the worst backlog over all streams and moves the load level; sheds old
    /// queued audio while at the top level.
    fn regulate(&mut self) {
        let now = self.now;
        let worst =
            self.streams.values().filter(|s| !s.done).map(|s| s.policy.backlog_lag() + s.idle(now)).max().unwrap_or(0);
        let before = self.overload.level();
        let level =
            self.overload.observe(now.saturating_duration_since(self.started).as_millis() as u64, worst * 1000 / RATE);
        if level != before {
            tracing::warn!(
                from = before as u8,
                to = level as u8,
                worst_lag_ms = worst * 1000 / RATE,
                "ASR load level changed"
            );
            self.metrics.asr_degrade_level.set(level as i64);
            for s in self.streams.values_mut() {
                s.policy.set_degrade(level);
            }
        }
        if level < Degrade::FinalsOnly {
            return;
        }
        // Jobs not yet started: partials are dropped at once; finals when their audio
        // is older than the horizon (the channel's policy then goes on with its next).
        let mut dropped = Vec::new();
        let mut kept = VecDeque::with_capacity(self.backlog.len());
        for job in self.backlog.drain(..) {
            let Some(s) = self.streams.get(&job.stream) else { continue };
            let speculative = !job.req.is_final || s.policy.is_speculative(&job.req);
            let stale = level == Degrade::Shed && job.req.end + self.max_lag < s.policy.position() + s.idle(now);
            if speculative || stale {
                dropped.push(job);
            } else {
                kept.push_back(job);
            }
        }
        self.backlog = kept;
        let mut gaps = Vec::new();
        for job in dropped {
            self.metrics.asr_queue_depth.dec();
            let Some(s) = self.streams.get_mut(&job.stream) else { continue };
            if job.req.is_final && !s.policy.is_speculative(&job.req) {
                gaps.push((job.stream, StreamPolicy::gap_for(&job.req)));
            }
            let next = s.policy.cancel(&job.req);
            s.in_flight = false;
            s.in_flight_partial = None;
            self.dispatch(job.stream, next);
        }
        if level == Degrade::Shed {
            for (id, s) in self.streams.iter_mut() {
                let horizon = self.max_lag.saturating_sub(s.idle(now));
                gaps.extend(s.policy.shed(horizon).into_iter().map(|g| (*id, g)));
            }
        }
        for (id, gap) in gaps {
            let TranscriptUpdate::Gap { start_ms, end_ms, .. } = gap else { continue };
            let Some(s) = self.streams.get(&id) else { continue };
            self.metrics.asr_shed_seconds.inc_by(end_ms.saturating_sub(start_ms) as f64 / 1000.0);
            if let Some(c) = self.calls.get_mut(&s.call) {
                let p = gap.to_payload(s.role);
                c.gaps.push(Gap {
                    channel: s.role,
                    utterance_id: p.utterance_id,
                    start_ms,
                    end_ms,
                    reason: "asr_overload",
                });
                c.owner.publish(gap.to_event(s.role));
            }
        }
    }

    fn run(mut self) {
        let mut buf = Vec::new();
        let mut drain_waiters: Vec<SyncSender<()>> = Vec::new();
        loop {
            self.now = Instant::now();
            let now = self.now;
            let mut hub_gone = false;
            loop {
                let cmd = match self.rx.try_recv() {
                    Ok(cmd) => cmd,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        hub_gone = true;
                        break;
                    }
                };
                let (call, taps, owner) = match cmd {
                    Command::Attach { call, taps, owner } => (call, taps, owner),
                    Command::Drain(tx) => {
                        drain_waiters.push(tx);
                        continue;
                    }
                };
                let roles = call.layout.roles();
                self.calls.insert(
                    call.call_id,
                    CallState {
                        info: call.clone(),
                        seal: owner.seal(),
                        owner,
                        open_streams: taps.len(),
                        finals: Vec::new(),
                        gaps: Vec::new(),
                    },
                );
                for (i, tap) in taps.into_iter().enumerate() {
                    self.next_stream += 1;
                    let mut policy = StreamPolicy::new(self.policy);
                    policy.set_degrade(self.overload.level());
                    let t = self.tenants.get(&call.tenant);
                    self.streams.insert(
                        self.next_stream,
                        Stream {
                            call: call.call_id,
                            role: roles.get(i).copied().unwrap_or(Role::Other),
                            model: t.map_or(0, |t| t.model),
                            language: t.and_then(|t| t.language.as_deref()).map_or(self.language.clone(), Arc::from),
                            tap,
                            policy,
                            audio: Vec::new(),
                            base: 0,
                            in_flight: false,
                            in_flight_partial: None,
                            flushed: false,
                            ended_at: None,
                            done: false,
                        },
                    );
                }
            }
            let ids: Vec<u64> = self.streams.keys().copied().collect();
            for i in ids {
                let Some(s) = self.streams.get_mut(&i) else { continue };
                if s.done {
                    continue;
                }
                buf.clear();
                let skipped = s.tap.read(&mut buf);
                // Audio the recogniser was too late for is silence to the policy, so the
                // channel's clock (and every offset after it) stays right.
                let mut reqs = if skipped > 0 { s.policy.push_audio(&vec![0.0; skipped]) } else { Vec::new() };
                if skipped > 0 {
                    s.audio.extend(std::iter::repeat_n(0.0, skipped));
                }
                s.audio.extend_from_slice(&buf);
                reqs.extend(s.policy.push_audio(&buf));
                if s.tap.is_finished() && !s.flushed {
                    s.flushed = true;
                    s.ended_at = Some(now);
                    reqs.extend(s.policy.flush());
                }
                if s.policy.final_waiting() {
                    if let Some(flag) = s.in_flight_partial.take() {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let voice = s.policy.take_voice();
                let (updates, call, role) = (s.policy.take_updates(), s.call, s.role);
                if let Some(c) = self.calls.get(&call).filter(|_| !voice.is_empty()) {
                    for (start, ms) in voice {
                        c.owner.voice(role, if start { Voice::Start(ms) } else { Voice::End(ms) });
                    }
                }
                for u in updates {
                    self.publish(call, role, u);
                }
                self.dispatch(i, reqs);
                self.trim(i);
                self.maybe_done(i);
            }
            self.regulate();
            self.pump_backlog();
            self.pump_refine();
            self.streams.retain(|_, s| !s.done);
            if self.streams.is_empty() {
                for w in drain_waiters.drain(..) {
                    let _ = w.send(());
                }
                // The hub was dropped and nothing is left to finish: returning drops the
                // job queue's sender, which lets the worker threads exit too.
                if hub_gone {
                    if let Some(flag) = self.refining.take() {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    return;
                }
            }
            let mut busy = self.now.elapsed();
            match self.results.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => {
                    self.now = Instant::now();
                    self.on_result(r);
                    while let Ok(r) = self.results.try_recv() {
                        self.on_result(r);
                    }
                    busy += self.now.elapsed();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.metrics.asr_step_seconds.observe(busy.as_secs_f64());
        }
    }

    fn dispatch(&mut self, i: u64, reqs: Vec<DecodeRequest>) {
        for req in reqs {
            let Some(s) = self.streams.get_mut(&i) else { return };
            let from = (req.start.saturating_sub(s.base)) as usize;
            let to = ((req.end.saturating_sub(s.base)) as usize).min(s.audio.len());
            let audio = s.audio[from.min(to)..to].to_vec();
            s.in_flight = true;
            let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
            s.in_flight_partial = (!req.is_final).then(|| cancel.clone());
            self.metrics.asr_queue_depth.inc();
            let (model, language) = (s.model, s.language.clone());
            self.backlog.push_back(Job {
                cancel,
                stream: i,
                model,
                language,
                req,
                audio,
                queued_at: self.now,
                refine: None,
            });
        }
    }

    /// Starts one refinement when nothing live is waiting or running; stops a running
    /// one as soon as live work waits (it goes back in the queue).
    fn pump_refine(&mut self) {
        let live_busy = !self.backlog.is_empty() || self.streams.values().any(|s| s.in_flight);
        if let Some(flag) = &self.refining {
            if !self.backlog.is_empty() {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        if live_busy || self.overload.level() != Degrade::Normal {
            return;
        }
        let Some(task) = self.refine_queue.pop_front() else { return };
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let req = DecodeRequest {
            utterance: 0,
            start: 0,
            end: 0,
            is_final: true,
            early: false,
            retry: false,
            prompt: String::new(),
        };
        let job = Job {
            cancel: cancel.clone(),
            stream: 0,
            model: task.model,
            language: task.language.as_str().into(),
            req,
            audio: Vec::new(),
            queued_at: self.now,
            refine: Some((task, self.refine_beam)),
        };
        match self.jobs.try_send(job) {
            Ok(()) => self.refining = Some(cancel),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                if let Some((task, _)) = job.refine {
                    self.refine_queue.push_front(task);
                }
            }
        }
    }

    fn on_refined(&mut self, mut task: RefineTask, out: Result<usize, Option<String>>) {
        self.refining = None;
        match out {
            Ok(n) => {
                tracing::info!(call_id = %task.call_id, segments = n, model = %task.model_name, "transcript refined")
            }
            Err(None) if task.attempts < 100 => {
                task.attempts += 1;
                self.refine_queue.push_front(task);
            }
            Err(None) => tracing::warn!(call_id = %task.call_id, "refinement kept giving way to live calls: given up"),
            Err(Some(e)) => tracing::error!(call_id = %task.call_id, error = %e, "refinement failed"),
        }
    }

    fn pump_backlog(&mut self) {
        while let Some(job) = self.backlog.pop_front() {
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.backlog.push_front(job);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    fn trim(&mut self, i: u64) {
        let Some(s) = self.streams.get_mut(&i) else { return };
        let keep = s.policy.keep_from();
        if keep > s.base && !s.in_flight {
            let n = ((keep - s.base) as usize).min(s.audio.len());
            s.audio.drain(..n);
            s.base += n as u64;
        }
    }

    fn on_result(&mut self, r: JobResult) {
        if let Some((task, out)) = r.refine {
            self.on_refined(task, out);
            return;
        }
        let Some(s) = self.streams.get_mut(&r.stream) else { return };
        s.in_flight = false;
        s.in_flight_partial = None;
        let text = match r.text {
            Ok(t) => t,
            Err(None) => {
                // A partial stopped because a final was waiting behind it.
                let next = s.policy.cancel(&r.req);
                self.dispatch(r.stream, next);
                self.maybe_done(r.stream);
                return;
            }
            Err(Some(e)) => {
                tracing::warn!(error = %e, "decode failed");
                String::new()
            }
        };
        // Lag: how far the live audio has moved past what this result covers.
        let lag = s.policy.position().saturating_sub(r.req.end) as f64 / 16000.0;
        self.metrics.asr_lag_seconds.observe(lag);
        let (update, next) = s.policy.on_result(&r.req, &text);
        let (call, role) = (s.call, s.role);
        tracing::debug!(secs = r.seconds, final_ = r.req.is_final, early = r.req.early, "decode");
        if let Some(u) = update {
            self.publish(call, role, u);
        }
        self.dispatch(r.stream, next);
        self.maybe_done(r.stream);
    }

    fn publish(&mut self, call: CallId, role: Role, u: TranscriptUpdate) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        if let TranscriptUpdate::Final { .. } = u {
            let p = u.to_payload(role);
            c.finals.push(FinalSegment {
                channel: role,
                utterance_id: p.utterance_id,
                text: p.text,
                start_ms: p.start_ms,
                end_ms: p.end_ms,
            });
        }
        let event = u.to_event(role);
        self.metrics.asr_transcripts.with_label_values(&[event.type_name()]).inc();
        c.owner.publish(event);
    }

    fn maybe_done(&mut self, i: u64) {
        let queued = self.backlog.iter().any(|j| j.stream == i);
        let Some(s) = self.streams.get_mut(&i) else { return };
        let idle = !s.in_flight && !queued;
        if s.flushed && idle && !s.done {
            s.done = true;
            let call = s.call;
            let finished = self.calls.get_mut(&call).map(|c| {
                c.open_streams -= 1;
                c.open_streams == 0
            });
            if finished == Some(true) {
                if let Some(c) = self.calls.remove(&call) {
                    let tenant = self.tenants.get(&c.info.tenant);
                    let refine = tenant.and_then(|t| t.refine).unwrap_or(self.refine_default);
                    let call_model = tenant.map_or(0, |t| t.model);
                    let task = refine.then(|| {
                        let model = self.refine_model.unwrap_or(call_model);
                        RefineTask {
                            call_id: c.info.call_id,
                            tenant: c.info.tenant.clone(),
                            dir: self.layout.call_dir(&c.info.tenant, c.info.call_id),
                            roles: c.info.layout.roles(),
                            model,
                            model_name: self.model_names.get(model).cloned().unwrap_or_default(),
                            language: tenant
                                .and_then(|t| t.language.clone())
                                .unwrap_or_else(|| self.language.to_string()),
                            attempts: 0,
                            seal: c.seal.clone(),
                            redactor: c.owner.redactor(),
                            spans: c
                                .finals
                                .iter()
                                .map(|f| (f.channel, f.start_ms, f.end_ms))
                                .chain(c.gaps.iter().map(|g| (g.channel, g.start_ms, g.end_ms)))
                                .collect(),
                        }
                    });
                    let recorded = write_transcript(&self.layout, c);
                    if let (Some(task), true) = (task, recorded) {
                        if self.refine_queue.len() < 10_000 {
                            self.refine_queue.push_back(task);
                        } else {
                            tracing::warn!(call_id = %task.call_id, "refinement queue full: call keeps its live transcript");
                        }
                    }
                }
            }
        }
    }
}

/// Writes the live transcript; returns whether the call has a recording to refine from.
fn write_transcript(layout: &StoreLayout, mut c: CallState) -> bool {
    c.finals.sort_by_key(|f| (f.start_ms, f.end_ms));
    // Stored transcripts never hold a card number (the live events may, if the tenant allows).
    let redactor = c.owner.redactor();
    let roles = c.info.layout.roles();
    let mut silence = Vec::new();
    for f in &mut c.finals {
        if let std::borrow::Cow::Owned(m) = redactor.apply(&f.text) {
            f.text = m;
            if let Some(ch) = roles.iter().position(|r| *r == f.channel) {
                silence.push(serde_json::json!({ "channel": ch, "start_ms": f.start_ms, "end_ms": f.end_ms }));
            }
        }
    }
    if !silence.is_empty() && c.owner.redact_audio() {
        // Carried out by the uploader, once every writer of the recording is done.
        let dir = layout.call_dir(&c.info.tenant, c.info.call_id);
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| {
            std::fs::write(
                dir.join(crate::store::objects::REDACT_AUDIO),
                serde_json::to_vec(&silence).unwrap_or_default(),
            )
        }) {
            tracing::error!(call_id = %c.info.call_id, error = %e, "recording the audio to silence");
        }
    }
    let dir: PathBuf = layout.call_dir(&c.info.tenant, c.info.call_id);
    let json = serde_json::json!({
        "version": 1,
        "call_id": c.info.call_id,
        "tenant": c.info.tenant,
        "segments": c.finals,
        "gaps": c.gaps,
    });
    let who = |r: Role| match r {
        Role::Rep => "Rep",
        Role::Customer => "Customer",
        Role::Other => "Speaker",
    };
    let stamp = |ms: u64| format!("[{:02}:{:04.1}]", ms / 60_000, (ms % 60_000) as f64 / 1000.0);
    let mut lines: Vec<(u64, String)> = c
        .finals
        .iter()
        .map(|f| (f.start_ms, format!("{} {}: {}", stamp(f.start_ms), who(f.channel), f.text)))
        .collect();
    lines.extend(c.gaps.iter().map(|g| {
        let secs = g.end_ms.saturating_sub(g.start_ms) as f64 / 1000.0;
        (g.start_ms, format!("{} {}: (untranscribed, {secs:.1} s: {})", stamp(g.start_ms), who(g.channel), g.reason))
    }));
    lines.sort_by_key(|(t, _)| *t);
    let txt: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        // The text first: once transcript.json exists, both are complete.
        std::fs::write(dir.join("transcript.txt"), txt)?;
        let tmp = dir.join("transcript.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
        std::fs::rename(&tmp, dir.join("transcript.json"))
    };
    if let Err(e) = write() {
        tracing::error!(call_id = %c.info.call_id, error = %e, "writing transcript");
    }
    dir.join("audio.wav").exists()
}
