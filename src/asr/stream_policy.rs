//! Per-channel streaming policy: decides *when* to decode *which* audio, and turns
//! decode results into partials and finals. Sans-IO: 16 kHz samples and hypotheses in,
//! decode requests and transcript updates out; no clock but the sample count.
//!
//! A rolling window per channel (after whisper_streaming and SimulStreaming): while
//! someone speaks, the window — the open speech plus up to `context_ms` of finalised
//! words before it — is decoded every `step`, with the finalised text before the
//! window as the prompt. The words of each hypothesis that are new are committed by
//! time and agreement (`words`): a word the window's edge may have cut is never
//! committed. A final is issued when a sentence is over (committed words follow its
//! full stop), at a real endpoint (the VAD's silence), at a pause once the speech is
//! `soft_cut_ms` long, or at `max_utterance_ms`. Finalised audio leaves the window at
//! word boundaries, so the cost of a decode stays bounded.
//!
//! For latency, the final's decode starts as soon as the speaker pauses (an *early*
//! final): if the endpoint follows with no new speech its result is the final, and
//! otherwise it serves as a partial.

mod update;
mod words;

pub use update::{Degrade, TranscriptUpdate};

use crate::asr::hypothesis::{Hypothesis, Word};
use crate::asr::vad::{Vad, VadEvent, VadSettings, FRAME};
use words::Words;

pub const RATE: u64 = 16_000;

#[derive(Debug, Clone, Copy)]
pub struct PolicySettings {
    /// Re-decode cadence while speaking.
    pub step_ms: u64,
    /// Audio kept before the VAD's speech start (the onset of the first word).
    pub preroll_ms: u64,
    /// Audio kept after the last voiced frame.
    pub tail_ms: u64,
    /// Speech with less voiced audio is not decoded (Whisper invents text for it).
    pub min_voiced_ms: u64,
    /// Open speech this long is cut (finalised) and a new utterance starts.
    pub max_utterance_ms: u64,
    /// Open speech at least this long is finalised at the next pause (200 ms+).
    pub soft_cut_ms: u64,
    /// Finalised audio kept in the window before the open speech, for context.
    pub context_ms: u64,
    /// A word ending closer than this to the window's end is not committed.
    pub commit_guard_ms: u64,
    /// A word ending this long before the window's end is committed on one hypothesis;
    /// closer to the edge, two consecutive hypotheses must agree on it.
    pub commit_alone_ms: u64,
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
            soft_cut_ms: 6_000,
            context_ms: 4_000,
            commit_guard_ms: 400,
            commit_alone_ms: 1_000,
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
    /// Finalised text of this channel before the window, as the decoder's prompt.
    pub prompt: String,
}

#[derive(Debug, Clone, Copy)]
struct Utterance {
    id: u64,
    /// First sample of the open speech (speech start minus preroll, or where the last
    /// final cut it).
    start: u64,
    /// Where the VAD saw speech begin.
    speech_start: u64,
    last_decode_end: u64,
    /// End of the early final issued for the current pause, if any.
    early_end: Option<u64>,
}

/// A final the endpoint (or a cut) has decided on, waiting for its decode.
#[derive(Debug, Clone)]
struct Pending {
    utterance: u64,
    start: u64,
    end: u64,
    /// The words the open utterance had committed when it ended.
    committed: Vec<Word>,
}

/// An early final's result, kept until the endpoint decides.
#[derive(Debug, Clone)]
struct EarlyResult {
    utterance: u64,
    end: u64,
    words: Vec<Word>,
}

pub struct StreamPolicy {
    s: PolicySettings,
    vad: Vad,
    words: Words,
    seen: u64,
    next_id: u64,
    current: Option<Utterance>,
    in_flight: bool,
    /// End of the audio the in-flight decode covers.
    in_flight_end: u64,
    /// (utterance, end) when the decode in flight is an early final.
    in_flight_early: Option<(u64, u64)>,
    queued: Vec<DecodeRequest>,
    events: Vec<VadEvent>,
    degrade: Degrade,
    /// The early final's result for the current pause.
    early_text: Option<EarlyResult>,
    /// Finals decided on whose decode is queued or in flight (early ones included).
    pending: Vec<Pending>,
    /// Updates produced while feeding audio (an early final confirmed by the endpoint).
    ready: Vec<TranscriptUpdate>,
    /// After a soft cut, the speaker is still "speaking" to the VAD: a new utterance
    /// starts at the first voiced frame after this sample.
    resume_after: Option<u64>,
    /// Voice-activity edges not yet taken.
    voice: Vec<(bool, u64)>,
    /// Recent starts of speech (minus preroll): where windows may begin.
    onsets: std::collections::VecDeque<u64>,
}

fn ms(samples: u64) -> u64 {
    samples * 1000 / RATE
}

fn samples(ms: u64) -> u64 {
    ms * RATE / 1000
}

impl StreamPolicy {
    pub fn new(s: PolicySettings) -> Self {
        Self {
            s,
            vad: Vad::new(s.vad),
            words: Words::default(),
            seen: 0,
            next_id: 0,
            current: None,
            in_flight: false,
            in_flight_end: 0,
            in_flight_early: None,
            queued: Vec::new(),
            events: Vec::new(),
            degrade: Degrade::Normal,
            early_text: None,
            pending: Vec::new(),
            ready: Vec::new(),
            resume_after: None,
            voice: Vec::new(),
            onsets: std::collections::VecDeque::new(),
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
        req.early && !self.is_pending(req)
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
                self.drop_final(&r);
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
        let current = self.current.map_or(u64::MAX, |u| self.window_start(u.start));
        let next = self.seen.saturating_sub(samples(self.s.preroll_ms + self.s.context_ms));
        pending.min(current).min(next)
    }

    /// Where the window for open speech starting at `start` begins: at the earliest
    /// onset of speech (minus preroll) within `context_ms` before it, so the decoder
    /// hears the words around the new ones. Windows start only where the VAD heard
    /// silence: word times are too rough to cut inside speech.
    fn window_start(&self, start: u64) -> u64 {
        let from = start.saturating_sub(samples(self.s.context_ms));
        self.onsets.iter().copied().filter(|&o| o >= from && o <= start).min().unwrap_or(start)
    }

    fn request(&self, u: &Utterance, end: u64, is_final: bool, early: bool) -> DecodeRequest {
        let start = self.window_start(u.start);
        DecodeRequest { utterance: u.id, start, end, is_final, early, prompt: self.words.prompt(ms(start)) }
    }

    /// Feeds audio; returns decode requests to run (at most one in flight at a time).
    pub fn push_audio(&mut self, audio: &[f32]) -> Vec<DecodeRequest> {
        self.events.clear();
        let mut events = std::mem::take(&mut self.events);
        self.vad.push(audio, &mut events);
        self.seen += audio.len() as u64;
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
            if self.seen - u.start >= samples(self.s.max_utterance_ms) {
                // Too long: cut here and go on with a fresh utterance.
                self.current = None;
                let cut = self.seen;
                self.finalise(u, cut, cut, &mut out);
                self.begin(cut);
            } else if self.degrade < Degrade::FinalsOnly
                && self.seen - u.last_decode_end >= self.step_samples()
                && self.seen - u.speech_start >= samples(self.s.min_voiced_ms)
                && !self.in_flight
            {
                u.last_decode_end = self.seen;
                self.current = Some(u);
                out.push(self.request(&u, self.seen, false, false));
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
        let tail = samples(self.s.tail_ms);
        let end = (last_voiced + 1) * FRAME as u64 + tail;
        // A pause of at least the tail and 200 ms: shorter gaps between words are common.
        let pause = tail.max(samples(200));
        if silent as u64 * FRAME as u64 >= pause
            && end <= self.seen
            && u.early_end != Some(end)
            && ms(end - tail - u.speech_start.min(end - tail)) >= self.s.min_voiced_ms
        {
            u.early_end = Some(end);
            u.last_decode_end = end;
            self.current = Some(u);
            // A newer pause supersedes a queued early final of this utterance.
            self.queued.retain(|q| !(q.early && q.utterance == u.id));
            out.push(self.request(&u, end, true, true));
            if ms(end - u.start) >= self.s.soft_cut_ms {
                // Long enough: this pause ends the utterance.
                self.close(u, end);
                self.current = None;
                self.resume_after = Some(end);
            }
        }
    }

    fn step_samples(&self) -> u64 {
        let factor = if self.degrade >= Degrade::LongStep { 2 } else { 1 };
        samples(self.s.step_ms * factor)
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
        let start = speech_start.saturating_sub(samples(self.s.preroll_ms));
        self.onsets.push_back(start);
        let horizon = start.saturating_sub(samples(self.s.context_ms + self.s.max_utterance_ms));
        while self.onsets.front().is_some_and(|&o| o < horizon) {
            self.onsets.pop_front();
        }
        self.current =
            Some(Utterance { id: self.next_id, start, speech_start, last_decode_end: start, early_end: None });
        self.early_text = None;
        self.next_id += 1;
        self.words.unstable.clear();
    }

    /// The open utterance ends at `end`: its committed words wait for its final.
    fn close(&mut self, u: Utterance, end: u64) {
        let committed = std::mem::take(&mut self.words.committed);
        self.words.unstable.clear();
        self.pending.push(Pending { utterance: u.id, start: u.start, end, committed });
    }

    fn finalise(&mut self, u: Utterance, last_voiced: u64, end: u64, out: &mut Vec<DecodeRequest>) {
        // Too little speech for Whisper to transcribe reliably: it would invent text.
        if ms(last_voiced.saturating_sub(u.speech_start)) < self.s.min_voiced_ms && self.words.committed.is_empty() {
            self.queued.retain(|q| !(q.early && q.utterance == u.id));
            return;
        }
        if u.early_end == Some(end) {
            // The early final covered exactly this audio: use it.
            if let Some(r) = self.early_text.take().filter(|r| r.utterance == u.id && r.end == end) {
                self.close(u, end);
                self.finish(u.id, end, &r.words);
                return;
            }
            let queued = self.queued.iter().any(|q| q.early && q.utterance == u.id && q.end == end);
            if queued || self.in_flight_is_early(u.id, end) {
                // Queued or in flight: its result becomes the final when it comes.
                self.close(u, end);
                return;
            }
        }
        self.queued.retain(|q| !(q.early && q.utterance == u.id));
        let req = self.request(&u, end, true, false);
        self.close(u, end);
        out.push(req);
    }

    fn is_pending(&self, req: &DecodeRequest) -> bool {
        self.pending.iter().any(|p| p.utterance == req.utterance && p.end == req.end)
    }

    /// Removes and returns the pending final `req` decodes, if any.
    fn take_pending(&mut self, req: &DecodeRequest) -> Option<Pending> {
        let i = self.pending.iter().position(|p| p.utterance == req.utterance && p.end == req.end)?;
        Some(self.pending.remove(i))
    }

    /// A final's decode was dropped: its audio is done, untranscribed.
    fn drop_final(&mut self, req: &DecodeRequest) {
        if self.take_pending(req).is_some() {
            self.words.done_ms = self.words.done_ms.max(ms(req.end));
        }
    }

    fn in_flight_is_early(&self, utterance: u64, end: u64) -> bool {
        self.in_flight && self.in_flight_early == Some((utterance, end))
    }

    /// The final of pending utterance `utterance` from its decode's words.
    fn finish(&mut self, utterance: u64, end: u64, hyp: &[Word]) {
        let Some(i) = self.pending.iter().position(|p| p.utterance == utterance && p.end == end) else { return };
        let p = self.pending.remove(i);
        // The words committed while the utterance was open come first.
        let open = std::mem::replace(&mut self.words.committed, p.committed);
        let unstable = std::mem::take(&mut self.words.unstable);
        let words = self.words.finish(hyp, ms(p.start).saturating_sub(self.s.preroll_ms), ms(p.end));
        self.words.committed = open;
        self.words.unstable = unstable;
        if let Some(words) = words {
            let start_ms = words.first().map_or(ms(p.start), |w| w.start_ms);
            self.ready.push(TranscriptUpdate::Final { utterance, words, start_ms, end_ms: ms(p.end) });
        }
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

    /// A partial result for the open utterance: commits what it can, then issues a
    /// final for a sentence that is over.
    fn partial(&mut self, req: &DecodeRequest, hyp: &[Word]) {
        let Some(u) = self.current else { return };
        // Words of an utterance already closed (its final pending) are not this one's.
        let floor = self.pending.iter().map(|p| ms(p.end)).max().unwrap_or(0).max(ms(u.start));
        let guard = words::Guard { edge_ms: self.s.commit_guard_ms, alone_ms: self.s.commit_alone_ms };
        self.words.partial(hyp, floor.saturating_sub(self.s.preroll_ms), ms(req.end), guard);
        if self.pending.is_empty() {
            if let Some(sentence) = self.words.take_sentence() {
                let start_ms = sentence[0].start_ms;
                let end_ms = sentence.last().map_or(start_ms, |w| w.end_ms);
                self.ready.push(TranscriptUpdate::Final { utterance: u.id, words: sentence, start_ms, end_ms });
                // The rest is a new utterance, starting where the sentence ended.
                let start = samples(end_ms).max(u.start);
                self.current = Some(Utterance { id: self.next_id, start, ..u });
                self.next_id += 1;
                self.early_text = None;
            }
        }
        let u = self.current.unwrap_or(u);
        let (stable, unstable) = (self.words.committed.clone(), self.words.unstable.clone());
        if !stable.is_empty() || !unstable.is_empty() {
            let start_ms = stable.first().or(unstable.first()).map_or(ms(u.start), |w| w.start_ms);
            self.ready.push(TranscriptUpdate::Partial {
                utterance: u.id,
                stable,
                unstable,
                start_ms,
                end_ms: ms(req.end),
            });
        }
    }

    /// A request handed out was dropped before it ran (the pool shed it): the channel
    /// may go on with its next request.
    pub fn cancel(&mut self, req: &DecodeRequest) -> Vec<DecodeRequest> {
        self.in_flight = false;
        self.in_flight_early = None;
        if req.early {
            // The final it would have been is gone with it.
            self.drop_final(req);
        }
        self.release(Vec::new())
    }

    /// What a dropped final leaves untranscribed.
    pub fn gap_for(req: &DecodeRequest) -> TranscriptUpdate {
        TranscriptUpdate::Gap { utterance: req.utterance, start_ms: ms(req.start), end_ms: ms(req.end) }
    }

    /// Takes a decode result (word times relative to the request's start); returns the
    /// transcript updates and any next request.
    pub fn on_result(&mut self, req: &DecodeRequest, hyp: &Hypothesis) -> (Vec<TranscriptUpdate>, Vec<DecodeRequest>) {
        self.in_flight = false;
        self.in_flight_early = None;
        let words: Vec<Word> =
            crate::asr::guard::clean_hypothesis(hyp).iter().map(|w| w.shifted(ms(req.start))).collect();
        if req.early {
            if self.is_pending(req) {
                self.finish(req.utterance, req.end, &words);
            } else if self.current.is_some_and(|u| u.id == req.utterance && u.early_end == Some(req.end)) {
                // The endpoint has not come yet: keep it, and show it as a partial.
                self.early_text = Some(EarlyResult { utterance: req.utterance, end: req.end, words: words.clone() });
                self.partial(req, &words);
            } else if self.current.is_some() {
                self.partial(req, &words);
            }
        } else if req.is_final {
            self.finish(req.utterance, req.end, &words);
        } else {
            self.partial(req, &words);
        }
        let next = self.release(Vec::new());
        (std::mem::take(&mut self.ready), next)
    }
}

#[cfg(test)]
mod tests;
