//! The ASR scheduler thread: owns every live channel stream, reads the channels'
//! rings into their streaming policies, regulates load (shedding under overload),
//! queues decode jobs with at most one in flight per stream, pumps the backlog and
//! post-call refinements to the workers, hands results to the call owners (never
//! waiting) and writes each call's transcript when its channels are done.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::asr::hypothesis::Hypothesis;
use crate::asr::overload::Overload;
use crate::asr::refine::RefineTask;
use crate::asr::settings::{AsrSettings, TenantAsr};
use crate::asr::stream_policy::{DecodeRequest, Degrade, PolicySettings, StreamPolicy, TranscriptUpdate, RATE};
use crate::asr::transcript_file::{write_transcript, FinalSegment, Gap};
use crate::asr::workers::{Job, JobResult};
use crate::call::owner::CallHandle;
use crate::call::{CallId, CallInfo, Role};
use crate::coach::Voice;
use crate::media::recogniser_feed::RecogniserTap;
use crate::metrics::Metrics;
use crate::store::spool::StoreLayout;

/// What the hub tells the scheduler.
pub(super) enum Command {
    Attach {
        call: CallInfo,
        taps: Vec<RecogniserTap>,
        owner: CallHandle,
    },
    /// Answer once no stream is left.
    Drain(SyncSender<()>),
}

pub(super) struct CallState {
    pub(super) info: CallInfo,
    /// The call's owner; held until the transcript is written (the scorecard waits).
    pub(super) owner: CallHandle,
    /// Released (dropped) once the transcript is written.
    /// Handed to the refinement, if any, so the call is uploaded after it.
    seal: Option<crate::store::uploader::Seal>,
    open_streams: usize,
    pub(super) finals: Vec<FinalSegment>,
    pub(super) gaps: Vec<Gap>,
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

pub(super) struct Scheduler {
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
    pub(super) fn new(
        rx: Receiver<Command>,
        jobs: SyncSender<Job>,
        results: Receiver<JobResult>,
        settings: AsrSettings,
        layout: StoreLayout,
        metrics: Metrics,
    ) -> Scheduler {
        Scheduler {
            rx,
            jobs,
            results,
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
        }
    }

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

    pub(super) fn run(mut self) {
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
        let req = DecodeRequest { utterance: 0, start: 0, end: 0, is_final: true, early: false, prompt: String::new() };
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

    /// Hands waiting jobs to free workers, most urgent first: finals the endpoint has
    /// decided on, then early finals, then partials; the oldest first within each. A
    /// job leaves the backlog only when a worker takes it (the job queue has no room of
    /// its own), so this order is the order of work.
    fn pump_backlog(&mut self) {
        loop {
            let urgency = |job: &Job| match self.streams.get(&job.stream) {
                Some(s) if job.req.is_final && !s.policy.is_speculative(&job.req) => 0,
                _ if job.req.is_final => 1,
                _ => 2,
            };
            let Some((at, _)) = self.backlog.iter().enumerate().min_by_key(|(i, job)| (urgency(job), *i)) else {
                return;
            };
            let job = self.backlog.remove(at).expect("index from the backlog");
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.backlog.insert(at, job);
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
                Hypothesis::default()
            }
        };
        // Lag: how far the live audio has moved past what this result covers.
        let lag = s.policy.position().saturating_sub(r.req.end) as f64 / 16000.0;
        self.metrics.asr_lag_seconds.observe(lag);
        let (updates, next) = s.policy.on_result(&r.req, &text);
        let (call, role) = (s.call, s.role);
        tracing::debug!(secs = r.seconds, final_ = r.req.is_final, early = r.req.early, "decode");
        for u in updates {
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
                    let recorded = write_transcript(&self.layout, &c.info, &c.owner, c.finals, c.gaps);
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
