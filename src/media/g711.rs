//! G.711 µ-law and A-law decoding (ITU-T G.711), table-driven.
//!
//! Telephone forks (Twilio, SIP PCMU/PCMA) carry 8-bit companded samples; everything
//! downstream of ingest works on 16-bit linear PCM.

const fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((((u & 0x0F) as i16) << 3) + 0x84) << ((u & 0x70) >> 4);
    if u & 0x80 != 0 {
        0x84 - t
    } else {
        t - 0x84
    }
}

const fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i16) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t
    } else {
        -t
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw { alaw_to_linear(i as u8) } else { ulaw_to_linear(i as u8) };
        i += 1;
    }
    table
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

/// µ-law byte that decodes to (near) zero: what a gap is filled with.
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law byte that decodes to (near) zero.
pub const ALAW_SILENCE: u8 = 0xD5;

#[inline]
pub fn decode_ulaw(u: u8) -> i16 {
    ULAW_TABLE[u as usize]
}

#[inline]
pub fn decode_alaw(a: u8) -> i16 {
    ALAW_TABLE[a as usize]
}

/// Decodes a slice of µ-law bytes, appending linear samples to `out`.
/// G.711 µ-law encoding of one sample (test senders and the load generator).
pub fn encode_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut x = i32::from(sample);
    let sign = if x < 0 {
        x = -x;
        0x80u8
    } else {
        0
    };
    x = x.min(CLIP) + BIAS;
    let exp = (15 - (x as u16).leading_zeros() - 7) as u8;
    let mantissa = ((x >> (exp + 3)) & 0x0f) as u8;
    !(sign | (exp << 4) | mantissa)
}

pub fn encode_ulaw_into(input: &[i16], out: &mut Vec<u8>) {
    out.extend(input.iter().map(|&s| encode_ulaw(s)));
}

pub fn decode_ulaw_into(input: &[u8], out: &mut Vec<i16>) {
    out.extend(input.iter().map(|&b| decode_ulaw(b)));
}

/// Decodes a slice of A-law bytes, appending linear samples to `out`.
pub fn decode_alaw_into(input: &[u8], out: &mut Vec<i16>) {
    out.extend(input.iter().map(|&b| decode_alaw(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_bytes_decode_to_near_zero() {
        assert_eq!(decode_ulaw(ULAW_SILENCE), 0);
        assert!(decode_alaw(ALAW_SILENCE).abs() <= 8);
    }

    #[test]
    fn ulaw_known_values() {
        // Reference points from ITU-T G.711 tables.
        assert_eq!(decode_ulaw(0x00), -32124);
        assert_eq!(decode_ulaw(0x80), 32124);
        assert_eq!(decode_ulaw(0x7F), 0);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(decode_alaw(0xD5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xAA), 32256);
        assert_eq!(decode_alaw(0x2A), -32256);
    }

    #[test]
    fn decoding_is_monotonic_within_each_sign() {
        // µ-law codes 0x00..0x7F are negative, descending in magnitude; 0x80..0xFF positive.
        for c in 0..0x7Fu8 {
            assert!(decode_ulaw(c) < decode_ulaw(c + 1), "{c:#x}");
        }
        for c in 0x80..0xFFu8 {
            assert!(decode_ulaw(c) > decode_ulaw(c + 1), "{c:#x}");
        }
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    #[test]
    fn ulaw_encode_round_trips_within_quantisation() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let back = decode_ulaw(encode_ulaw(s));
            let err = (i32::from(back) - i32::from(s)).abs();
            assert!(err <= (i32::from(s).abs() / 16).max(8) + 4, "{s} -> {back}");
        }
        for u in 0..=255u8 {
            // Every code but the negative zero maps back to itself.
            if u != 0x7f {
                assert_eq!(encode_ulaw(decode_ulaw(u)), u);
            }
        }
    }
}
