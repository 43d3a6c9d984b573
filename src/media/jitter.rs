//! The RTP jitter buffer: places each packet on the call's timeline by its RTP
//! timestamp, holds it for a playout delay so late and reordered packets still
//! land in place, and releases audio in step with time — silence where packets
//! were lost, so channels stay time-aligned with the call and with each other.
//!
//! Pure: time comes in as a sample position on the call's timeline (`now`, in
//! samples at the codec clock since the call started). Handles sequence and
//! timestamp wrap, duplicates, late packets, timestamp jumps, SSRC changes and
//! marker bits; counts everything (RFC 3550 loss and interarrival jitter).

use std::collections::BTreeMap;

use crate::media::rtp::RtpHeader;

#[derive(Debug, Clone, Copy)]
pub struct JitterConfig {
    /// Playout delay in samples: how long a missing packet is waited for.
    pub delay: u32,
    /// A packet this far (samples) ahead of its arrival time is a timestamp jump.
    pub max_ahead: u32,
    /// This many late packets in a row mean the sender's clock moved: re-anchor.
    pub late_resync: u32,
    /// Most packets held (bounds memory against a flood of far-future timestamps).
    pub max_packets: usize,
}

impl JitterConfig {
    pub fn for_rate(clock_rate: u32, delay_ms: u32) -> Self {
        let per_ms = clock_rate / 1000;
        Self { delay: delay_ms * per_ms, max_ahead: 2000 * per_ms, late_resync: 8, max_packets: 500 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted (not duplicates).
    pub received: u64,
    pub duplicates: u64,
    /// Arrived after their audio had been played out (dropped).
    pub late: u64,
    /// Arrived out of sequence order but in time.
    pub reordered: u64,
    /// RFC 3550 cumulative loss: expected minus received.
    pub lost: u64,
    /// Samples of silence played for missing audio.
    pub concealed_samples: u64,
    /// Re-anchors: timestamp jumps, clock slips, SSRC changes.
    pub resyncs: u64,
    pub ssrc_changes: u64,
    /// Held packets dropped because the buffer was full.
    pub overflow: u64,
    /// RFC 3550 interarrival jitter, in samples.
    pub jitter: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    Duplicate,
    Late,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    ts: u32,
    pos: i64,
}

/// Sequence state of one SSRC (RFC 3550 A.1, simplified).
#[derive(Debug, Clone)]
struct SeqState {
    base: i64,
    max: i64,
    received: u64,
    /// Extended seq + 1 of recent packets, by seq % WINDOW (0 = empty).
    seen: Box<[i64; SEEN_WINDOW]>,
}

const SEEN_WINDOW: usize = 256;

impl SeqState {
    fn new(seq: u16) -> Self {
        Self { base: i64::from(seq), max: i64::from(seq) - 1, received: 0, seen: Box::new([0; SEEN_WINDOW]) }
    }
    fn extend(&self, seq: u16) -> i64 {
        let max = self.max.max(self.base - 1);
        max + i64::from(seq.wrapping_sub(max as u16) as i16)
    }
    fn lost(&self) -> u64 {
        let expected = (self.max - self.base + 1).max(0) as u64;
        expected.saturating_sub(self.received)
    }
}

pub struct JitterBuffer {
    cfg: JitterConfig,
    anchor: Option<Anchor>,
    pending: BTreeMap<i64, Vec<i16>>,
    out_pos: i64,
    seq: Option<SeqState>,
    /// Loss of earlier SSRCs.
    lost_before: u64,
    late_run: u32,
    /// (arrival, timestamp) of the previous packet, for jitter.
    last_transit: Option<i64>,
    jitter_q4: i64,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> Self {
        Self {
            cfg,
            anchor: None,
            pending: BTreeMap::new(),
            out_pos: 0,
            seq: None,
            lost_before: 0,
            late_run: 0,
            last_transit: None,
            jitter_q4: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.lost = self.lost_before + self.seq.as_ref().map_or(0, SeqState::lost);
        s.jitter = (self.jitter_q4 >> 4) as u32;
        s
    }

    /// Samples released so far (the position of the next one on the call's timeline).
    pub fn position(&self) -> i64 {
        self.out_pos
    }

    /// Takes a decoded packet that arrived at `now`.
    pub fn push(&mut self, now: i64, h: &RtpHeader, samples: &[i16]) -> Pushed {
        // SSRC change: a new source (SBC failover, re-INVITE): a fresh timeline anchor.
        if self.anchor.is_some_and(|a| a.ssrc != h.ssrc) {
            self.stats.ssrc_changes += 1;
            self.stats.resyncs += 1;
            self.lost_before += self.seq.take().map_or(0, |s| s.lost());
            self.anchor = None;
            self.last_transit = None;
        }
        // Sequence bookkeeping and duplicates.
        let seq = self.seq.get_or_insert_with(|| SeqState::new(h.seq));
        let ext = seq.extend(h.seq);
        let slot = (ext.rem_euclid(SEEN_WINDOW as i64)) as usize;
        if seq.seen[slot] == ext + 1 {
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        let in_order = ext > seq.max;
        if !in_order {
            self.stats.reordered += 1;
        }
        // Interarrival jitter (RFC 3550 §6.4.1), timestamps in samples.
        let transit = now - i64::from(h.timestamp);
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs().min(1 << 24);
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);

        let anchor = *self.anchor.get_or_insert(Anchor { ssrc: h.ssrc, ts: h.timestamp, pos: now.max(self.out_pos) });
        let mut pos = anchor.pos + i64::from(h.timestamp.wrapping_sub(anchor.ts) as i32);
        let len = samples.len() as i64;
        let ahead = pos - now;
        let late = pos + len <= self.out_pos;
        let jumped = ahead > i64::from(self.cfg.max_ahead)
            || (late && (h.marker || self.late_run + 1 >= self.cfg.late_resync))
            || (h.marker && ahead.abs() > i64::from(self.cfg.delay) + len);
        if jumped {
            self.stats.resyncs += 1;
            pos = now.max(self.out_pos);
            self.late_run = 0;
        } else if late {
            self.late_run += 1;
            self.stats.late += 1;
            // Counted as received for loss: it did arrive.
            seq.received += 1;
            seq.seen[slot] = ext + 1;
            seq.max = seq.max.max(ext);
            return Pushed::Late;
        } else {
            self.late_run = 0;
        }
        seq.received += 1;
        seq.seen[slot] = ext + 1;
        if in_order {
            seq.max = ext;
            // Keep the anchor near the newest packet so wrap arithmetic stays small.
            self.anchor = Some(Anchor { ssrc: h.ssrc, ts: h.timestamp, pos });
        } else if jumped {
            self.anchor = Some(Anchor { ssrc: h.ssrc, ts: h.timestamp, pos });
        }
        if self.pending.contains_key(&pos) {
            // Same timestamp, different sequence number: a sender repeating audio.
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        if self.pending.len() >= self.cfg.max_packets {
            // Drop the furthest-future packet (the least likely to be needed soon).
            self.pending.pop_last();
            self.stats.overflow += 1;
        }
        self.stats.received += 1;
        self.pending.insert(pos, samples.to_vec());
        Pushed::Accepted
    }

    /// Releases audio up to `now - delay` into `out` (exactly that many samples, so
    /// every stream of a call released with the same `now` stays in step).
    pub fn pull(&mut self, now: i64, out: &mut Vec<i16>) {
        let target = now - i64::from(self.cfg.delay);
        self.pull_to(target, out);
    }

    /// Releases everything up to `target` (the call's end: `now` without delay).
    pub fn pull_to(&mut self, target: i64, out: &mut Vec<i16>) {
        while self.out_pos < target {
            let Some(mut entry) = self.pending.first_entry() else {
                let n = target - self.out_pos;
                out.extend(std::iter::repeat_n(0, n as usize));
                self.stats.concealed_samples += n as u64;
                self.out_pos = target;
                break;
            };
            let pos = *entry.key();
            if pos > self.out_pos {
                let n = pos.min(target) - self.out_pos;
                out.extend(std::iter::repeat_n(0, n as usize));
                self.stats.concealed_samples += n as u64;
                self.out_pos += n;
                continue;
            }
            let samples = entry.get_mut();
            let skip = (self.out_pos - pos) as usize;
            if skip >= samples.len() {
                // Wholly overlapped by audio already played (after a re-anchor).
                entry.remove();
                continue;
            }
            let take = (samples.len() - skip).min((target - self.out_pos) as usize);
            out.extend_from_slice(&samples[skip..skip + take]);
            self.out_pos += take as i64;
            if skip + take == samples.len() {
                entry.remove();
            } else {
                let rest = samples.split_off(skip + take);
                entry.remove();
                self.pending.insert(self.out_pos, rest);
            }
        }
    }

    /// Packets held.
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: usize = 160;

    fn h(seq: u16, ts: u32) -> RtpHeader {
        RtpHeader { marker: false, payload_type: 0, seq, timestamp: ts, ssrc: 1 }
    }

    fn frame(v: i16) -> Vec<i16> {
        vec![v; F]
    }

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::for_rate(8000, 60))
    }

    /// Runs packets `(arrival, seq, ts, value)` through, pulling every 20 ms, and
    /// returns the value of each released 20 ms frame (or -1 for silence).
    fn run(jb: &mut JitterBuffer, packets: &[(i64, u16, u32, i16)], until: i64) -> Vec<i16> {
        let mut out = Vec::new();
        let mut i = 0;
        let mut now = 0;
        while now <= until {
            while i < packets.len() && packets[i].0 <= now {
                let (_, s, t, v) = packets[i];
                jb.push(now, &h(s, t), &frame(v));
                i += 1;
            }
            jb.pull(now, &mut out);
            now += F as i64;
        }
        assert_eq!(out.len() as i64, jb.position());
        out.chunks(F).map(|c| if c.iter().all(|&x| x == 0) { -1 } else { c[0] }).collect()
    }

    #[test]
    fn in_order_stream_plays_after_the_delay_in_step_with_time() {
        let mut jb = jb();
        let pkts: Vec<_> = (0..10).map(|i| (i as i64 * 160, i as u16, 1000 + i * 160, i as i16 + 1)).collect();
        let got = run(&mut jb, &pkts, 160 * 14);
        // Each frame sits where it arrived on the call's timeline (released 60 ms later).
        assert_eq!(&got[..10], &(1..=10).collect::<Vec<i16>>()[..]);
        let s = jb.stats();
        assert_eq!((s.received, s.lost, s.late, s.duplicates, s.reordered), (10, 0, 0, 0, 0));
    }

    #[test]
    fn reordered_and_duplicated_packets_land_in_place() {
        let mut jb = jb();
        let pkts = [(0, 0, 0, 1), (160, 2, 320, 3), (200, 1, 160, 2), (210, 1, 160, 2), (480, 3, 480, 4)];
        let got = run(&mut jb, &pkts, 160 * 8);
        assert_eq!(&got[..4], &[1, 2, 3, 4]);
        let s = jb.stats();
        assert_eq!((s.received, s.reordered, s.duplicates, s.lost), (4, 1, 1, 0));
    }

    #[test]
    fn lost_packets_become_silence_and_keep_time() {
        let mut jb = jb();
        let pkts = [(0, 0, 0, 1), (160, 1, 160, 2), (640, 4, 640, 5), (800, 5, 800, 6)];
        let got = run(&mut jb, &pkts, 160 * 9);
        assert_eq!(&got[..6], &[1, 2, -1, -1, 5, 6]);
        assert_eq!(jb.stats().lost, 2);
    }

    #[test]
    fn a_packet_later_than_the_delay_is_dropped_as_late() {
        let mut jb = jb();
        let pkts = [(0, 0, 0, 1), (160, 2, 320, 3), (1200, 1, 160, 2)];
        let got = run(&mut jb, &pkts, 160 * 9);
        assert_eq!(&got[..3], &[1, -1, 3]);
        let s = jb.stats();
        assert_eq!((s.late, s.lost), (1, 0));
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut jb = jb();
        let pkts: Vec<_> = (0..6u32)
            .map(|i| {
                (i as i64 * 160, 65533u16.wrapping_add(i as u16), (u32::MAX - 320).wrapping_add(i * 160), i as i16 + 1)
            })
            .collect();
        let got = run(&mut jb, &pkts, 160 * 9);
        assert_eq!(&got[..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn timestamp_jump_and_ssrc_change_re_anchor_without_losing_time() {
        let mut jb = jb();
        let mut out = Vec::new();
        jb.push(0, &h(0, 0), &frame(1));
        jb.pull(0, &mut out);
        // A jump of ten seconds in the timestamp, arriving 20 ms later: played now.
        jb.push(160, &h(1, 80_000), &frame(2));
        // A new SSRC with its own numbering.
        let mut other = h(9000, 5);
        other.ssrc = 2;
        jb.push(320, &other, &frame(3));
        jb.pull(320 + 480 + 160, &mut out);
        let frames: Vec<i16> = out.chunks(F).map(|c| c[0]).collect();
        assert_eq!(frames, vec![1, 2, 3]);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.ssrc_changes), (2, 1));
    }

    #[test]
    fn a_sender_clock_slip_re_anchors_after_a_run_of_late_packets() {
        let mut jb = jb();
        let mut out = Vec::new();
        for i in 0..5 {
            jb.push(i * 160, &h(i as u16, i as u32 * 160), &frame(1));
            jb.pull(i * 160, &mut out);
        }
        // From here on packets arrive 500 ms later than their timestamps say.
        for i in 5..20 {
            let now = i * 160 + 4000;
            jb.push(now, &h(i as u16, i as u32 * 160), &frame(2));
            jb.pull(now, &mut out);
        }
        jb.pull_to(20 * 160 + 4000, &mut out);
        let s = jb.stats();
        assert_eq!(s.resyncs, 1);
        assert!(s.late < 8, "{s:?}");
        assert!(out.iter().filter(|&&x| x == 2).count() >= 7 * F);
    }

    #[test]
    fn a_flood_of_future_packets_is_bounded() {
        let mut jb = JitterBuffer::new(JitterConfig { max_packets: 10, ..JitterConfig::for_rate(8000, 60) });
        for i in 0..100u16 {
            jb.push(0, &h(i, u32::from(i) * 160), &frame(1));
        }
        assert!(jb.held() <= 10);
        assert!(jb.stats().overflow > 0 || jb.stats().resyncs > 0);
    }

    #[test]
    fn pull_to_releases_exactly_up_to_the_target() {
        let mut jb = jb();
        jb.push(0, &h(0, 0), &frame(1));
        let mut out = Vec::new();
        jb.pull_to(100, &mut out);
        assert_eq!(out.len(), 100);
        jb.pull_to(160, &mut out);
        assert_eq!(out.len(), 160);
        assert!(out.iter().all(|&x| x == 1));
    }
}
