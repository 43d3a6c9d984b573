//! Source audio for senders: WAV loading, resampling, µ-law encoding.

use std::path::Path;

use anyhow::{bail, Context};
use rubato::{FftFixedIn, Resampler};

/// Deinterleaved 16-bit audio.
#[derive(Debug, Clone)]
pub struct Audio {
    pub sample_rate: u32,
    /// One Vec per channel (1 or 2). Channel 0 = rep, channel 1 = customer.
    pub channels: Vec<Vec<i16>>,
}

impl Audio {
    pub fn load_wav(path: &Path) -> anyhow::Result<Audio> {
        let reader = hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
        let spec = reader.spec();
        if spec.channels == 0 || spec.channels > 2 {
            bail!("{}: {} channels; mono or stereo expected", path.display(), spec.channels);
        }
        let samples: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => reader.into_samples::<i16>().collect::<Result<_, _>>()?,
            (hound::SampleFormat::Int, b) if b <= 32 => reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| if b >= 16 { (v >> (b - 16)) as i16 } else { (v << (16 - b)) as i16 }))
                .collect::<Result<_, _>>()?,
            (hound::SampleFormat::Float, _) => reader
                .into_samples::<f32>()
                .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
                .collect::<Result<_, _>>()?,
            _ => bail!("{}: unsupported sample format", path.display()),
        };
        let n = spec.channels as usize;
        let channels = (0..n).map(|c| samples.iter().skip(c).step_by(n).copied().collect()).collect();
        Ok(Audio { sample_rate: spec.sample_rate, channels })
    }

    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / self.sample_rate as f64
    }

    /// Resampled copy (same audio at `rate`).
    pub fn resampled(&self, rate: u32) -> anyhow::Result<Audio> {
        if rate == self.sample_rate {
            return Ok(self.clone());
        }
        let chunk = 1024;
        let mut r = FftFixedIn::<f32>::new(self.sample_rate as usize, rate as usize, chunk, 2, self.channels.len())?;
        let input: Vec<Vec<f32>> =
            self.channels.iter().map(|c| c.iter().map(|&s| s as f32 / 32768.0).collect()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); input.len()];
        let mut pos = 0;
        let delay = r.output_delay();
        let total = input[0].len();
        while pos < total + chunk {
            let block: Vec<Vec<f32>> = input
                .iter()
                .map(|c| {
                    let mut b: Vec<f32> = c.iter().skip(pos).take(chunk).copied().collect();
                    b.resize(chunk, 0.0);
                    b
                })
                .collect();
            let produced = r.process(&block, None)?;
            for (o, p) in out.iter_mut().zip(produced) {
                o.extend(p);
            }
            pos += chunk;
        }
        let want = (total as u64 * rate as u64 / self.sample_rate as u64) as usize;
        let channels = out
            .into_iter()
            .map(|c| c.into_iter().skip(delay).take(want).map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16).collect())
            .collect();
        Ok(Audio { sample_rate: rate, channels })
    }
}

/// µ-law (G.711) encoding of one sample.
pub fn encode_ulaw(pcm: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = pcm as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > CLIP {
        s = CLIP;
    }
    s += BIAS;
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}
