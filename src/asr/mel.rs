//! The mel filter bank whisper.cpp reads from its model file: librosa's
//! `filters.mel(sr=16000, n_fft=400, n_mels=N)` (Slaney mel scale, Slaney area norm),
//! which is what OpenAI's `mel_filters.npz` holds.

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep()
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (m - MIN_LOG_MEL)).exp()
    } else {
        F_SP * m
    }
}

/// `n_mels` rows of `n_fft / 2 + 1` weights, row-major.
pub fn filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins).map(|i| i as f64 * sample_rate as f64 / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sample_rate as f64 / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut w = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (f0, f1, f2) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (f2 - f0);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - f0) / (f1 - f0);
            let upper = (f2 - f) / (f2 - f1);
            w[m * bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_known_values_of_whisper_filters() {
        let f = filters(16000, 400, 80);
        assert_eq!(f.len(), 80 * 201);
        // Each filter is a triangle: non-negative, one peak, zero far away.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|&v| v >= 0.0));
            assert!(row.iter().any(|&v| v > 0.0), "filter {m} is empty");
        }
        // Worked by hand: mel points 0, 37.24, 74.48 Hz; bin 1 = 40 Hz lies on the falling
        // edge: (74.48 - 40) / 37.24 * 2 / 74.48 = 0.02486.
        assert!((f[1] - 0.02486).abs() < 1e-4, "{}", f[1]);
        assert_eq!(f[0], 0.0);
    }
}
