//! Audio for the recogniser: each channel resampled to 16 kHz mono f32 and pushed into
//! its own SPSC ring. The network side never waits: when the recogniser falls behind,
//! its side skips the oldest audio beyond `max_lag` (live transcription wants the newest
//! words), and if the ring is completely full the newest chunk is dropped. Both counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use rubato::{FftFixedIn, Resampler};
use thiserror::Error;

pub const RECOGNISER_RATE: u32 = 16_000;
/// Input chunk the resampler works on (10 ms at 8 kHz; smaller adds latency only by
/// its own length).
const CHUNK_MS: usize = 10;

#[derive(Debug, Error)]
pub enum FeedError {
    #[error("cannot resample from {0} Hz: {1}")]
    Resampler(u32, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Oldest audio skipped by the consumer because it was too far behind.
    Behind,
    /// Newest audio dropped because the ring was full.
    RingFull,
}

/// Called with every drop as it happens (e.g. to count it in a metric).
pub type DropObserver = Box<dyn Fn(DropReason, u64) + Send + Sync>;

/// Samples dropped, by reason; shared between both sides.
#[derive(Default)]
pub struct FeedDrops {
    pub behind: AtomicU64,
    pub ring_full: AtomicU64,
    observer: Option<DropObserver>,
}

impl FeedDrops {
    fn add(&self, reason: DropReason, samples: u64) {
        match reason {
            DropReason::Behind => self.behind.fetch_add(samples, Ordering::Relaxed),
            DropReason::RingFull => self.ring_full.fetch_add(samples, Ordering::Relaxed),
        };
        if let Some(f) = &self.observer {
            f(reason, samples);
        }
    }
}

struct ChannelFeed {
    resampler: Option<FftFixedIn<f32>>,
    /// Leading output samples still to discard: the resampler's delay, so that sample
    /// `n` of the ring is at `n / 16000` s into the call (transcript offsets rely on it).
    skip_delay: usize,
    pending: Vec<f32>,
    out: Vec<Vec<f32>>,
    prod: HeapProd<f32>,
}

/// Producer side, owned by the call's task.
pub struct RecogniserFeed {
    channels: Vec<ChannelFeed>,
    drops: Arc<FeedDrops>,
}

/// Consumer side for one channel, owned by the recogniser.
pub struct RecogniserTap {
    cons: HeapCons<f32>,
    max_lag: usize,
    drops: Arc<FeedDrops>,
}

impl RecogniserFeed {
    /// One ring of `ring_seconds` per channel; the tap skips audio older than `max_lag_seconds`.
    pub fn new(
        source_rate: u32,
        channels: usize,
        ring_seconds: f32,
        max_lag_seconds: f32,
        observer: Option<DropObserver>,
    ) -> Result<(Self, Vec<RecogniserTap>), FeedError> {
        let drops = Arc::new(FeedDrops { observer, ..Default::default() });
        let mut feeds = Vec::new();
        let mut taps = Vec::new();
        let cap = (ring_seconds * RECOGNISER_RATE as f32) as usize;
        let max_lag = ((max_lag_seconds * RECOGNISER_RATE as f32) as usize).min(cap);
        for _ in 0..channels {
            let resampler = if source_rate == RECOGNISER_RATE {
                None
            } else {
                let chunk = source_rate as usize * CHUNK_MS / 1000;
                Some(
                    FftFixedIn::<f32>::new(source_rate as usize, RECOGNISER_RATE as usize, chunk, 1, 1)
                        .map_err(|e| FeedError::Resampler(source_rate, e.to_string()))?,
                )
            };
            let out = vec![vec![0f32; resampler.as_ref().map_or(0, |r| r.output_frames_max())]];
            let skip_delay = resampler.as_ref().map_or(0, |r| r.output_delay());
            let (prod, cons) = HeapRb::<f32>::new(cap.max(1)).split();
            feeds.push(ChannelFeed { resampler, skip_delay, pending: Vec::new(), out, prod });
            taps.push(RecogniserTap { cons, max_lag, drops: drops.clone() });
        }
        Ok((Self { channels: feeds, drops }, taps))
    }

    pub fn drops(&self) -> &Arc<FeedDrops> {
        &self.drops
    }

    /// Adds linear samples of one channel at the source rate. Never blocks.
    pub fn push(&mut self, ch: usize, samples: &[i16]) {
        let feed = &mut self.channels[ch];
        let scale = 1.0 / 32768.0;
        match feed.resampler.as_mut() {
            None => {
                let converted: Vec<f32> = samples.iter().map(|&s| s as f32 * scale).collect();
                push_or_count(&mut feed.prod, &converted, &self.drops);
            }
            Some(r) => {
                feed.pending.extend(samples.iter().map(|&s| s as f32 * scale));
                // Chunks are taken from a moving offset and the consumed part removed
                // once: draining per chunk moved the rest each time, quadratic in a
                // large push (a catch-up after a stall spun a server for minutes).
                let mut at = 0;
                loop {
                    let need = r.input_frames_next();
                    if feed.pending.len() - at < need {
                        break;
                    }
                    let input = [&feed.pending[at..at + need]];
                    match r.process_into_buffer(&input, &mut feed.out, None) {
                        Ok((_, produced)) => {
                            let skip = feed.skip_delay.min(produced);
                            feed.skip_delay -= skip;
                            let produced = &feed.out[0][skip..produced];
                            push_or_count(&mut feed.prod, produced, &self.drops);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "resampler rejected a chunk");
                        }
                    }
                    at += need;
                }
                feed.pending.drain(..at);
            }
        }
    }
}

fn push_or_count(prod: &mut HeapProd<f32>, samples: &[f32], drops: &FeedDrops) {
    let pushed = prod.push_slice(samples);
    if pushed < samples.len() {
        drops.add(DropReason::RingFull, (samples.len() - pushed) as u64);
    }
}

impl RecogniserTap {
    /// Appends the queued audio to `out`, first skipping the oldest part beyond `max_lag`.
    /// Returns samples skipped.
    pub fn read(&mut self, out: &mut Vec<f32>) -> usize {
        let occupied = self.cons.occupied_len();
        let skipped = occupied.saturating_sub(self.max_lag);
        if skipped > 0 {
            self.cons.skip(skipped);
            self.drops.add(DropReason::Behind, skipped as u64);
        }
        let (a, b) = self.cons.as_slices();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        let n = a.len() + b.len();
        self.cons.skip(n);
        skipped
    }

    pub fn queued(&self) -> usize {
        self.cons.occupied_len()
    }

    /// True once the call has ended (the producer is gone) and everything was read.
    pub fn is_finished(&self) -> bool {
        !self.cons.write_is_held() && self.cons.occupied_len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, secs: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| ((i as f32 * freq * 2.0 * std::f32::consts::PI / rate as f32).sin() * 16000.0) as i16)
            .collect()
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    #[test]
    fn eight_khz_is_resampled_to_sixteen_keeping_pitch() {
        let (mut feed, mut taps) = RecogniserFeed::new(8000, 1, 5.0, 5.0, None).unwrap();
        let input = sine(8000, 440.0, 1.0);
        // In 20 ms frames, as a fork delivers them.
        for frame in input.chunks(160) {
            feed.push(0, frame);
        }
        let mut out = vec![];
        taps[0].read(&mut out);
        // The resampler's delay is trimmed from the start; its last chunk is still pending.
        assert!((15_700..=16_000).contains(&out.len()), "{}", out.len());
        // 440 Hz: ~880 zero crossings per second of audio.
        let steady = &out[2000..out.len() - 100];
        let per_sec = zero_crossings(steady) as f32 * 16000.0 / steady.len() as f32;
        assert!((per_sec - 880.0).abs() < 10.0, "{per_sec}");
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let (mut feed, mut taps) = RecogniserFeed::new(16000, 2, 1.0, 1.0, None).unwrap();
        feed.push(1, &[16384, -16384]);
        let mut out = vec![];
        taps[1].read(&mut out);
        assert_eq!(out, vec![0.5, -0.5]);
        taps[0].read(&mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn consumer_that_falls_behind_skips_oldest_and_counts() {
        let (mut feed, mut taps) = RecogniserFeed::new(16000, 1, 2.0, 0.5, None).unwrap();
        let samples: Vec<i16> = (0..16000).map(|i| (i % 30000) as i16).collect();
        feed.push(0, &samples); // 1 s queued, max lag 0.5 s
        let mut out = vec![];
        let skipped = taps[0].read(&mut out);
        assert_eq!(skipped, 8000);
        assert_eq!(out.len(), 8000);
        // The newest audio is what is kept.
        assert_eq!(out[7999], 15999.0 / 32768.0);
        assert_eq!(feed.drops().behind.load(Ordering::Relaxed), 8000);
        // Full ring: newest is dropped and counted, producer never waits.
        feed.push(0, &vec![1; 40000]);
        assert_eq!(feed.drops().ring_full.load(Ordering::Relaxed), 40000 - 32000);
    }
}
