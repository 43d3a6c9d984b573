//! The whisper.cpp ggml model file: writing it from imported weights, and checking a
//! file before whisper.cpp sees it (so a corrupt or truncated file is a clear error
//! naming the file, never an abort inside C++).

use std::io::{self, Write};

use crate::asr::ModelError;

pub const MAGIC: u32 = 0x6767_6d6c;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HParams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    /// 1 = f16 weights.
    pub ftype: i32,
}

impl HParams {
    fn as_array(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }
}

/// Tensor element type in the file (ggml's type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32 = 0,
    F16 = 1,
    Q5_1 = 7,
    Q8_0 = 8,
}

/// Weight quantisation for a whole model file, as whisper.cpp's `quantize` tool does it:
/// every 2-D weight except the positional embeddings and conv biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    Q8_0,
    Q5_1,
}

impl Quantization {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "q8_0" => Some(Self::Q8_0),
            "q5_1" => Some(Self::Q5_1),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q5_1 => "q5_1",
        }
    }

    pub fn tensor_type(self) -> TensorType {
        match self {
            Self::Q8_0 => TensorType::Q8_0,
            Self::Q5_1 => TensorType::Q5_1,
        }
    }

    /// The header's `ftype`: ggml's file type plus quantisation version 2 × 1000.
    pub fn ftype(self) -> i32 {
        match self {
            Self::Q8_0 => 2000 + 7,
            Self::Q5_1 => 2000 + 9,
        }
    }
}

/// ggml's block size for the quantised types.
pub const QK: usize = 32;

/// One q8_0 block: f16 scale, 32 signed bytes (ggml's reference quantiser).
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// One q5_1 block: f16 scale, f16 minimum, 32 high bits, 16 bytes of low nibbles.
fn quantize_q5_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&half::f16::from_f32(min).to_le_bytes());
    let mut qh = 0u32;
    let mut qs = [0u8; QK / 2];
    for j in 0..QK / 2 {
        let x0 = ((x[j] - min) * id + 0.5) as u8;
        let x1 = ((x[QK / 2 + j] - min) * id + 0.5) as u8;
        qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend_from_slice(&qs);
}

/// Dequantises one block (for tests and the round-trip check).
pub fn dequantize_block(t: TensorType, b: &[u8]) -> Vec<f32> {
    let f = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    match t {
        TensorType::Q8_0 => (0..QK).map(|i| f(0) * (b[2 + i] as i8) as f32).collect(),
        TensorType::Q5_1 => {
            let (d, m) = (f(0), f(2));
            let qh = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
            let mut y = vec![0f32; QK];
            for j in 0..QK / 2 {
                let hi0 = ((qh >> j) & 1) << 4;
                let hi1 = ((qh >> (j + QK / 2)) & 1) << 4;
                y[j] = ((b[8 + j] & 0x0F) as u32 | hi0) as f32 * d + m;
                y[j + QK / 2] = ((b[8 + j] >> 4) as u32 | hi1) as f32 * d + m;
            }
            y
        }
        TensorType::F32 | TensorType::F16 => Vec::new(),
    }
}

pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, h: &HParams, mel: &[f32], n_fft: usize, vocab: &[Vec<u8>]) -> io::Result<Self> {
        out.write_all(&MAGIC.to_le_bytes())?;
        for v in h.as_array() {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&h.n_mels.to_le_bytes())?;
        out.write_all(&(n_fft as i32).to_le_bytes())?;
        for v in mel {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&(vocab.len() as i32).to_le_bytes())?;
        for tok in vocab {
            out.write_all(&(tok.len() as i32).to_le_bytes())?;
            out.write_all(tok)?;
        }
        Ok(Self { out })
    }

    /// `dims` in numpy order (slowest first); written reversed as ggml expects.
    pub fn tensor(&mut self, name: &str, dims: &[usize], ttype: TensorType, values: &[f32]) -> io::Result<()> {
        let row = dims.last().copied().unwrap_or(0);
        if matches!(ttype, TensorType::Q8_0 | TensorType::Q5_1) && row % QK != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tensor {name}: row of {row} is not a multiple of {QK}"),
            ));
        }
        let o = &mut self.out;
        o.write_all(&(dims.len() as i32).to_le_bytes())?;
        o.write_all(&(name.len() as i32).to_le_bytes())?;
        o.write_all(&(ttype as i32).to_le_bytes())?;
        for d in dims.iter().rev() {
            o.write_all(&(*d as i32).to_le_bytes())?;
        }
        o.write_all(name.as_bytes())?;
        let mut buf = Vec::with_capacity(values.len() * 4);
        match ttype {
            TensorType::F32 => values.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes())),
            TensorType::F16 => {
                values.iter().for_each(|v| buf.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes()))
            }
            TensorType::Q8_0 | TensorType::Q5_1 => {
                for block in values.chunks_exact(QK) {
                    if ttype == TensorType::Q8_0 {
                        quantize_q8_0(block, &mut buf);
                    } else {
                        quantize_q5_1(block, &mut buf);
                    }
                }
            }
        }
        o.write_all(&buf)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What `check` found in a ggml file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlSummary {
    pub hparams: HParams,
    pub vocab: usize,
    pub tensors: usize,
}

fn type_size(t: i32) -> Option<(usize, usize)> {
    // (bytes per block, elements per block) for the types whisper.cpp files use.
    Some(match t {
        0 => (4, 1),   // f32
        1 => (2, 1),   // f16
        2 => (18, 32), // q4_0
        3 => (20, 32), // q4_1
        6 => (22, 32), // q5_0
        7 => (24, 32), // q5_1
        8 => (34, 32), // q8_0
        _ => return None,
    })
}

/// Walks the whole file: header, hyper-parameters, mel filters, vocabulary and every
/// tensor's header and byte size. Everything whisper.cpp would trip over is reported
/// here as a `ModelError::Format`.
pub fn check(buf: &[u8]) -> Result<GgmlSummary, ModelError> {
    let err = |m: String| ModelError::Format(m);
    let mut pos = 0usize;
    let i32_at = |pos: &mut usize, what: &str| -> Result<i32, ModelError> {
        let b = buf.get(*pos..*pos + 4).ok_or_else(|| err(format!("truncated in {what} at byte {pos}")))?;
        *pos += 4;
        Ok(i32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    if i32_at(&mut pos, "magic")? as u32 != MAGIC {
        return Err(err("not a ggml whisper model (bad magic)".into()));
    }
    let mut h = [0i32; 11];
    for v in h.iter_mut() {
        *v = i32_at(&mut pos, "hyper-parameters")?;
    }
    let hparams = HParams {
        n_vocab: h[0],
        n_audio_ctx: h[1],
        n_audio_state: h[2],
        n_audio_head: h[3],
        n_audio_layer: h[4],
        n_text_ctx: h[5],
        n_text_state: h[6],
        n_text_head: h[7],
        n_text_layer: h[8],
        n_mels: h[9],
        ftype: h[10],
    };
    if h[..10].iter().any(|&v| v <= 0 || v > 1_000_000) {
        return Err(err(format!("implausible hyper-parameters {h:?}")));
    }
    let n_mel = i32_at(&mut pos, "mel filters")?;
    let n_fft = i32_at(&mut pos, "mel filters")?;
    if !(1..=512).contains(&n_mel) || !(1..=4096).contains(&n_fft) {
        return Err(err(format!("implausible mel filter shape {n_mel}x{n_fft}")));
    }
    pos += n_mel as usize * n_fft as usize * 4;
    let n_vocab = i32_at(&mut pos, "vocabulary")?;
    if n_vocab < 0 || n_vocab > hparams.n_vocab {
        return Err(err(format!("vocabulary of {n_vocab} tokens for n_vocab {}", hparams.n_vocab)));
    }
    for i in 0..n_vocab {
        let len = i32_at(&mut pos, "vocabulary")?;
        if !(0..=1024).contains(&len) {
            return Err(err(format!("token {i} has length {len}")));
        }
        pos += len as usize;
    }
    let mut tensors = 0;
    while pos < buf.len() {
        let n_dims = i32_at(&mut pos, "tensor header")?;
        let name_len = i32_at(&mut pos, "tensor header")?;
        let ttype = i32_at(&mut pos, "tensor header")?;
        if !(1..=4).contains(&n_dims) || !(1..=256).contains(&name_len) {
            return Err(err(format!("bad tensor header at byte {pos} (dims {n_dims}, name length {name_len})")));
        }
        let mut elems = 1usize;
        for _ in 0..n_dims {
            let d = i32_at(&mut pos, "tensor dims")?;
            if d <= 0 {
                return Err(err(format!("tensor dimension {d} at byte {pos}")));
            }
            elems = elems.saturating_mul(d as usize);
        }
        let name = buf
            .get(pos..pos + name_len as usize)
            .ok_or_else(|| err(format!("truncated in a tensor name at byte {pos}")))?;
        let name = String::from_utf8_lossy(name).to_string();
        pos += name_len as usize;
        let (bytes, per) = type_size(ttype).ok_or_else(|| err(format!("tensor {name}: unknown type {ttype}")))?;
        let size = elems / per * bytes;
        if pos + size > buf.len() {
            return Err(err(format!("tensor {name} truncated: needs {size} bytes, {} left", buf.len() - pos)));
        }
        pos += size;
        tensors += 1;
    }
    if tensors == 0 {
        return Err(err("no tensors".into()));
    }
    Ok(GgmlSummary { hparams, vocab: n_vocab as usize, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(q: Quantization, x: &[f32]) -> Vec<f32> {
        let mut buf = Vec::new();
        match q {
            Quantization::Q8_0 => quantize_q8_0(x, &mut buf),
            Quantization::Q5_1 => quantize_q5_1(x, &mut buf),
        }
        let (bytes, per) = type_size(q.tensor_type() as i32).unwrap();
        assert_eq!((buf.len(), per), (bytes, QK));
        dequantize_block(q.tensor_type(), &buf)
    }

    #[test]
    fn quantised_blocks_round_trip_within_their_step() {
        let x: Vec<f32> = (0..QK).map(|i| ((i as f32) * 0.37).sin() * 0.8 - 0.1).collect();
        for (q, levels) in [(Quantization::Q8_0, 254.0), (Quantization::Q5_1, 31.0)] {
            let y = roundtrip(q, &x);
            let range = 1.6f32;
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= range / levels, "{q:?}: {a} vs {b}");
            }
        }
        // A block of zeros stays zeros (no division by zero).
        assert!(roundtrip(Quantization::Q8_0, &[0.0; QK]).iter().all(|v| *v == 0.0));
        assert!(roundtrip(Quantization::Q5_1, &[0.0; QK]).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn quantised_tensor_rows_must_be_whole_blocks() {
        let h = HParams {
            n_vocab: 4,
            n_audio_ctx: 1,
            n_audio_state: 1,
            n_audio_head: 1,
            n_audio_layer: 1,
            n_text_ctx: 1,
            n_text_state: 1,
            n_text_head: 1,
            n_text_layer: 1,
            n_mels: 1,
            ftype: 2007,
        };
        let mut w = Writer::new(Vec::new(), &h, &[0.0], 1, &[b"a".to_vec()]).unwrap();
        assert!(w.tensor("x", &[2, 31], TensorType::Q8_0, &[0.0; 62]).is_err());
        w.tensor("y", &[2, 64], TensorType::Q8_0, &[0.5; 128]).unwrap();
        let file = w.finish().unwrap();
        let s = check(&file).unwrap();
        assert_eq!((s.tensors, s.hparams.ftype), (1, 2007));
    }
}
