//! The per-stream decode state of a SIP call's RTP: SRTP (SDES keys, decrypted with
//! `webrtc-srtp`) and Opus (decoded at the call's 8 kHz, 48 kHz timestamps scaled).

use crate::ingest::sip::dialog::RATE;
use crate::ingest::sip::sdp;

/// Opus decoded at the call's 8 kHz (libopus resamples internally), its 48 kHz RTP
/// timestamps scaled to 8 kHz sample positions for the jitter buffer.
pub(super) struct OpusIn {
    /// In a mutex only to be `Sync` (see `SrtpIn`); never contended.
    pub(super) dec: std::sync::Mutex<opus::Decoder>,
    /// Extended (unwrapped) 48 kHz timestamp of the last packet.
    ext: i64,
    last: Option<u32>,
}

impl OpusIn {
    pub(super) fn new() -> Option<Box<OpusIn>> {
        let dec = opus::Decoder::new(RATE, opus::Channels::Mono).ok()?;
        Some(Box::new(OpusIn { dec: std::sync::Mutex::new(dec), ext: 0, last: None }))
    }

    /// The 8 kHz timestamp for a 48 kHz one: continuous across the 32-bit wrap
    /// (dividing the raw value would jump there).
    pub(super) fn scale(&mut self, ts: u32) -> u32 {
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
    pub(super) ctx: std::sync::Mutex<webrtc_srtp::context::Context>,
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
