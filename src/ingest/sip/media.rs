//! A SIP call's media loop: the call's task from the answer to its end. It owns the
//! RTP sockets and streams, waits on packets, signalling and a 20 ms tick, plays the
//! jitter buffers out to the recorder, and ends on BYE, RTP timeout, session expiry or
//! shutdown with the call's media stats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::call::session::CallSession;
use crate::call::Role;
use crate::call::{Outcome, Source};
use crate::ingest::sip::decoders::{OpusIn, SrtpIn};
use crate::ingest::sip::dialog::{CallMsg, RtpPorts, SipState, RATE};
use crate::ingest::sip::invite::{Offer, StreamPlan};
use crate::ingest::sip::sdp::Codec;
use crate::media::jitter::{JitterBuffer, JitterStats, Pushed};
use crate::media::{g711, rtp};
use crate::store::manifest::MediaStats;

pub(super) struct Stream {
    pub(super) plan: StreamPlan,
    pub(super) ports: RtpPorts,
    pub(super) jitter: JitterBuffer,
    /// Where RTP is accepted from (`sdp`), or the latched source.
    pub(super) source: Option<SocketAddr>,
    pub(super) last_dtmf_ts: Option<u32>,
    pub(super) decoded: Vec<i16>,
    pub(super) out: Vec<i16>,
    /// SRTP: the decryption context for the offered key, and our own key for answers.
    pub(super) srtp: Option<Box<SrtpIn>>,
    /// Opus: the decoder (made at the first Opus packet) and its timestamp scaler.
    pub(super) opus: Option<Box<OpusIn>>,
}

/// The counters every packet touches, resolved once per call: a label lookup hashes
/// the labels each time, and it showed in profiles at 50,000 packets/s.
pub(super) struct PacketCounters {
    pub(super) received: IntCounter,
    pub(super) reordered: IntCounter,
    pub(super) duplicate: IntCounter,
    pub(super) late: IntCounter,
    pub(super) frames_received: IntCounter,
    pub(super) frames_reordered: IntCounter,
    pub(super) dropped_late: IntCounter,
    pub(super) dropped_duplicate: IntCounter,
}

impl PacketCounters {
    pub(super) fn new(m: &crate::metrics::Metrics, source: Source) -> Self {
        let s = source.as_str();
        let rtp = |l: &str| m.rtp_packets.with_label_values(&[l]);
        PacketCounters {
            received: rtp("received"),
            reordered: rtp("reordered"),
            duplicate: rtp("duplicate"),
            late: rtp("late"),
            frames_received: m.frames_received.with_label_values(&[s]),
            frames_reordered: m.frames_reordered.with_label_values(&[s]),
            dropped_late: m.frames_dropped.with_label_values(&[s, "late"]),
            dropped_duplicate: m.frames_dropped.with_label_values(&[s, "duplicate"]),
        }
    }
}

pub(super) struct MediaLoop {
    pub(super) counters: PacketCounters,
    pub(super) state: Arc<SipState>,
    pub(super) session: CallSession,
    pub(super) streams: Vec<Stream>,
    pub(super) started: Instant,
    pub(super) offer: Offer,
    pub(super) sdp_session: u64,
    pub(super) sdp_version: u64,
    pub(super) session_expires: Option<u64>,
}

async fn recv_on(s: Option<&Stream>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.ports.rtp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_rtcp(s: Option<&Stream>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.ports.rtcp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl MediaLoop {
    pub(super) fn now_samples(&self) -> i64 {
        (self.started.elapsed().as_micros() as i64) * i64::from(RATE) / 1_000_000
    }

    /// Runs the call to its end; how it ended.
    pub(super) async fn run(mut self, mut msgs: mpsc::Receiver<CallMsg>) -> Outcome {
        let app = self.state.app.clone();
        let rtp_timeout = self.state.cfg.rtp_timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_packet = Instant::now();
        let mut refreshed = Instant::now();
        let (mut buf0, mut buf1) = (vec![0u8; 2048], vec![0u8; 2048]);
        let (mut rtcp0, mut rtcp1) = (vec![0u8; 1500], vec![0u8; 1500]);
        let source = self.session.info().source;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = app.lifecycle.force_close.cancelled() => break Outcome::Shutdown,
                m = msgs.recv() => match m {
                    Some(CallMsg::Bye) | None => break Outcome::Completed,
                    Some(CallMsg::Offer(tx)) => {
                        refreshed = Instant::now();
                        self.reoffer(*tx).await;
                    }
                },
                r = recv_on(self.streams.first(), &mut buf0) => if let Ok((n, from)) = r {
                    last_packet = Instant::now();
                    self.on_packet(0, &buf0[..n], from);
                },
                r = recv_on(self.streams.get(1), &mut buf1) => if let Ok((n, from)) = r {
                    last_packet = Instant::now();
                    self.on_packet(1, &buf1[..n], from);
                },
                r = recv_rtcp(self.streams.first(), &mut rtcp0) => if r.is_ok() {
                    app.metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                },
                r = recv_rtcp(self.streams.get(1), &mut rtcp1) => if r.is_ok() {
                    app.metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                },
                _ = tick.tick() => {
                    if self.release(None).is_err() {
                        break Outcome::StorageError;
                    }
                    if last_packet.elapsed() > rtp_timeout {
                        app.metrics.rtp_timeouts.inc();
                        tracing::warn!(call_id = %self.session.info().call_id, "no RTP for {rtp_timeout:?}: ending the call");
                        break Outcome::Timeout;
                    }
                    if let Some(se) = self.session_expires {
                        if refreshed.elapsed() > Duration::from_secs(se) {
                            tracing::warn!(call_id = %self.session.info().call_id, "session timer expired without a refresh: ending the call");
                            break Outcome::Timeout;
                        }
                    }
                }
            }
        };
        // A BYE can overtake the last packets (they sit in the sockets while the select
        // takes the BYE first): read what is already queued before the end. Not with
        // `try_recv_from`: it trusts the reactor's readiness, which can lag the kernel.
        if outcome == Outcome::Completed {
            for i in 0..self.streams.len() {
                for _ in 0..512 {
                    let r =
                        tokio::time::timeout(Duration::from_millis(20), self.streams[i].ports.rtp.recv_from(&mut buf0))
                            .await;
                    let Ok(Ok((n, from))) = r else { break };
                    self.on_packet(i, &buf0[..n], from);
                }
            }
        }
        // Everything received is played out (no delay at the end).
        let end = self.now_samples();
        let _ = self.release(Some(end));
        let mut stats = MediaStats::default();
        for s in &self.streams {
            let j: JitterStats = s.jitter.stats();
            stats.frames_received += j.received + j.late;
            stats.frames_reordered += j.reordered;
            stats.frames_gap_filled += j.lost;
            stats.frames_dropped += j.late + j.duplicates + j.overflow;
            stats.samples_gap_filled = stats.samples_gap_filled.max(j.concealed_samples);
            app.metrics.rtp_packets.with_label_values(&["lost"]).inc_by(j.lost);
            app.metrics.frames_gap_filled.with_label_values(&[source.as_str()]).inc_by(j.lost);
            app.metrics.rtp_jitter_seconds.observe(f64::from(j.jitter) / f64::from(RATE));
            tracing::info!(call_id = %self.session.info().call_id, channel = s.plan.channel, received = j.received, lost = j.lost, late = j.late, duplicates = j.duplicates, reordered = j.reordered, resyncs = j.resyncs, jitter_ms = j.jitter / 8, "RTP stream ended");
        }
        self.session.end(outcome.clone(), stats).await;
        outcome
    }

    /// Releases every stream's audio up to now minus the playout delay (or `to`),
    /// interleaves it by channel and queues it for the recorder.
    fn release(&mut self, to: Option<i64>) -> Result<(), ()> {
        let now = self.now_samples();
        for s in &mut self.streams {
            s.out.clear();
            match to {
                Some(t) => s.jitter.pull_to(t, &mut s.out),
                None => s.jitter.pull(now, &mut s.out),
            }
        }
        let n = self.streams.iter().map(|s| s.out.len()).min().unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        let channels = self.streams.len();
        let mut bytes = Vec::with_capacity(n * channels * 2);
        // `streams` is in channel order (the plan sorts by channel).
        for k in 0..n {
            for s in &self.streams {
                bytes.extend_from_slice(&s.out[k].to_le_bytes());
            }
        }
        self.session.write_audio(&bytes).map_err(|_| ())
    }
}

/// The receive path of one RTP packet: source check, SRTP decryption, RTP parsing, DTMF
/// (RFC 4733), G.711 or Opus decoding and the jitter buffer.
impl MediaLoop {
    pub(super) fn on_packet(&mut self, i: usize, data: &[u8], from: SocketAddr) {
        let now = self.now_samples();
        let metrics = &self.state.app.metrics;
        let s = &mut self.streams[i];
        match s.source {
            Some(expected) if expected != from => {
                metrics.rtp_packets.with_label_values(&["wrong_source"]).inc();
                return;
            }
            // `latch`, or the offer gave no address (0.0.0.0): the first sender.
            None => s.source = Some(from),
            _ => {}
        }
        let plain;
        let data = match s.srtp.as_mut() {
            // RTCP muxed on the RTP port (SRTCP): counted, not decrypted.
            Some(_) if data.len() > 1 && (192..=223).contains(&data[1]) => {
                metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                return;
            }
            Some(c) => match c.ctx.get_mut().unwrap_or_else(|e| e.into_inner()).decrypt_rtp(data) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(_) => {
                    metrics.rtp_packets.with_label_values(&["srtp_failed"]).inc();
                    return;
                }
            },
            None => data,
        };
        let (h, payload) = match rtp::parse(data) {
            Ok(p) => p,
            Err(rtp::RtpError::Rtcp) => {
                metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                return;
            }
            Err(_) => {
                metrics.rtp_packets.with_label_values(&["malformed"]).inc();
                return;
            }
        };
        if Some(h.payload_type) == s.plan.dtmf_pt {
            if let Some((digit, true)) = rtp::telephone_event(payload) {
                // The end packet is sent three times (RFC 4733 §2.5.1.4): once per event.
                if s.last_dtmf_ts != Some(h.timestamp) {
                    s.last_dtmf_ts = Some(h.timestamp);
                    let track = match s.plan.role {
                        Role::Rep => "rep",
                        Role::Customer => "customer",
                        Role::Other => "mixed",
                    };
                    self.session.record_dtmf(digit.to_string(), Some(track));
                }
            }
            return;
        }
        if h.payload_type != s.plan.pt {
            metrics.rtp_packets.with_label_values(&["other_payload"]).inc();
            return;
        }
        s.decoded.clear();
        let mut h = h;
        match s.plan.codec {
            Codec::Pcmu => g711::decode_ulaw_into(payload, &mut s.decoded),
            Codec::Pcma => g711::decode_alaw_into(payload, &mut s.decoded),
            Codec::Opus => {
                if s.opus.is_none() {
                    s.opus = OpusIn::new();
                }
                let Some(o) = s.opus.as_mut() else { return };
                // Up to 120 ms per packet (RFC 6716).
                s.decoded.resize(RATE as usize * 120 / 1000, 0);
                match o.dec.get_mut().unwrap_or_else(|e| e.into_inner()).decode(payload, &mut s.decoded, false) {
                    Ok(n) => s.decoded.truncate(n),
                    Err(_) => {
                        metrics.rtp_packets.with_label_values(&["malformed"]).inc();
                        return;
                    }
                }
                h.timestamp = o.scale(h.timestamp);
            }
        }
        let c = &self.counters;
        c.frames_received.inc();
        let before = s.jitter.stats().reordered;
        match s.jitter.push(now, &h, &s.decoded) {
            Pushed::Accepted if s.jitter.stats().reordered > before => {
                c.reordered.inc();
                c.frames_reordered.inc();
            }
            Pushed::Accepted => c.received.inc(),
            Pushed::Duplicate => {
                c.duplicate.inc();
                c.dropped_duplicate.inc();
            }
            Pushed::Late => {
                c.late.inc();
                c.dropped_late.inc();
            }
        }
    }
}
