//! Turns a Twilio stream's per-track media messages into one time-aligned, interleaved
//! µ-law (or A-law) stream: per-track reordering by `chunk`, gaps filled with silence,
//! tracks placed by their `timestamp`. Pure.

use crate::call::{Layout, SampleEncoding};
use crate::media::channel_aligner::ChannelAligner;
use crate::media::reorder_buffer::{Frame, Released, ReorderBuffer};
use crate::store::manifest::MediaStats;

use crate::ingest::twilio::protocol::Track;

/// 8 kHz: samples per millisecond of timestamp.
const SAMPLES_PER_MS: u64 = 8;
/// Twilio sends 20 ms frames.
const FRAME_SAMPLES: u64 = 160;

#[derive(Debug, Clone, Copy)]
pub struct TwilioMediaSettings {
    pub reorder_window_frames: usize,
    pub max_skew_samples: usize,
    pub max_gap_samples: u64,
}

struct TrackState {
    track: Track,
    channel: usize,
    buffer: ReorderBuffer<u8>,
    first_ts: Option<u64>,
}

pub struct TwilioMedia {
    tracks: Vec<TrackState>,
    aligner: ChannelAligner<u8>,
    base_ts: Option<u64>,
    max_skew_samples: u64,
    frames_received: u64,
}

impl TwilioMedia {
    /// `tracks` as declared in `start`; `rep` is the track that carries the rep (left).
    pub fn new(tracks: &[Track], rep: Track, encoding: SampleEncoding, s: TwilioMediaSettings) -> Self {
        let layout = Self::layout_for(tracks);
        let tracks = tracks
            .iter()
            .map(|&t| TrackState {
                track: t,
                channel: if layout == Layout::Mono || t == rep { 0 } else { 1 },
                buffer: ReorderBuffer::new(s.reorder_window_frames, Some(1), FRAME_SAMPLES, s.max_gap_samples),
                first_ts: None,
            })
            .collect();
        Self {
            tracks,
            aligner: ChannelAligner::new(layout.channels(), encoding.silence(), s.max_skew_samples),
            base_ts: None,
            max_skew_samples: s.max_skew_samples as u64,
            frames_received: 0,
        }
    }

    pub fn layout_for(tracks: &[Track]) -> Layout {
        if tracks.len() >= 2 {
            Layout::Stereo
        } else {
            Layout::Mono
        }
    }

    /// Whether `track` was declared in `start`.
    pub fn has_track(&self, track: Track) -> bool {
        self.tracks.iter().any(|t| t.track == track)
    }

    /// Takes one media frame; appends whatever became playable, interleaved, to `out`.
    /// Returns false if the track was not declared.
    pub fn push(
        &mut self,
        track: Track,
        chunk: u64,
        timestamp_ms: Option<u64>,
        payload: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(i) = self.tracks.iter().position(|t| t.track == track) else { return false };
        self.frames_received += 1;
        if let Some(ts) = timestamp_ms {
            let base = *self.base_ts.get_or_insert(ts);
            let st = &mut self.tracks[i];
            if st.first_ts.is_none() {
                st.first_ts = Some(ts);
                // A track that starts later than its sibling is placed by its timestamp.
                let lead = ts.saturating_sub(base).saturating_mul(SAMPLES_PER_MS).min(self.max_skew_samples);
                st.buffer.set_leading_gap(lead);
            }
        }
        self.tracks[i].buffer.push(Frame { seq: chunk, samples: payload });
        self.release(i, false);
        self.aligner.drain_into(out);
        true
    }

    fn release(&mut self, i: usize, flush: bool) {
        let st = &mut self.tracks[i];
        loop {
            let next = if flush { st.buffer.pop_flush() } else { st.buffer.pop() };
            match next {
                Some(Released::Audio { pos, samples }) => self.aligner.push(st.channel, pos, &samples),
                Some(Released::Gap { pos, len, .. }) => self.aligner.push_silence(st.channel, pos, len),
                None => break,
            }
        }
    }

    /// End of stream (or error): releases everything held, gaps filled, into `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        for i in 0..self.tracks.len() {
            self.release(i, true);
        }
        self.aligner.finish_into(out);
    }

    pub fn stats(&self) -> MediaStats {
        let mut s = MediaStats { frames_received: self.frames_received, ..Default::default() };
        for t in &self.tracks {
            let r = t.buffer.stats();
            s.frames_reordered += r.reordered;
            s.frames_gap_filled += r.gap_frames;
            s.samples_gap_filled += r.gap_samples;
            s.frames_dropped += r.late + r.duplicate;
        }
        s.samples_gap_filled += self.aligner.stats().skew_padded_samples;
        s
    }

    /// Frames dropped as (late, duplicate).
    pub fn drop_reasons(&self) -> (u64, u64) {
        self.tracks.iter().fold((0, 0), |(l, d), t| (l + t.buffer.stats().late, d + t.buffer.stats().duplicate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TwilioMediaSettings {
        TwilioMediaSettings { reorder_window_frames: 10, max_skew_samples: 8000, max_gap_samples: 40000 }
    }

    #[test]
    fn shuffled_two_track_stream_is_reassembled_and_aligned() {
        let mut m =
            TwilioMedia::new(&[Track::Inbound, Track::Outbound], Track::Outbound, SampleEncoding::Mulaw, settings());
        // 50 frames per track; inbound carries byte (chunk), outbound byte (100 + chunk).
        let mut msgs = vec![];
        for c in 1..=50u64 {
            msgs.push((Track::Inbound, c, c as u8));
            msgs.push((Track::Outbound, c, 100 + c as u8));
        }
        for w in msgs.chunks_mut(7) {
            w.reverse();
        }
        let mut out = vec![];
        for (t, c, b) in msgs {
            m.push(t, c, Some((c - 1) * 20), vec![b; 160], &mut out);
        }
        m.finish(&mut out);
        assert_eq!(out.len(), 50 * 160 * 2);
        for (f, pair) in out.chunks(2).enumerate() {
            let chunk = f as u64 / 160 + 1;
            // rep = outbound on the left
            assert_eq!(pair, [100 + chunk as u8, chunk as u8], "frame {f}");
        }
        let s = m.stats();
        assert_eq!(s.frames_received, 100);
        assert!(s.frames_reordered > 0);
        assert_eq!(s.frames_gap_filled, 0);
    }

    #[test]
    fn missing_frame_is_filled_and_channels_stay_aligned() {
        let mut m =
            TwilioMedia::new(&[Track::Inbound, Track::Outbound], Track::Inbound, SampleEncoding::Mulaw, settings());
        let mut out = vec![];
        for c in 1..=30u64 {
            m.push(Track::Inbound, c, Some((c - 1) * 20), vec![1; 160], &mut out);
            if c != 5 {
                m.push(Track::Outbound, c, Some((c - 1) * 20), vec![2; 160], &mut out);
            }
        }
        m.finish(&mut out);
        assert_eq!(out.len(), 30 * 160 * 2);
        let right: Vec<u8> = out.iter().skip(1).step_by(2).copied().collect();
        assert!(right[4 * 160..5 * 160].iter().all(|&b| b == 0xFF), "gap is µ-law silence");
        assert!(right[5 * 160..].iter().all(|&b| b == 2));
        assert_eq!(m.stats().frames_gap_filled, 1);
    }

    #[test]
    fn late_starting_track_is_offset_by_timestamp() {
        let mut m =
            TwilioMedia::new(&[Track::Inbound, Track::Outbound], Track::Inbound, SampleEncoding::Mulaw, settings());
        let mut out = vec![];
        for c in 1..=10u64 {
            m.push(Track::Inbound, c, Some((c - 1) * 20), vec![1; 160], &mut out);
        }
        // outbound's first frame is at 100 ms
        for c in 1..=5u64 {
            m.push(Track::Outbound, c, Some(100 + (c - 1) * 20), vec![2; 160], &mut out);
        }
        m.finish(&mut out);
        let right: Vec<u8> = out.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(right.len(), 1600);
        assert!(right[..800].iter().all(|&b| b == 0xFF));
        assert!(right[800..].iter().all(|&b| b == 2));
    }

    #[test]
    fn mono_stream_and_undeclared_track() {
        let mut m = TwilioMedia::new(&[Track::Inbound], Track::Outbound, SampleEncoding::Mulaw, settings());
        let mut out = vec![];
        assert!(m.push(Track::Inbound, 1, Some(0), vec![3; 160], &mut out));
        assert!(!m.push(Track::Outbound, 1, Some(0), vec![3; 160], &mut out));
        m.finish(&mut out);
        assert_eq!(out, vec![3; 160]);
    }
}
