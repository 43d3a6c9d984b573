//! The receive path of one RTP packet: source check, SRTP decryption, RTP parsing,
//! DTMF (RFC 4733), G.711 or Opus decoding and the jitter buffer; and the per-stream
//! SRTP and Opus state it uses.

use std::net::SocketAddr;

use crate::call::Role;
use crate::ingest::sip::call::RATE;
use crate::ingest::sip::media::MediaLoop;
use crate::ingest::sip::sdp;
use crate::ingest::sip::sdp::Codec;
use crate::media::jitter::Pushed;
use crate::media::{g711, rtp};

/// Opus decoded at the call's 8 kHz (libopus resamples internally), its 48 kHz RTP
/// timestamps scaled to 8 kHz sample positions for the jitter buffer.
pub(super) struct OpusIn {
    /// In a mutex only to be `Sync` (see `SrtpIn`); never contended.
    dec: std::sync::Mutex<opus::Decoder>,
    /// Extended (unwrapped) 48 kHz timestamp of the last packet.
    ext: i64,
    last: Option<u32>,
}

impl OpusIn {
    fn new() -> Option<Box<OpusIn>> {
        let dec = opus::Decoder::new(RATE, opus::Channels::Mono).ok()?;
        Some(Box::new(OpusIn { dec: std::sync::Mutex::new(dec), ext: 0, last: None }))
    }

    /// The 8 kHz timestamp for a 48 kHz one: continuous across the 32-bit wrap
    /// (dividing the raw value would jump there).
    fn scale(&mut self, ts: u32) -> u32 {
        match self.last {
            None => self.ext = i64::from(ts),
            Some(l) => self.ext += i64::from(ts.wrapping_sub(l) as i32),
        }
        self.last = Some(ts);
        self.ext.div_euclid(i64::from(48_000 / RATE)) as u32
    }
}

pub(super) struct SrtpIn {
    /// In a mutex only to be `Sync` (the context is `Send` but not `Sync`, and the call
    /// task holds its streams across awaits); never contended.
    ctx: std::sync::Mutex<webrtc_srtp::context::Context>,
    pub(super) offered: sdp::SdesKey,
    pub(super) ours: sdp::SdesKey,
}

impl SrtpIn {
    pub(super) fn new(offered: &sdp::SdesKey) -> Option<Box<SrtpIn>> {
        use webrtc_srtp::protection_profile::ProtectionProfile;
        let profile = match offered.suite {
            sdp::SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            sdp::SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        };
        let ctx = webrtc_srtp::context::Context::new(&offered.key, &offered.salt, profile, None, None).ok()?;
        let mut material = [0u8; 30];
        getrandom::fill(&mut material).ok()?;
        let mut ours = offered.clone();
        ours.key.copy_from_slice(&material[..16]);
        ours.salt.copy_from_slice(&material[16..]);
        Some(Box::new(SrtpIn { ctx: std::sync::Mutex::new(ctx), offered: offered.clone(), ours }))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_timestamps_scale_to_8khz_across_the_wrap() {
        let mut o = OpusIn::new().expect("decoder");
        let start = u32::MAX - 960 * 2 + 1; // two packets before the wrap
        let mut out = Vec::new();
        for k in 0..5u32 {
            out.push(o.scale(start.wrapping_add(k * 960)));
        }
        for w in out.windows(2) {
            assert_eq!(w[1].wrapping_sub(w[0]), 160, "{out:?}");
        }
        // A reordered (older) packet maps back by the same step.
        assert_eq!(out[4].wrapping_sub(o.scale(start.wrapping_add(3 * 960))), 160);
    }
}
