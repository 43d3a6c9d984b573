//! The call's owner: one task per call holds its `seq` counter, its coach, the
//! redaction of its text and the publishing of its events. Everyone else talks to it
//! through a [`CallHandle`]: the ingest task (through `call::session`), the ASR
//! scheduler thread (transcripts and voice edges) and the owner's own timer (metrics,
//! time-based hints). The ASR thread only ever `try_send`s, so a slow `/live` client,
//! the live hub's lock or Redis can never hold recognition up; an input the owner has
//! no room for is dropped and counted (`earshot_call_inputs_dropped_total`).
//!
//! The scorecard is made when every part of the call has let go: `call.ended` came
//! from the ingest task and every [`CallHandle`] (the recogniser keeps one until the
//! last words are transcribed and saved) is dropped, which closes the input channel.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::call::postcall::{PostCall, PostCallQueue};
use crate::call::redact::Redactor;
use crate::call::{CallId, CallInfo, Role};
use crate::clock::Clock;
use crate::coach::{Coach, CoachOutput, Playbook, Voice};
use crate::events::{CallEndedPayload, Event, EventBody, EventSequencer};
use crate::live::outlet::EventOutlet;
use crate::metrics::Metrics;
use crate::store::uploader::Seal;

/// Room for inputs between the ASR thread and the owner. A call makes a few events a
/// second; this is minutes of them, so a drop means the owner task is stuck.
const INPUT_QUEUE: usize = 1024;

/// Hints kept for `hints.json`.
const MAX_SAVED_HINTS: usize = 1000;

/// What the owner is told.
#[derive(Debug)]
pub enum CallInput {
    /// A `transcript.partial` or `transcript.final` (redacted by the owner).
    Transcript(EventBody),
    /// A channel started or stopped speaking (ms into the call).
    Voice(Role, Voice),
    /// The ingest side is done: publish `call.ended`.
    Ended(CallEndedPayload),
}

/// A way to reach a call's owner; cheap to clone. Holding one keeps the scorecard waiting.
#[derive(Clone)]
pub struct CallHandle {
    tx: mpsc::Sender<CallInput>,
    fixed: Arc<Fixed>,
}

/// What the owner needs from the rest of the server (and nothing more: it never sees
/// the connection-level state).
pub struct OwnerEnv {
    pub clock: Clock,
    pub metrics: Metrics,
    pub events: Arc<EventOutlet>,
    pub postcall: PostCallQueue,
    /// How often a `metrics` event and time-based hints are made.
    pub metrics_interval: std::time::Duration,
    /// The call's spool folder (hints and scorecard files go there).
    pub call_dir: std::path::PathBuf,
    pub redactor: Arc<Redactor>,
    /// Whether live text is masked (the tenant's `redact_live`).
    pub redact_live: bool,
    /// Whether masked utterances are silenced in the stored audio too.
    pub redact_audio: bool,
    /// The tenant's webhook: URL and signing secret.
    pub webhook: Option<(String, String)>,
    /// Keeps the call's spool folder from upload until hints and scorecard are written.
    pub seal: Option<Seal>,
    /// Where the owner task is started (tracked for shutdown).
    pub tasks: crate::shutdown::Tasks,
}

/// What never changes during a call, readable without asking the owner.
struct Fixed {
    metrics: Metrics,
    call_id: CallId,
    redactor: Arc<Redactor>,
    redact_audio: bool,
    /// Keeps the call's spool folder from upload while the call or its refinement runs.
    seal: Option<Seal>,
}

impl CallHandle {
    /// Hands a transcript update or voice edge to the owner without waiting. False when
    /// it was dropped (counted): the owner is gone or has fallen far behind.
    pub fn offer(&self, input: CallInput) -> bool {
        let kind = input.kind();
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(e) => {
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "full",
                    mpsc::error::TrySendError::Closed(_) => "closed",
                };
                self.fixed.metrics.call_inputs_dropped.with_label_values(&[kind, reason]).inc();
                false
            }
        }
    }

    pub fn publish(&self, body: EventBody) -> bool {
        self.offer(CallInput::Transcript(body))
    }

    pub fn voice(&self, role: Role, edge: Voice) -> bool {
        self.offer(CallInput::Voice(role, edge))
    }

    /// `call.ended`: waits for room (the ingest task may; it must not be lost).
    pub async fn end(&self, payload: CallEndedPayload) {
        if self.tx.send(CallInput::Ended(payload)).await.is_err() {
            tracing::error!(call_id = %self.fixed.call_id, "call owner gone before call.ended");
        }
    }

    /// What is masked in this call's text.
    pub fn redactor(&self) -> Arc<Redactor> {
        self.fixed.redactor.clone()
    }

    /// Whether masked utterances are silenced in the stored audio too.
    pub fn redact_audio(&self) -> bool {
        self.fixed.redact_audio
    }

    /// Keeps the call's spool folder from upload while held (refinement).
    pub fn seal(&self) -> Option<Seal> {
        self.fixed.seal.clone()
    }

    pub fn call_id(&self) -> CallId {
        self.fixed.call_id
    }
}

impl CallInput {
    fn kind(&self) -> &'static str {
        match self {
            CallInput::Transcript(EventBody::TranscriptFinal(_)) => "final",
            CallInput::Transcript(_) => "partial",
            CallInput::Voice(..) => "voice",
            CallInput::Ended(_) => "ended",
        }
    }
}

/// The owner's state; lives in its task.
struct CallOwner {
    env: OwnerEnv,
    sequencer: EventSequencer,
    started_at: DateTime<Utc>,
    call_id: CallId,
    coach: Coach,
    out: Vec<CoachOutput>,
    hints: Vec<Arc<Event>>,
    /// Set at `call.ended`.
    duration_ms: Option<u64>,
}

/// Starts a call's owner: publishes `call.started` (seq 1) before returning, then
/// runs the owner task. The handle returned is the ingest side's part of the call.
pub fn spawn(env: OwnerEnv, info: &CallInfo, playbook: Arc<Playbook>, started: EventBody) -> CallHandle {
    let fixed = Arc::new(Fixed {
        metrics: env.metrics.clone(),
        call_id: info.call_id,
        redactor: env.redactor.clone(),
        redact_audio: env.redact_audio,
        seal: env.seal.clone(),
    });
    let every = env.metrics_interval;
    let mut owner = CallOwner {
        env,
        sequencer: EventSequencer::new(info.tenant.clone(), info.call_id, info.started_at),
        started_at: info.started_at,
        call_id: info.call_id,
        coach: Coach::new(playbook),
        out: Vec::new(),
        hints: Vec::new(),
        duration_ms: None,
    };
    owner.on_input(CallInput::Transcript(started));
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let tasks = owner.env.tasks.clone();
    tasks.spawn(owner.run(rx, every));
    CallHandle { tx, fixed }
}

impl CallOwner {
    async fn run(mut self, mut rx: mpsc::Receiver<CallInput>, every: std::time::Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input),
                    // Every part has let go.
                    None => break,
                },
                _ = ticker.tick(), if self.duration_ms.is_none() => self.tick(),
            }
        }
        if self.duration_ms.is_some() {
            self.finish();
        } else {
            // The ingest task died without ending the call (the recorder marks it
            // internal_error): no scorecard for a call that never ended.
            tracing::warn!(call_id = %self.call_id, "call owner stopped without call.ended");
        }
    }

    fn now_ms(&self) -> u64 {
        ((self.env.clock)() - self.started_at).num_milliseconds().max(0) as u64
    }

    fn on_input(&mut self, input: CallInput) {
        match input {
            CallInput::Transcript(body) => self.transcript(body),
            CallInput::Voice(role, edge) => {
                self.coach.on_voice(role, edge, &mut self.out);
                self.flush();
            }
            CallInput::Ended(payload) => {
                self.duration_ms = Some(payload.duration_ms);
                let event = self.emit(EventBody::CallEnded(payload));
                self.webhook(event);
            }
        }
    }

    fn transcript(&mut self, mut body: EventBody) {
        let partial = matches!(body, EventBody::TranscriptPartial(_));
        if let EventBody::TranscriptPartial(p) | EventBody::TranscriptFinal(p) = &mut body {
            if self.env.redact_live {
                let before = p.text.clone();
                for s in [&mut p.text, &mut p.stable, &mut p.unstable] {
                    // A partial may hold a card number half spoken: masked earlier.
                    let masked = if partial { self.env.redactor.apply_partial(s) } else { self.env.redactor.apply(s) };
                    if let std::borrow::Cow::Owned(m) = masked {
                        *s = m;
                    }
                }
                if p.text != before {
                    mask_words(p);
                }
            }
        }
        let now = self.now_ms();
        let transcript = match &body {
            EventBody::TranscriptPartial(p) => Some((p.clone(), false)),
            EventBody::TranscriptFinal(p) => Some((p.clone(), true)),
            _ => None,
        };
        self.emit(body);
        if let Some((p, is_final)) = transcript {
            self.coach.on_transcript(&p, is_final, now, &mut self.out);
            self.flush();
        }
    }

    /// Time-based hints and a `metrics` event.
    fn tick(&mut self) {
        let now = self.now_ms();
        self.coach.tick(now, &mut self.out);
        self.flush();
        let m = self.coach.metrics(now);
        self.emit(EventBody::Metrics(m));
    }

    /// Every part is done: the scorecard, then the files and webhooks after the call.
    fn finish(&mut self) {
        let end = self.duration_ms.unwrap_or_else(|| self.now_ms());
        let card = self.coach.finish(end, &mut self.out);
        self.flush();
        let scorecard = self.emit(EventBody::Scorecard(Box::new(card)));
        let seal = self.env.seal.take();
        self.env.postcall.submit(PostCall::Files {
            dir: self.env.call_dir.clone(),
            hints: std::mem::take(&mut self.hints),
            scorecard: scorecard.clone(),
            seal,
            redactor: self.env.redactor.clone(),
        });
        self.webhook(scorecard);
    }

    fn webhook(&self, event: Arc<Event>) {
        if let Some((url, secret)) = &self.env.webhook {
            self.env.postcall.submit(PostCall::Webhook { url: url.clone(), secret: secret.clone(), event });
        }
    }

    fn emit(&mut self, body: EventBody) -> Arc<Event> {
        let event = self.sequencer.stamp((self.env.clock)(), body);
        self.env.events.publish(event)
    }

    /// Publishes what the coach produced.
    fn flush(&mut self) {
        for o in std::mem::take(&mut self.out) {
            match o {
                CoachOutput::Hint(h) => {
                    self.env.metrics.coach_hints.with_label_values(&[severity_label(h.severity)]).inc();
                    tracing::debug!(call_id = %self.call_id, kind = %h.kind, reason = %h.reason, "hint");
                    let e = self.emit(EventBody::Hint(h));
                    if self.hints.len() < MAX_SAVED_HINTS {
                        self.hints.push(e);
                    }
                }
                CoachOutput::Checklist(c) => {
                    self.emit(EventBody::Checklist(c));
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

/// The word timings of a transcript whose text redaction changed: each word takes the
/// masked text's word in its place when the counts agree; otherwise the timings go (a
/// mask may join or split words, and no unmasked word may be left behind).
fn mask_words(p: &mut crate::events::TranscriptPayload) {
    let masked: Vec<&str> = p.text.split_whitespace().collect();
    match p.words.as_mut() {
        Some(words) if words.len() == masked.len() => {
            for (w, m) in words.iter_mut().zip(masked) {
                w.text = m.to_string();
            }
        }
        _ => p.words = None,
    }
}
