//! Per-track reorder buffer: puts frames back in sequence order within a small window
//! and turns frames that never arrive into explicit gaps, so a track stays time-aligned.
//!
//! Pure: no clock, no IO. The window is counted in frames; a missing frame is given up
//! as soon as `window` later frames are waiting behind it (or when the track ends).
//! The RTP jitter buffer reuses it with unwrapped sequence numbers.

use std::collections::BTreeMap;

/// One frame of a track as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<T> {
    /// Monotonic sequence number (already unwrapped by the caller).
    pub seq: u64,
    pub samples: Vec<T>,
}

/// What the buffer releases, always contiguous in sample position.
#[derive(Debug, Clone, PartialEq)]
pub enum Released<T> {
    Audio {
        pos: u64,
        samples: Vec<T>,
    },
    /// `len` samples that never arrived; the caller fills them with silence.
    Gap {
        pos: u64,
        len: u64,
        frames: u64,
    },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReorderStats {
    /// Frames that arrived after a frame with a higher sequence number.
    pub reordered: u64,
    /// Frames given up as missing (filled with silence).
    pub gap_frames: u64,
    pub gap_samples: u64,
    /// Frames that arrived after their slot was already filled with silence.
    pub late: u64,
    pub duplicate: u64,
}

#[derive(Debug)]
pub struct ReorderBuffer<T> {
    window: usize,
    max_gap_samples: u64,
    next_seq: Option<u64>,
    next_pos: u64,
    highest_seen: Option<u64>,
    last_frame_len: u64,
    pending: BTreeMap<u64, Vec<T>>,
    leading_gap: u64,
    stats: ReorderStats,
}

impl<T> ReorderBuffer<T> {
    /// `first_seq`: the sequence number the track is known to start at (Twilio chunks
    /// start at 1), so that an early frame that arrives second is still put first.
    /// `frame_len_hint`: samples per frame until one is seen (gap sizing).
    pub fn new(window: usize, first_seq: Option<u64>, frame_len_hint: u64, max_gap_samples: u64) -> Self {
        Self {
            window: window.max(1),
            max_gap_samples,
            next_seq: first_seq,
            next_pos: 0,
            highest_seen: None,
            last_frame_len: frame_len_hint.max(1),
            pending: BTreeMap::new(),
            leading_gap: 0,
            stats: ReorderStats::default(),
        }
    }

    /// Silence to insert before the first frame (e.g. a track that starts later than
    /// its sibling, from its timestamp). Only effective before anything was released.
    pub fn set_leading_gap(&mut self, samples: u64) {
        if self.next_pos == 0 {
            self.leading_gap = samples.min(self.max_gap_samples);
        }
    }

    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    pub fn pending_frames(&self) -> usize {
        self.pending.len()
    }

    /// Position (in samples) of the next sample to be released.
    pub fn next_pos(&self) -> u64 {
        self.next_pos
    }

    pub fn push(&mut self, frame: Frame<T>) {
        if let Some(next) = self.next_seq {
            if frame.seq < next {
                self.stats.late += 1;
                return;
            }
        }
        if self.pending.contains_key(&frame.seq) {
            self.stats.duplicate += 1;
            return;
        }
        match self.highest_seen {
            Some(h) if frame.seq < h => self.stats.reordered += 1,
            Some(h) if frame.seq == h => {
                self.stats.duplicate += 1;
                return;
            }
            _ => self.highest_seen = Some(frame.seq),
        }
        self.pending.insert(frame.seq, frame.samples);
    }

    /// Next contiguous piece, or `None` while waiting for a missing frame within the window.
    pub fn pop(&mut self) -> Option<Released<T>> {
        self.pop_inner(false)
    }

    /// Like `pop`, but never waits: used when the track has ended.
    pub fn pop_flush(&mut self) -> Option<Released<T>> {
        self.pop_inner(true)
    }

    fn pop_inner(&mut self, flushing: bool) -> Option<Released<T>> {
        if self.leading_gap > 0 && !self.pending.is_empty() {
            let len = self.leading_gap;
            self.leading_gap = 0;
            let pos = self.next_pos;
            self.next_pos += len;
            return Some(Released::Gap { pos, len, frames: 0 });
        }
        let (&seq, _) = self.pending.first_key_value()?;
        let expected = *self.next_seq.get_or_insert(seq);
        if seq == expected {
            let samples = self.pending.remove(&seq).expect("first key exists");
            let pos = self.next_pos;
            self.last_frame_len = (samples.len() as u64).max(1);
            self.next_pos += samples.len() as u64;
            self.next_seq = Some(seq + 1);
            return Some(Released::Audio { pos, samples });
        }
        if !flushing && self.pending.len() <= self.window {
            return None;
        }
        // Give up on the missing frames [expected, seq).
        let missing = seq - expected;
        let len = missing.saturating_mul(self.last_frame_len).min(self.max_gap_samples);
        let pos = self.next_pos;
        self.next_pos += len;
        self.next_seq = Some(seq);
        self.stats.gap_frames += missing;
        self.stats.gap_samples += len;
        Some(Released::Gap { pos, len, frames: missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(seq: u64) -> Frame<u8> {
        Frame { seq, samples: vec![seq as u8; 4] }
    }

    fn drain(b: &mut ReorderBuffer<u8>) -> Vec<Released<u8>> {
        std::iter::from_fn(|| b.pop()).collect()
    }

    #[test]
    fn in_order_frames_pass_straight_through() {
        let mut b = ReorderBuffer::new(3, Some(1), 4, 1000);
        b.push(f(1));
        b.push(f(2));
        let out = drain(&mut b);
        assert_eq!(
            out,
            vec![Released::Audio { pos: 0, samples: vec![1; 4] }, Released::Audio { pos: 4, samples: vec![2; 4] },]
        );
        assert_eq!(b.stats(), ReorderStats::default());
    }

    #[test]
    fn late_packet_within_window_is_reordered() {
        let mut b = ReorderBuffer::new(3, Some(1), 4, 1000);
        b.push(f(2));
        assert!(drain(&mut b).is_empty(), "waits for frame 1");
        b.push(f(1));
        let out = drain(&mut b);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Released::Audio { pos: 0, samples: vec![1; 4] });
        assert_eq!(b.stats().reordered, 1);
    }

    #[test]
    fn missing_frame_becomes_a_gap_once_window_is_exceeded() {
        let mut b = ReorderBuffer::new(2, Some(1), 4, 1000);
        b.push(f(1));
        assert_eq!(drain(&mut b).len(), 1);
        for s in 3..=5 {
            b.push(f(s));
        }
        let out = drain(&mut b);
        assert_eq!(out[0], Released::Gap { pos: 4, len: 4, frames: 1 });
        assert_eq!(out[1], Released::Audio { pos: 8, samples: vec![3; 4] });
        assert_eq!(out.len(), 4);
        assert_eq!(b.stats().gap_frames, 1);
        // Frame 2 finally shows up: too late, dropped and counted.
        b.push(f(2));
        assert_eq!(b.stats().late, 1);
        assert!(drain(&mut b).is_empty());
    }

    #[test]
    fn flush_releases_everything_with_gaps() {
        let mut b = ReorderBuffer::new(10, Some(1), 4, 1000);
        b.push(f(1));
        b.push(f(4));
        let out: Vec<_> = std::iter::from_fn(|| b.pop_flush()).collect();
        assert_eq!(
            out,
            vec![
                Released::Audio { pos: 0, samples: vec![1; 4] },
                Released::Gap { pos: 4, len: 8, frames: 2 },
                Released::Audio { pos: 12, samples: vec![4; 4] },
            ]
        );
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut b = ReorderBuffer::new(3, Some(1), 4, 1000);
        b.push(f(1));
        b.push(f(1));
        drain(&mut b);
        b.push(f(1));
        assert_eq!(b.stats().duplicate, 1);
        assert_eq!(b.stats().late, 1);
    }

    #[test]
    fn huge_sequence_jump_is_capped() {
        let mut b = ReorderBuffer::new(0, Some(1), 160, 8000);
        b.push(f(1));
        b.push(f(1_000_000_000));
        let out: Vec<_> = std::iter::from_fn(|| b.pop_flush()).collect();
        assert!(matches!(out[1], Released::Gap { len: 8000, .. }));
    }

    #[test]
    fn leading_gap_is_released_first() {
        let mut b = ReorderBuffer::new(3, Some(1), 4, 100);
        b.set_leading_gap(8);
        b.push(f(1));
        let out = drain(&mut b);
        assert_eq!(out[0], Released::Gap { pos: 0, len: 8, frames: 0 });
        assert_eq!(out[1], Released::Audio { pos: 8, samples: vec![1; 4] });
    }

    #[test]
    fn shuffled_stream_comes_out_whole_and_ordered() {
        // Deterministic shuffle within a window of 4.
        let mut order: Vec<u64> = (1..=200).collect();
        for chunk in order.chunks_mut(4) {
            chunk.reverse();
        }
        let mut b = ReorderBuffer::new(5, Some(1), 4, 1000);
        let mut out = Vec::new();
        for s in order {
            b.push(f(s));
            out.extend(std::iter::from_fn(|| b.pop()));
        }
        out.extend(std::iter::from_fn(|| b.pop_flush()));
        let seqs: Vec<u8> = out
            .iter()
            .map(|r| match r {
                Released::Audio { samples, .. } => samples[0],
                Released::Gap { .. } => panic!("no gap expected"),
            })
            .collect();
        assert_eq!(seqs, (1..=200u64).map(|s| s as u8).collect::<Vec<_>>());
        assert_eq!(b.stats().gap_frames, 0);
    }
}
