//! RTP (RFC 3550) fixed header and RFC 4733 telephone events, parsed without
//! copying. Pure; every input is untrusted network data.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum RtpError {
    #[error("RTP packet shorter than its header")]
    TooShort,
    #[error("RTP version {0} (expected 2)")]
    BadVersion(u8),
    #[error("RTP header extension runs past the packet")]
    BadExtension,
    #[error("RTP padding longer than the payload")]
    BadPadding,
    #[error("an RTCP packet on the RTP port")]
    Rtcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Header and payload of one packet.
pub fn parse(buf: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    if buf.len() < 12 {
        return Err(RtpError::TooShort);
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    // RTCP shares the port in rtcp-mux and some SBCs send it there anyway (RFC 5761 §4).
    if (200..=206).contains(&buf[1]) || (192..=199).contains(&buf[1]) {
        return Err(RtpError::Rtcp);
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let csrc = usize::from(buf[0] & 0x0f);
    let mut off = 12 + 4 * csrc;
    if buf.len() < off {
        return Err(RtpError::TooShort);
    }
    if extension {
        if buf.len() < off + 4 {
            return Err(RtpError::BadExtension);
        }
        let words = usize::from(u16::from_be_bytes([buf[off + 2], buf[off + 3]]));
        off += 4 + 4 * words;
        if buf.len() < off {
            return Err(RtpError::BadExtension);
        }
    }
    let mut end = buf.len();
    if padding {
        let pad = usize::from(buf[end - 1]);
        if pad == 0 || off + pad > end {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    let header = RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    Ok((header, &buf[off..end]))
}

/// Writes a minimal RTP packet (tests and the load generator).
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80);
    out.push((u8::from(h.marker) << 7) | (h.payload_type & 0x7f));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// One RFC 4733 event packet: `(digit, end of event)`.
pub fn telephone_event(payload: &[u8]) -> Option<(char, bool)> {
    if payload.len() < 4 {
        return None;
    }
    let digit = match payload[0] {
        d @ 0..=9 => char::from(b'0' + d),
        10 => '*',
        11 => '#',
        e @ 12..=15 => char::from(b'A' + e - 12),
        _ => return None,
    };
    Some((digit, payload[1] & 0x80 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fields() {
        let h = RtpHeader { marker: true, payload_type: 8, seq: 65535, timestamp: 0xdead_beef, ssrc: 42 };
        let mut buf = Vec::new();
        write(&h, &[1, 2, 3], &mut buf);
        let (back, payload) = parse(&buf).unwrap();
        assert_eq!(back, h);
        assert_eq!(payload, &[1, 2, 3]);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut buf = vec![0x80 | 0x20 | 0x10 | 0x01, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        buf.extend_from_slice(&[0, 0, 0, 9]); // one CSRC
        buf.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension of one word
        buf.extend_from_slice(&[10, 11, 12]);
        buf.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let (h, payload) = parse(&buf).unwrap();
        assert_eq!((h.seq, h.timestamp, h.ssrc), (1, 160, 7));
        assert_eq!(payload, &[10, 11, 12]);
    }

    #[test]
    fn bad_packets() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        assert_eq!(parse(&[0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]), Err(RtpError::Rtcp));
        assert_eq!(parse(&[0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]), Err(RtpError::BadExtension));
        assert_eq!(parse(&[0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9]), Err(RtpError::BadPadding));
        assert_eq!(parse(&[0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(RtpError::BadPadding));
    }

    #[test]
    fn telephone_events() {
        assert_eq!(telephone_event(&[5, 0x0a, 0, 160]), Some(('5', false)));
        assert_eq!(telephone_event(&[11, 0x8a, 3, 32]), Some(('#', true)));
        assert_eq!(telephone_event(&[99, 0, 0, 0]), None);
        assert_eq!(telephone_event(&[1]), None);
    }
}
