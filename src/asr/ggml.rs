//! The whisper.cpp ggml model file: writing it from imported weights, and checking a
//! file before whisper.cpp sees it (so a corrupt or truncated file is a clear error
//! naming the file, never an abort inside C++).

use std::io::{self, Write};

use super::ModelError;

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

/// Tensor element type in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32 = 0,
    F16 = 1,
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
