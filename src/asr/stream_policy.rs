//! Per-channel streaming policy: decides *when* to decode *which* audio, and turns
//! decode results into partials and finals. Sans-IO: 16 kHz samples and decode
//! results in, decode requests and transcript updates out; no clock but the sample count.
//!
//! While someone speaks, the current utterance is re-decoded from its start every
//! `step` and LocalAgreement-2 commits the words two consecutive hypotheses agree on
//! (`Partial`). When the VAD sees `endpoint` of silence, or the utterance reaches
//! `max_utterance`, one last decode makes the `Final`.

use crate::asr::local_agreement::LocalAgreement;
use crate::asr::vad::{Vad, VadEvent, VadSettings, FRAME};
use crate::call::Role;
use crate::events::{EventBody, TranscriptPayload};

pub const RATE: u64 = 16_000;

#[derive(Debug, Clone, Copy)]
pub struct PolicySettings {
    /// Re-decode cadence while speaking.
    pub step_ms: u64,
    /// Audio kept before the VAD's speech start (the onset of the first word).
    pub preroll_ms: u64,
    /// Audio kept after the last voiced frame.
    pub tail_ms: u64,
    /// Utterances with less voiced audio are not decoded (Whisper invents text for them).
    pub min_voiced_ms: u64,
    /// An utterance this long is cut (finalised) and a new one starts.
    pub max_utterance_ms: u64,
    /// An utterance at least this long is finalised at the next pause (200 ms+)
    /// instead of waiting for the endpoint: long turns get finals sentence by
    /// sentence, and re-decoding stays cheap.
    pub soft_cut_ms: u64,
    pub vad: VadSettings,
}

impl PolicySettings {
    /// Settings with the given step and endpoint silence (20 ms VAD frames).
    pub fn with_step_and_endpoint(step_ms: u64, endpoint_ms: u64) -> Self {
        let d = Self::default();
        Self { step_ms, vad: VadSettings { hangover_frames: (endpoint_ms / 20) as u32, ..d.vad }, ..d }
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            step_ms: 1000,
            preroll_ms: 200,
            tail_ms: 150,
            min_voiced_ms: 500,
            max_utterance_ms: 15_000,
            soft_cut_ms: 4_000,
            // 20 frames of hangover = the 400 ms endpoint.
            vad: VadSettings { hangover_frames: 20, ..VadSettings::default() },
        }
    }
}

/// Decode samples `[start, end)` (offsets into the channel) for `utterance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeRequest {
    pub utterance: u64,
    pub start: u64,
    pub end: u64,
    pub is_final: bool,
    /// An early final: issued as soon as the speaker paused for the tail, before the
    /// endpoint silence confirms the utterance is over. Its result becomes the final if
    /// the endpoint comes with no new speech (so the decode time hides inside the
    /// endpoint wait); otherwise it serves as a partial.
    pub early: bool,
    /// Whether the decoder may retry a failed decode at higher temperatures (finals at
    /// normal load only: a retry costs a whole decode).
    pub retry: bool,
    /// Recent final text of this channel, as the decoder's prompt.
    pub prompt: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptUpdate {
    Partial {
        utterance: u64,
        stable: String,
        unstable: String,
        start_ms: u64,
        end_ms: u64,
    },
    Final {
        utterance: u64,
        text: String,
        start_ms: u64,
        end_ms: u64,
    },
    /// Speech that was not transcribed: the pool was overloaded and this audio was shed.
    /// Sent as a `transcript.final` with empty text and `untranscribed` set.
    Gap {
        utterance: u64,
        start_ms: u64,
        end_ms: u64,
    },
}

/// How far the pool is behind, as steps of degradation (see `asr::overload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Degrade {
    #[default]
    Normal = 0,
    /// Partials at twice the step.
    LongStep = 1,
    /// Finals only.
    FinalsOnly = 2,
    /// Finals only, and audio too far behind is dropped unheard.
    Shed = 3,
}

impl TranscriptUpdate {
    /// The event payload for channel `role`; utterance ids read `<channel>-<n>`.
    pub fn to_payload(&self, role: Role) -> TranscriptPayload {
        let channel = match role {
            Role::Rep => "rep",
            Role::Customer => "customer",
            Role::Other => "other",
        };
        match self {
            TranscriptUpdate::Partial { utterance, stable, unstable, start_ms, end_ms } => TranscriptPayload {
                channel: role,
                utterance_id: format!("{channel}-{utterance}"),
                text: format!("{stable} {unstable}").trim().to_string(),
                stable: stable.clone(),
                unstable: unstable.clone(),
                start_ms: *start_ms,
                end_ms: *end_ms,
                untranscribed: None,
            },
            TranscriptUpdate::Final { utterance, text, start_ms, end_ms } => TranscriptPayload {
                channel: role,
                utterance_id: format!("{channel}-{utterance}"),
                text: text.clone(),
                stable: text.clone(),
                unstable: String::new(),
                start_ms: *start_ms,
                end_ms: *end_ms,
                untranscribed: None,
            },
            TranscriptUpdate::Gap { utterance, start_ms, end_ms } => TranscriptPayload {
                channel: role,
                utterance_id: format!("{channel}-{utterance}"),
                text: String::new(),
                stable: String::new(),
                unstable: String::new(),
                start_ms: *start_ms,
                end_ms: *end_ms,
                untranscribed: Some("asr_overload".into()),
            },
        }
    }

    /// As an event body (`transcript.partial` / `transcript.final`).
    pub fn to_event(&self, role: Role) -> EventBody {
        match self {
            TranscriptUpdate::Partial { .. } => EventBody::TranscriptPartial(self.to_payload(role)),
            TranscriptUpdate::Final { .. } | TranscriptUpdate::Gap { .. } => {
                EventBody::TranscriptFinal(self.to_payload(role))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Utterance {
    id: u64,
    /// First sample to decode (speech start minus preroll).
    start: u64,
    /// Where the VAD saw speech begin.
    speech_start: u64,
    last_decode_end: u64,
    /// End of the early final issued for the current pause, if any.
    early_end: Option<u64>,
}

/// An early final's result, kept until the endpoint decides.
#[derive(Debug, Clone)]
struct EarlyResult {
    utterance: u64,
    end: u64,
    text: String,
}

pub struct StreamPolicy {
    s: PolicySettings,
    vad: Vad,
    la: LocalAgreement,
    seen: u64,
    next_id: u64,
    current: Option<Utterance>,
    in_flight: bool,
    /// End of the audio the in-flight decode covers.
    in_flight_end: u64,
    /// (utterance, end) when the decode in flight is an early final.
    in_flight_early: Option<(u64, u64)>,
    /// A final that waits for the in-flight decode to come back.
    queued: Vec<DecodeRequest>,
    context: String,
    events: Vec<VadEvent>,
    degrade: Degrade,
    /// The early final's result for the current pause.
    early_text: Option<EarlyResult>,
    /// Early finals (utterance, start, end) the endpoint (or a soft cut) has confirmed
    /// while they were queued or in flight: their results are the finals. More than one
    /// can wait: a soft-cut utterance's decode may still run when the next short
    /// utterance ends.
    early_confirmed: Vec<(u64, u64, u64)>,
    /// Updates produced while feeding audio (an early final confirmed by the endpoint).
    ready: Vec<TranscriptUpdate>,
    /// After a soft cut, the speaker is still "speaking" to the VAD: a new utterance
    /// starts at the first voiced frame after this sample.
    resume_after: Option<u64>,
    /// Voice-activity edges seen while feeding audio: (speech starts?, ms).
    voice: Vec<(bool, u64)>,
}

impl StreamPolicy {
    pub fn new(s: PolicySettings) -> Self {
        Self {
            vad: Vad::new(s.vad),
            s,
            la: LocalAgreement::new(),
            seen: 0,
            next_id: 1,
            current: None,
            in_flight: false,
            in_flight_end: 0,
            in_flight_early: None,
            queued: Vec::new(),
            context: String::new(),
            events: Vec::new(),
            degrade: Degrade::Normal,
            early_text: None,
            early_confirmed: Vec::new(),
            ready: Vec::new(),
            resume_after: None,
            voice: Vec::new(),
        }
    }

    /// Voice-activity edges since the last call: (true = speech starts, ms into the
    /// channel). Speech ends at its last voiced frame (the endpoint hangover excluded).
    pub fn take_voice(&mut self) -> Vec<(bool, u64)> {
        std::mem::take(&mut self.voice)
    }

    /// Transcript updates that feeding audio produced (call after `push_audio`).
    pub fn take_updates(&mut self) -> Vec<TranscriptUpdate> {
        std::mem::take(&mut self.ready)
    }

    /// The pool's load level, set by the scheduler.
    pub fn set_degrade(&mut self, d: Degrade) {
        self.degrade = d;
    }

    /// How far behind the live audio this channel's oldest pending decode is (samples):
    /// 0 when nothing waits.
    pub fn backlog_lag(&self) -> u64 {
        let queued = self.queued.iter().map(|r| r.end).min();
        let flying = self.in_flight.then_some(self.in_flight_end);
        match queued.into_iter().chain(flying).min() {
            Some(end) => self.seen.saturating_sub(end),
            None => 0,
        }
    }

    /// A final waits while a decode is in flight (a running partial is then worth
    /// stopping: its result would be dropped anyway).
    pub fn final_waiting(&self) -> bool {
        self.in_flight && self.queued.iter().any(|q| q.is_final)
    }

    /// An early final the endpoint has not (yet) confirmed: droppable like a partial.
    pub fn is_speculative(&self, req: &DecodeRequest) -> bool {
        req.early && !self.is_confirmed(req)
    }

    /// Drops queued (not yet started) finals whose audio ended more than `max_lag`
    /// samples ago; returns them as gaps to mark. Never touches the decode in flight.
    pub fn shed(&mut self, max_lag: u64) -> Vec<TranscriptUpdate> {
        let horizon = self.seen.saturating_sub(max_lag);
        let mut gaps = Vec::new();
        let queued = std::mem::take(&mut self.queued);
        for r in queued {
            if !(r.is_final && r.end < horizon) {
                self.queued.push(r);
            } else if !self.is_speculative(&r) {
                if r.early {
                    self.unconfirm(&r);
                }
                gaps.push(Self::gap_for(&r));
            }
        }
        gaps
    }

    /// Samples seen so far (the channel's clock).
    pub fn position(&self) -> u64 {
        self.seen
    }

    /// Oldest sample a future decode may still need: callers may drop audio before it.
    pub fn keep_from(&self) -> u64 {
        let pending = self.queued.iter().map(|r| r.start).min().unwrap_or(u64::MAX);
        let current = self.current.map_or(u64::MAX, |u| u.start);
        pending.min(current).min(self.seen.saturating_sub(self.s.preroll_ms * RATE / 1000))
    }

    fn ms(samples: u64) -> u64 {
        samples * 1000 / RATE
    }

    /// Feeds audio; returns decode requests to run (at most one in flight at a time).
    pub fn push_audio(&mut self, samples: &[f32]) -> Vec<DecodeRequest> {
        self.events.clear();
        let mut events = std::mem::take(&mut self.events);
        self.vad.push(samples, &mut events);
        self.seen += samples.len() as u64;
        let mut out = Vec::new();
        for e in events.drain(..) {
            match e {
                VadEvent::SpeechStart { frame } => {
                    self.voice.push((true, frame * 20));
                    self.begin(frame * FRAME as u64);
                }
                VadEvent::SpeechEnd { frame } => {
                    self.voice.push((false, (frame + 1) * 20));
                    self.resume_after = None;
                    let last_voiced = (frame + 1) * FRAME as u64;
                    let end = (last_voiced + self.s.tail_ms * RATE / 1000).min(self.seen);
                    if let Some(u) = self.current.take() {
                        self.finalise(u, last_voiced, end, &mut out);
                    }
                }
            }
        }
        self.events = events;
        if let (None, Some(after), Some((last_voiced, 0))) =
            (self.current, self.resume_after, self.vad.trailing_silence())
        {
            let at = last_voiced * FRAME as u64;
            if at >= after {
                self.resume_after = None;
                self.begin(at);
            }
        }
        self.maybe_early(&mut out);
        if let Some(mut u) = self.current {
            if self.seen - u.start >= self.s.max_utterance_ms * RATE / 1000 {
                // Too long: cut here and go on with a fresh utterance.
                self.current = None;
                let cut = self.seen;
                self.finalise(u, cut, cut, &mut out);
                self.begin(cut);
            } else if self.degrade < Degrade::FinalsOnly
                && self.seen - u.last_decode_end >= self.step_samples()
                && self.seen - u.speech_start >= self.s.min_voiced_ms * RATE / 1000
                && !self.in_flight
            {
                u.last_decode_end = self.seen;
                self.current = Some(u);
                out.push(DecodeRequest {
                    utterance: u.id,
                    start: u.start,
                    end: self.seen,
                    is_final: false,
                    early: false,
                    retry: false,
                    prompt: self.context.clone(),
                });
            } else {
                self.current = Some(u);
            }
        }
        self.release(out)
    }

    /// The speaker has paused for the tail: everything the final would decode is here,
    /// so decode it now (once per pause).
    fn maybe_early(&mut self, out: &mut Vec<DecodeRequest>) {
        let (Some(mut u), Some((last_voiced, silent))) = (self.current, self.vad.trailing_silence()) else { return };
        if self.degrade >= Degrade::LongStep {
            return; // under load, only the endpoint's final (one decode per utterance)
        }
        let tail = self.s.tail_ms * RATE / 1000;
        let end = (last_voiced + 1) * FRAME as u64 + tail;
        // A pause of at least the tail and 200 ms: shorter gaps between words are common.
        let pause = tail.max(200 * RATE / 1000);
        if silent as u64 * FRAME as u64 >= pause
            && end <= self.seen
            && u.early_end != Some(end)
            && Self::ms(end - tail - u.speech_start) >= self.s.min_voiced_ms
        {
            u.early_end = Some(end);
            u.last_decode_end = end;
            self.current = Some(u);
            // A newer pause supersedes a queued early final of this utterance.
            self.queued.retain(|q| !(q.early && q.utterance == u.id));
            out.push(DecodeRequest {
                utterance: u.id,
                start: u.start,
                end,
                is_final: true,
                early: true,
                retry: true,
                prompt: self.context.clone(),
            });
            if Self::ms(end - u.start) >= self.s.soft_cut_ms {
                // Long enough: this pause ends the utterance.
                self.early_confirmed.push((u.id, u.start, end));
                self.current = None;
                self.resume_after = Some(end);
            }
        }
    }

    fn step_samples(&self) -> u64 {
        let factor = if self.degrade >= Degrade::LongStep { 2 } else { 1 };
        self.s.step_ms * factor * RATE / 1000
    }

    /// End of the channel: finalise whatever is open.
    pub fn flush(&mut self) -> Vec<DecodeRequest> {
        let mut out = Vec::new();
        if let Some(u) = self.current.take() {
            let end = self.seen;
            self.finalise(u, end, end, &mut out);
        }
        self.release(out)
    }

    fn begin(&mut self, speech_start: u64) {
        self.resume_after = None;
        let start = speech_start.saturating_sub(self.s.preroll_ms * RATE / 1000);
        self.current =
            Some(Utterance { id: self.next_id, start, speech_start, last_decode_end: start, early_end: None });
        self.early_text = None;
        self.next_id += 1;
        self.la = LocalAgreement::new();
    }

    fn finalise(&mut self, u: Utterance, last_voiced: u64, end: u64, out: &mut Vec<DecodeRequest>) {
        // Too little speech for Whisper to transcribe reliably: it would invent text.
        if Self::ms(last_voiced.saturating_sub(u.speech_start)) < self.s.min_voiced_ms {
            self.queued.retain(|q| !(q.early && q.utterance == u.id));
            return;
        }
        if u.early_end == Some(end) {
            // The early final covered exactly this audio: use it.
            if let Some(r) = self.early_text.take().filter(|r| r.utterance == u.id && r.end == end) {
                if let Some(f) = self.final_update(u.id, u.start, end, &r.text) {
                    self.ready.push(f);
                }
                return;
            }
            let queued = self.queued.iter().any(|q| q.early && q.utterance == u.id && q.end == end);
            if queued || self.in_flight_is_early(u.id, end) {
                // Queued or in flight: its result becomes the final when it comes.
                self.early_confirmed.push((u.id, u.start, end));
                return;
            }
        }
        self.queued.retain(|q| !(q.early && q.utterance == u.id));
        out.push(DecodeRequest {
            utterance: u.id,
            start: u.start,
            end,
            is_final: true,
            early: false,
            retry: self.degrade == Degrade::Normal,
            prompt: self.context.clone(),
        });
    }

    fn is_confirmed(&self, req: &DecodeRequest) -> bool {
        self.early_confirmed.iter().any(|&(u, _, e)| u == req.utterance && e == req.end)
    }

    /// Removes and returns the confirmation of early final `req`, if any.
    fn unconfirm(&mut self, req: &DecodeRequest) -> Option<(u64, u64, u64)> {
        let i = self.early_confirmed.iter().position(|&(u, _, e)| u == req.utterance && e == req.end)?;
        Some(self.early_confirmed.remove(i))
    }

    fn in_flight_is_early(&self, utterance: u64, end: u64) -> bool {
        self.in_flight && self.in_flight_early == Some((utterance, end))
    }

    /// The final for `text` (None when nothing survives the guards); updates the prompt.
    fn final_update(&mut self, utterance: u64, start: u64, end: u64, text: &str) -> Option<TranscriptUpdate> {
        let words = self.la.finish(text);
        if self.current.map(|u| u.id) == Some(utterance) {
            self.la = LocalAgreement::new();
        }
        if words.is_empty() {
            return None;
        }
        let text = words.join(" ");
        self.context.push(' ');
        self.context.push_str(&text);
        let cut = self.context.len().saturating_sub(200);
        let cut = (cut..self.context.len()).find(|&i| self.context.is_char_boundary(i)).unwrap_or(0);
        self.context = self.context[cut..].to_string();
        Some(TranscriptUpdate::Final { utterance, text, start_ms: Self::ms(start), end_ms: Self::ms(end) })
    }

    /// Finals always go out; a partial only when nothing is in flight.
    fn release(&mut self, mut out: Vec<DecodeRequest>) -> Vec<DecodeRequest> {
        self.queued.append(&mut out);
        let mut ready = Vec::new();
        if !self.in_flight {
            if let Some(i) =
                self.queued.iter().position(|r| r.is_final).or(if self.queued.is_empty() { None } else { Some(0) })
            {
                let r = self.queued.remove(i);
                // A partial superseded by a queued final of the same utterance is dropped.
                self.queued.retain(|q| q.is_final || q.utterance != r.utterance);
                self.in_flight_end = r.end;
                self.in_flight_early = r.early.then_some((r.utterance, r.end));
                ready.push(r);
                self.in_flight = true;
            }
        }
        ready
    }

    fn partial_update(
        &mut self,
        req: &DecodeRequest,
        text: &str,
        start_ms: u64,
        end_ms: u64,
    ) -> Option<TranscriptUpdate> {
        let a = self.la.update(text);
        (!a.stable.is_empty() || !a.unstable.is_empty()).then(|| TranscriptUpdate::Partial {
            utterance: req.utterance,
            stable: a.stable.join(" "),
            unstable: a.unstable.join(" "),
            start_ms,
            end_ms,
        })
    }

    /// A request handed out was dropped before it ran (the pool shed it): the channel
    /// may go on with its next request.
    pub fn cancel(&mut self, req: &DecodeRequest) -> Vec<DecodeRequest> {
        self.in_flight = false;
        self.in_flight_early = None;
        if req.early {
            // The final it would have been is gone with it.
            self.unconfirm(req);
        }
        self.release(Vec::new())
    }

    /// Samples `[start, end)` this channel has requested and not had decoded
    /// (for marking what a cancelled final leaves untranscribed).
    pub fn gap_for(req: &DecodeRequest) -> TranscriptUpdate {
        TranscriptUpdate::Gap { utterance: req.utterance, start_ms: Self::ms(req.start), end_ms: Self::ms(req.end) }
    }

    /// Takes a decode result; returns the transcript update and any next request.
    pub fn on_result(&mut self, req: &DecodeRequest, text: &str) -> (Option<TranscriptUpdate>, Vec<DecodeRequest>) {
        self.in_flight = false;
        self.in_flight_early = None;
        let text = crate::asr::guard::clean(text);
        let (start_ms, end_ms) = (Self::ms(req.start), Self::ms(req.end));
        let update = if req.early {
            if let Some((u, start, end)) = self.unconfirm(req) {
                self.final_update(u, start, end, &text)
            } else if self.current.is_some_and(|u| u.id == req.utterance && u.early_end == Some(req.end)) {
                // The endpoint has not come yet: keep it, and show it as a partial.
                self.early_text = Some(EarlyResult { utterance: req.utterance, end: req.end, text: text.clone() });
                self.partial_update(req, &text, start_ms, end_ms)
            } else if self.current.map(|u| u.id) == Some(req.utterance) {
                self.partial_update(req, &text, start_ms, end_ms)
            } else {
                None
            }
        } else if req.is_final {
            self.final_update(req.utterance, req.start, req.end, &text)
        } else if self.current.map(|u| u.id) == Some(req.utterance) {
            self.partial_update(req, &text, start_ms, end_ms)
        } else {
            None // a partial for an utterance that has since ended
        };
        let next = self.release(Vec::new());
        (update, next)
    }
}

#[cfg(test)]
mod tests;
