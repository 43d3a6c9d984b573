//! The IO side of one call, owned by the call's task: admission, the recorder handle,
//! event numbering, and the end-of-call bookkeeping shared by every ingest.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::coaching::PostCall;
use super::AppState;
use crate::call::{CallInfo, Outcome, Role, SampleEncoding};
use crate::coach::{Coach, CoachOutput, Playbook, Voice};
use crate::events::Event;
use crate::events::{CallEndedPayload, CallStartedPayload, EventBody, EventSequencer};
use crate::manifest::{DtmfEvent, Manifest, MediaStats};
use crate::media::g711;
use crate::media::recogniser_feed::{DropObserver, DropReason, RecogniserFeed, RECOGNISER_RATE};
use crate::recorder::pool::{CallEnd, RecorderError, RecorderHandle};

/// A reserved place among `limits.max_calls`; released on drop.
pub struct CallSlot {
    app: Arc<AppState>,
}

impl CallSlot {
    /// `None` when draining or at the call limit.
    pub fn try_acquire(app: &Arc<AppState>) -> Option<CallSlot> {
        if app.is_draining() {
            return None;
        }
        let max = app.config.limits.max_calls;
        let mut cur = app.active_calls.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match app.active_calls.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(CallSlot { app: app.clone() }),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.app.active_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

const MAX_DTMF_KEPT: usize = 1000;

/// Hints kept for `hints.json`.
const MAX_SAVED_HINTS: usize = 1000;

/// Publishes a call's events with its one `seq` counter, and owns the call's coach.
/// Shared by the call's task, the recogniser (transcripts, voice activity) and the
/// metrics ticker. The mutex makes "take the next seq" and "put it on the bus" one
/// step, so subscribers see seq in order; it is held only for that and the coach's
/// few microseconds of work, and events are a few per second per call.
///
/// The scorecard is made when every *part* of the call is done: the call's own task
/// (at `call.ended`) and each holder of a [`PartGuard`] (the recogniser, until the last
/// words are transcribed).
pub struct CallPublisher {
    app: Arc<AppState>,
    inner: std::sync::Mutex<PublisherInner>,
}

struct PublisherInner {
    sequencer: EventSequencer,
    started_at: DateTime<Utc>,
    tenant: String,
    call_id: crate::call::CallId,
    coach: Coach,
    out: Vec<CoachOutput>,
    hints: Vec<Arc<Event>>,
    parts: u32,
    /// Set at `call.ended`.
    duration_ms: Option<u64>,
    finished: bool,
    /// Keeps the call's spool folder from upload until hints and scorecard are written.
    seal: Option<super::uploader::Seal>,
}

/// Keeps the scorecard waiting while held (see [`CallPublisher::hold`]).
pub struct PartGuard(Arc<CallPublisher>);

impl Drop for PartGuard {
    fn drop(&mut self) {
        self.0.part_done();
    }
}

impl CallPublisher {
    fn new(app: Arc<AppState>, info: &CallInfo, playbook: Arc<Playbook>) -> Self {
        Self {
            app: app.clone(),
            inner: std::sync::Mutex::new(PublisherInner {
                sequencer: EventSequencer::new(info.tenant.clone(), info.call_id, info.started_at),
                started_at: info.started_at,
                tenant: info.tenant.clone(),
                call_id: info.call_id,
                coach: Coach::new(playbook),
                out: Vec::new(),
                hints: Vec::new(),
                parts: 1,
                duration_ms: None,
                finished: false,
                seal: Some(app.uploader.seal(&info.tenant, info.call_id)),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PublisherInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether masked utterances are silenced in the stored audio too.
    pub fn redact_audio(&self) -> bool {
        let tenant = self.lock().tenant.clone();
        self.app.config.tenant(&tenant).is_some_and(|t| t.redact_audio)
    }

    /// What is masked in this call's text.
    pub fn redactor(&self) -> Arc<crate::redact::Redactor> {
        self.app.redactor(&self.lock().tenant)
    }

    pub fn publish(&self, body: EventBody) {
        let mut body = body;
        let tenant = self.lock().tenant.clone();
        let partial = matches!(body, EventBody::TranscriptPartial(_));
        if let EventBody::TranscriptPartial(p) | EventBody::TranscriptFinal(p) = &mut body {
            if self.app.config.tenant(&tenant).is_none_or(|t| t.redact_live) {
                let r = self.app.redactor(&tenant);
                for s in [&mut p.text, &mut p.stable, &mut p.unstable] {
                    // A partial may hold a card number half spoken: masked earlier.
                    let masked = if partial { r.apply_partial(s) } else { r.apply(s) };
                    if let std::borrow::Cow::Owned(m) = masked {
                        *s = m;
                    }
                }
            }
        }
        let mut inner = self.lock();
        let now = inner.now_ms();
        let transcript = match &body {
            EventBody::TranscriptPartial(p) => Some((p.clone(), false)),
            EventBody::TranscriptFinal(p) => Some((p.clone(), true)),
            _ => None,
        };
        inner.emit(&self.app, body);
        if let Some((p, is_final)) = transcript {
            if !inner.finished {
                let inner = &mut *inner;
                inner.coach.on_transcript(&p, is_final, now, &mut inner.out);
                inner.flush(&self.app);
            }
        }
    }

    /// A channel starts or stops speaking (ms into the call).
    pub fn voice(&self, role: Role, edge: Voice) {
        let mut inner = self.lock();
        if inner.finished {
            return;
        }
        let inner = &mut *inner;
        inner.coach.on_voice(role, edge, &mut inner.out);
        inner.flush(&self.app);
    }

    /// Periodic: time-based hints and a `metrics` event. False once the call has ended.
    pub fn tick(&self) -> bool {
        let mut inner = self.lock();
        if inner.finished || inner.duration_ms.is_some() {
            return false;
        }
        let now = inner.now_ms();
        let inner = &mut *inner;
        inner.coach.tick(now, &mut inner.out);
        inner.flush(&self.app);
        let m = inner.coach.metrics(now);
        inner.emit(&self.app, EventBody::Metrics(m));
        true
    }

    /// Keeps the call's spool folder from upload while held (refinement).
    pub fn seal(&self) -> Option<super::uploader::Seal> {
        self.lock().seal.clone()
    }

    /// Another part of the call that must finish before the scorecard.
    pub fn hold(self: &Arc<Self>) -> PartGuard {
        self.lock().parts += 1;
        PartGuard(self.clone())
    }

    /// Publishes `call.ended` (and sends it to the tenant's webhook); this call's own part is done.
    fn end_call(&self, payload: CallEndedPayload) {
        {
            let mut inner = self.lock();
            inner.duration_ms = Some(payload.duration_ms);
            let event = inner.emit(&self.app, EventBody::CallEnded(payload));
            self.webhook(&inner.tenant, event);
        }
        self.part_done();
    }

    fn webhook(&self, tenant: &str, event: Arc<Event>) {
        if let Some(t) = self.app.config.tenant(tenant) {
            if let (Some(url), Some(secret)) = (&t.webhook_url, &t.webhook_secret) {
                self.app.postcall.submit(PostCall::Webhook { url: url.clone(), secret: secret.clone(), event });
            }
        }
    }

    fn part_done(&self) {
        let mut inner = self.lock();
        inner.parts = inner.parts.saturating_sub(1);
        if inner.parts > 0 || inner.finished {
            return;
        }
        inner.finished = true;
        let end = inner.duration_ms.unwrap_or_else(|| inner.now_ms());
        let inner = &mut *inner;
        let card = inner.coach.finish(end, &mut inner.out);
        inner.flush(&self.app);
        let scorecard = inner.emit(&self.app, EventBody::Scorecard(Box::new(card)));
        let dir = self.app.layout.call_dir(&inner.tenant, inner.call_id);
        let seal = inner.seal.take();
        let redactor = self.app.redactor(&inner.tenant);
        self.app.postcall.submit(PostCall::Files {
            dir,
            hints: std::mem::take(&mut inner.hints),
            scorecard: scorecard.clone(),
            seal,
            redactor,
        });
        self.webhook(&inner.tenant, scorecard);
    }
}

impl PublisherInner {
    fn now_ms(&self) -> u64 {
        (Utc::now() - self.started_at).num_milliseconds().max(0) as u64
    }

    fn emit(&mut self, app: &AppState, body: EventBody) -> Arc<Event> {
        let event = self.sequencer.stamp(Utc::now(), body);
        app.publish(event)
    }

    /// Publishes what the coach produced.
    fn flush(&mut self, app: &AppState) {
        let out = std::mem::take(&mut self.out);
        for o in out {
            match o {
                CoachOutput::Hint(h) => {
                    app.metrics.coach_hints.with_label_values(&[severity_label(h.severity)]).inc();
                    tracing::debug!(call_id = %self.call_id, kind = %h.kind, reason = %h.reason, "hint");
                    let e = self.emit(app, EventBody::Hint(h));
                    if self.hints.len() < MAX_SAVED_HINTS {
                        self.hints.push(e);
                    }
                }
                CoachOutput::Checklist(c) => {
                    self.emit(app, EventBody::Checklist(c));
                }
            }
        }
    }
}

fn severity_label(s: crate::coach::Severity) -> &'static str {
    match s {
        crate::coach::Severity::Info => "info",
        crate::coach::Severity::Warning => "warning",
        crate::coach::Severity::Critical => "critical",
    }
}

pub struct CallSession {
    app: Arc<AppState>,
    info: CallInfo,
    recorder: Option<RecorderHandle>,
    publisher: Arc<CallPublisher>,
    dtmf: Vec<DtmfEvent>,
    dtmf_count: u64,
    storage_failed: bool,
    recogniser: Option<RecogniserPath>,
    _slot: CallSlot,
}

/// Decode + deinterleave + resample into the recogniser's rings (only when one is registered).
struct RecogniserPath {
    feed: RecogniserFeed,
    channels: usize,
    encoding: SampleEncoding,
    linear: Vec<i16>,
    per_channel: Vec<i16>,
}

impl RecogniserPath {
    fn push(&mut self, bytes: &[u8]) {
        self.linear.clear();
        match self.encoding {
            SampleEncoding::Mulaw => g711::decode_ulaw_into(bytes, &mut self.linear),
            SampleEncoding::Alaw => g711::decode_alaw_into(bytes, &mut self.linear),
            SampleEncoding::L16 => self.linear.extend(bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
        }
        for ch in 0..self.channels {
            self.per_channel.clear();
            self.per_channel.extend(self.linear.iter().skip(ch).step_by(self.channels));
            self.feed.push(ch, &self.per_channel);
        }
    }
}

impl CallSession {
    /// Opens the recording (blocking IO on a blocking thread) and announces the call.
    pub async fn start(
        app: Arc<AppState>,
        slot: CallSlot,
        info: CallInfo,
        recording: bool,
    ) -> Result<Self, RecorderError> {
        let app2 = app.clone();
        let info2 = info.clone();
        let (handle, playbook) = tokio::task::spawn_blocking(move || {
            let playbook = app2.playbooks.for_call(app2.config.tenant(&info2.tenant), info2.campaign.as_deref());
            (app2.recorder.open(&info2, recording), playbook)
        })
        .await
        .map_err(|_| RecorderError::Closed)?;
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                app.metrics.errors.with_label_values(&["recorder", "start_failed"]).inc();
                return Err(e);
            }
        };
        let source = info.source.as_str();
        app.metrics.calls_started.with_label_values(&[source]).inc();
        app.metrics.calls_active.with_label_values(&[source]).inc();
        let publisher = Arc::new(CallPublisher::new(app.clone(), &info, playbook));
        publisher.publish(EventBody::CallStarted(CallStartedPayload {
            source: info.source,
            campaign: info.campaign.clone(),
            rep_id: info.rep_id.clone(),
            layout: info.layout,
            channels: info.layout.roles(),
            sample_rate: info.sample_rate,
            recording,
            source_ids: info.source_ids.clone(),
            participants: info.participants.clone(),
        }));
        let recogniser = app.recogniser.as_ref().and_then(|(hub, settings)| {
            let channels = info.layout.channels();
            let counters = [
                app.metrics.recogniser_dropped_seconds.with_label_values(&["behind"]),
                app.metrics.recogniser_dropped_seconds.with_label_values(&["ring_full"]),
            ];
            let observer: DropObserver = Box::new(move |reason, samples| {
                let c = &counters[usize::from(reason == DropReason::RingFull)];
                c.inc_by(samples as f64 / RECOGNISER_RATE as f64);
            });
            match RecogniserFeed::new(
                info.sample_rate,
                channels,
                settings.ring_seconds,
                settings.max_lag_seconds,
                Some(observer),
            ) {
                Ok((feed, taps)) => {
                    hub.attach(&info, taps, feed.drops().clone(), publisher.clone());
                    Some(RecogniserPath {
                        feed,
                        channels,
                        encoding: info.encoding,
                        linear: Vec::new(),
                        per_channel: Vec::new(),
                    })
                }
                Err(e) => {
                    tracing::error!(call_id = %info.call_id, error = %e, "no recogniser feed for this call");
                    None
                }
            }
        });
        // Metrics and time-based hints, until the call ends. Weak: a call whose task died
        // without ending it (the recorder marks it internal_error) must not be ticked forever.
        let ticker = Arc::downgrade(&publisher);
        let every = app.config.live.metrics_interval;
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            iv.tick().await;
            loop {
                iv.tick().await;
                if !ticker.upgrade().is_some_and(|p| p.tick()) {
                    break;
                }
            }
        });
        tracing::info!(call_id = %info.call_id, tenant = %info.tenant, source, layout = ?info.layout, rate = info.sample_rate, "call started");
        Ok(Self {
            app,
            info,
            recorder: Some(handle),
            publisher,
            dtmf: Vec::new(),
            dtmf_count: 0,
            storage_failed: false,
            recogniser,
            _slot: slot,
        })
    }

    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// Queues interleaved audio in the call's encoding for the recorder. Never waits.
    /// Err means storage cannot keep up or failed: the caller ends the call.
    pub fn write_audio(&mut self, bytes: &[u8]) -> Result<(), RecorderError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(r) = self.recogniser.as_mut() {
            r.push(bytes);
        }
        let Some(rec) = self.recorder.as_mut() else { return Ok(()) };
        match rec.write(bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                if !self.storage_failed {
                    self.storage_failed = true;
                    let code = if matches!(e, RecorderError::RingFull) { "ring_full" } else { "io" };
                    self.app.metrics.errors.with_label_values(&["recorder", code]).inc();
                    tracing::error!(call_id = %self.info.call_id, error = %e, "ending call: storage");
                }
                Err(e)
            }
        }
    }

    pub fn record_dtmf(&mut self, digit: String, track: Option<&str>) {
        self.dtmf_count += 1;
        if self.dtmf.len() < MAX_DTMF_KEPT {
            let offset_ms = (Utc::now() - self.info.started_at).num_milliseconds().max(0) as u64;
            self.dtmf.push(DtmfEvent { digit, offset_ms, track: track.map(str::to_string) });
        }
    }

    /// Finalises the recording and manifest, publishes `call.ended`, updates metrics.
    pub async fn end(mut self, outcome: Outcome, mut stats: MediaStats) -> Option<Manifest> {
        let outcome = if self.storage_failed { Outcome::StorageError } else { outcome };
        stats.dtmf_events = self.dtmf_count;
        // Keyed card numbers never reach the manifest.
        let mut dtmf = std::mem::take(&mut self.dtmf);
        let digits: Vec<&str> = dtmf.iter().map(|d| d.digit.as_str()).collect();
        let mask = crate::redact::dtmf_card_mask(&digits);
        for (d, m) in dtmf.iter_mut().zip(mask) {
            if m {
                d.digit = "*".into();
            }
        }
        let end = CallEnd { outcome: outcome.clone(), ended_at: Utc::now(), stats, dtmf };
        let rx = self.recorder.take().expect("end is called once").finish(end);
        // Dropping the feed closes the rings: the recogniser sees the call's end.
        self.recogniser.take();
        let manifest = rx.await.ok().map(|f| f.manifest);
        let final_outcome = manifest.as_ref().and_then(|m| m.outcome.clone()).unwrap_or_else(|| outcome.manifest_str());
        let source = self.info.source.as_str();
        let label = if final_outcome.starts_with("storage_error") { "storage_error" } else { outcome.label() };
        self.app.metrics.calls_ended.with_label_values(&[source, label]).inc();
        self.app.metrics.calls_active.with_label_values(&[source]).dec();
        let duration_ms = manifest
            .as_ref()
            .and_then(|m| m.audio.as_ref().map(|a| a.duration_ms))
            .unwrap_or_else(|| (Utc::now() - self.info.started_at).num_milliseconds().max(0) as u64);
        self.publisher.end_call(CallEndedPayload { outcome: final_outcome.clone(), duration_ms, stats });
        tracing::info!(call_id = %self.info.call_id, outcome = %final_outcome, duration_ms, "call ended");
        manifest
    }
}
