//! Voice-activity detection on 16 kHz audio: frame energy against a noise floor taken
//! as the minimum frame level over the last two seconds (minimum statistics), with onset
//! confirmation and a hangover. Steady line noise and hum *are* the floor, so they are
//! never speech; speech has dips between syllables that keep its floor low. Pure and
//! deterministic: samples in, per-frame decisions out.

use std::collections::VecDeque;

/// Frames over which the minimum level is taken (2 s).
const FLOOR_WINDOW: usize = 100;

/// 20 ms at 16 kHz.
pub const FRAME: usize = 320;

#[derive(Debug, Clone, Copy)]
pub struct VadSettings {
    /// dB above the noise floor a frame must be to count as voiced.
    pub margin_db: f32,
    /// Absolute floor: quieter frames are never speech (dBFS).
    pub min_level_db: f32,
    /// Consecutive voiced frames needed to start speech.
    pub onset_frames: u32,
    /// Unvoiced frames tolerated inside speech before it ends.
    pub hangover_frames: u32,
}

impl Default for VadSettings {
    fn default() -> Self {
        Self { margin_db: 10.0, min_level_db: -50.0, onset_frames: 3, hangover_frames: 10 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech started at this frame index (the onset frames are included).
    SpeechStart { frame: u64 },
    /// Speech ended after this frame index (last voiced frame).
    SpeechEnd { frame: u64 },
}

#[derive(Debug, Clone)]
pub struct Vad {
    s: VadSettings,
    floor_db: f32,
    recent: VecDeque<f32>,
    frames: u64,
    pending: Vec<f32>,
    run: u32,
    silent: u32,
    speaking: bool,
    last_voiced: u64,
}

fn level_db(frame: &[f32]) -> f32 {
    let e = frame.iter().map(|x| x * x).sum::<f32>() / frame.len() as f32;
    10.0 * (e + 1e-12).log10()
}

impl Vad {
    pub fn new(s: VadSettings) -> Self {
        Self {
            s,
            floor_db: 0.0,
            recent: VecDeque::with_capacity(FLOOR_WINDOW),
            frames: 0,
            pending: Vec::new(),
            run: 0,
            silent: 0,
            speaking: false,
            last_voiced: 0,
        }
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    pub fn noise_floor_db(&self) -> f32 {
        self.floor_db
    }

    /// While speaking: the last voiced frame and how many silent frames followed it.
    pub fn trailing_silence(&self) -> Option<(u64, u32)> {
        self.speaking.then_some((self.last_voiced, self.silent))
    }

    /// Frames processed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Feeds samples; appends events to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<VadEvent>) {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / FRAME * FRAME;
        let frames: Vec<f32> = self.pending.drain(..whole).collect();
        for frame in frames.chunks_exact(FRAME) {
            self.frame(level_db(frame), out);
        }
    }

    fn frame(&mut self, db: f32, out: &mut Vec<VadEvent>) {
        let idx = self.frames;
        self.frames += 1;
        if self.recent.len() == FLOOR_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(db);
        self.floor_db = self.recent.iter().copied().fold(f32::INFINITY, f32::min);
        let voiced = db > self.floor_db + self.s.margin_db && db > self.s.min_level_db;
        if voiced {
            self.run += 1;
            self.silent = 0;
            self.last_voiced = idx;
            if !self.speaking && self.run >= self.s.onset_frames {
                self.speaking = true;
                out.push(VadEvent::SpeechStart { frame: idx + 1 - self.run as u64 });
            }
        } else {
            self.run = 0;
            if self.speaking {
                self.silent += 1;
                if self.silent > self.s.hangover_frames {
                    self.speaking = false;
                    out.push(VadEvent::SpeechEnd { frame: self.last_voiced });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn run(samples: &[f32]) -> Vec<VadEvent> {
        let mut v = Vad::new(VadSettings::default());
        let mut out = vec![];
        for c in samples.chunks(160) {
            v.push(c, &mut out);
        }
        out
    }

    /// Syllable-like bursts: 200 Hz voiced tone modulated at 4 Hz.
    fn pseudo_speech(secs: f32, amp: f32) -> Vec<f32> {
        (0..(secs * 16000.0) as usize)
            .map(|i| {
                let t = i as f32 / 16000.0;
                let env = (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin()).max(0.2);
                amp * env * (2.0 * std::f32::consts::PI * 200.0 * t).sin()
            })
            .collect()
    }

    #[test]
    fn silence_is_never_speech() {
        assert!(run(&vec![0.0; 16000 * 5]).is_empty());
    }

    #[test]
    fn steady_white_noise_and_hum_are_not_speech() {
        let mut seed = 42;
        let noise: Vec<f32> = (0..16000 * 6).map(|_| 0.05 * rng(&mut seed)).collect();
        let events = run(&noise);
        assert!(events.is_empty(), "{events:?}");
        let hum: Vec<f32> =
            (0..16000 * 6).map(|i| 0.1 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16000.0).sin()).collect();
        let events = run(&hum);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn speech_between_silences_is_found_with_its_edges() {
        let mut x = vec![0.0; 16000];
        x.extend(pseudo_speech(2.0, 0.3));
        x.extend(vec![0.0; 16000]);
        let events = run(&x);
        assert_eq!(events.len(), 2, "{events:?}");
        let VadEvent::SpeechStart { frame: s } = events[0] else { panic!() };
        let VadEvent::SpeechEnd { frame: e } = events[1] else { panic!() };
        assert!(s.abs_diff(50) <= 3, "start frame {s}");
        assert!(e.abs_diff(149) <= 5, "end frame {e}");
    }

    #[test]
    fn speech_over_line_noise_is_still_found() {
        let mut seed = 7;
        let mut x: Vec<f32> = (0..16000 * 2).map(|_| 0.01 * rng(&mut seed)).collect();
        let sp = pseudo_speech(2.0, 0.3);
        x.extend(sp.iter().map(|s| s + 0.01 * rng(&mut seed)));
        x.extend((0..16000).map(|_| 0.01 * rng(&mut seed)));
        let events = run(&x);
        let starts: Vec<_> = events.iter().filter(|e| matches!(e, VadEvent::SpeechStart { .. })).collect();
        assert_eq!(starts.len(), 1, "{events:?}");
        let VadEvent::SpeechStart { frame } = starts[0] else { panic!() };
        assert!(frame.abs_diff(100) <= 3, "{frame}");
    }

    fn jfk() -> Vec<f32> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jfk.wav");
        hound::WavReader::open(path).unwrap().into_samples::<i16>().map(|s| s.unwrap() as f32 / 32768.0).collect()
    }

    fn segments(events: &[VadEvent]) -> Vec<(f32, f32)> {
        let mut out = vec![];
        let mut start = None;
        for e in events {
            match *e {
                VadEvent::SpeechStart { frame } => start = Some(frame),
                VadEvent::SpeechEnd { frame } => {
                    out.push((start.take().unwrap() as f32 * 0.02, (frame + 1) as f32 * 0.02))
                }
            }
        }
        if let Some(s) = start {
            out.push((s as f32 * 0.02, f32::INFINITY));
        }
        out
    }

    #[test]
    fn real_speech_is_found_and_its_pauses_split_it() {
        let x = jfk();
        let segs = segments(&run(&x));
        // "And so, my fellow Americans, | ask not what your country can do for you, |
        //  ask what you can do for your country." — spoken with clear pauses.
        assert!(segs.len() >= 3, "{segs:?}");
        let voiced: f32 = segs.iter().map(|(a, b)| b.min(11.0) - a).sum();
        assert!((4.0..10.5).contains(&voiced), "voiced {voiced} s of 11 s: {segs:?}");
        assert!(segs[0].0 < 1.0, "{segs:?}");
        // The same speech over line noise at about -40 dBFS is still found.
        let mut seed = 99;
        let noisy: Vec<f32> = x.iter().map(|s| s + 0.015 * rng(&mut seed)).collect();
        let noisy_segs = segments(&run(&noisy));
        assert!(noisy_segs.len() >= 2, "{noisy_segs:?}");
        let noisy_voiced: f32 = noisy_segs.iter().map(|(a, b)| b.min(11.0) - a).sum();
        assert!(noisy_voiced > voiced * 0.6, "{noisy_segs:?} vs {segs:?}");
    }
}
