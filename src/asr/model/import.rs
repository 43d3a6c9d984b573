//! `earshot model import-ct2`: converts a CTranslate2 (faster-whisper) Whisper model
//! directory (`model.bin`, `vocabulary.txt`) into the ggml file whisper.cpp loads.
//! Pure file-format work; facts in docs/model-import.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::asr::model::ct2::Ct2Model;
use crate::asr::model::ggml::{HParams, Quantization, TensorType};
use crate::asr::model::{ct2, ggml};
use crate::asr::{mel, ModelError};

#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub out: PathBuf,
    pub hparams: HParams,
    pub tensors: usize,
    pub vocab_written: usize,
    pub multilingual: bool,
    pub bytes: u64,
    pub quantize: Option<Quantization>,
}

/// GPT-2's byte-level alphabet, reversed: the character each byte was shown as -> the byte.
fn byte_decoder() -> BTreeMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter().zip(cs).map(|(b, c)| (char::from_u32(c).expect("valid code point"), b as u8)).collect()
}

/// Decodes one vocabulary line from GPT-2's byte-level form to raw bytes.
pub fn token_bytes(token: &str, dec: &BTreeMap<char, u8>) -> Result<Vec<u8>, ModelError> {
    token
        .chars()
        .map(|c| {
            dec.get(&c)
                .copied()
                .ok_or_else(|| ModelError::Format(format!("token {token:?}: {c:?} is not byte-level BPE")))
        })
        .collect()
}

struct Mapper<'a> {
    m: &'a Ct2Model<'a>,
}

impl<'a> Mapper<'a> {
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let name = self.m.aliases.get(name).map(String::as_str).unwrap_or(name);
        let v = self.m.vars.get(name).ok_or_else(|| ModelError::Format(format!("missing variable {name}")))?;
        let vals = v.to_f32().ok_or_else(|| {
            ModelError::Format(format!("{name}: {:?} weights are not supported (float only)", v.dtype))
        })?;
        Ok((v.dims.clone(), vals))
    }

    fn scalar(&self, name: &str) -> Option<i64> {
        self.m.vars.get(name).and_then(|v| v.scalar_int())
    }

    fn layers(&self, side: &str) -> usize {
        let prefix = format!("{side}/layer_");
        self.m
            .vars
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.split('/').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    }
}

/// What to write: f16 weights (as the official files), or quantised ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub quantize: Option<Quantization>,
}

fn ttype_for(name: &str, dims: &[usize], quantize: Option<Quantization>) -> TensorType {
    let small = dims.len() < 2
        || name.ends_with("conv1.bias")
        || name.ends_with("conv2.bias")
        || name.ends_with("positional_embedding");
    match (small, quantize) {
        (true, _) => TensorType::F32,
        // whisper.cpp's quantize tool: 2-D weights only (conv kernels are 3-D, stay f16).
        (false, Some(q)) if dims.len() == 2 => q.tensor_type(),
        (false, _) => TensorType::F16,
    }
}

/// `model.bin`, or a model split over `model.bin.part1`, `model.bin.part2`, …
/// (how some packages ship one larger than an index's file limit), joined in order.
fn read_model_bin(dir: &Path) -> Result<(PathBuf, Vec<u8>), ModelError> {
    let whole = dir.join("model.bin");
    if whole.exists() {
        let bin = std::fs::read(&whole).map_err(|source| ModelError::Io { path: whole.clone(), source })?;
        return Ok((whole, bin));
    }
    let mut bin = Vec::new();
    let mut n = 1;
    loop {
        let part = dir.join(format!("model.bin.part{n}"));
        if !part.exists() {
            break;
        }
        let mut f = std::fs::File::open(&part).map_err(|source| ModelError::Io { path: part.clone(), source })?;
        std::io::Read::read_to_end(&mut f, &mut bin).map_err(|source| ModelError::Io { path: part.clone(), source })?;
        n += 1;
    }
    if n == 1 {
        return Err(ModelError::Io {
            path: whole,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.bin (nor model.bin.part1, …) in this directory",
            ),
        });
    }
    Ok((whole, bin))
}

/// A tensor's shape (numpy order) and values.
type Shaped = (Vec<usize>, Vec<f32>);
type Out = Vec<(String, Vec<usize>, Vec<f32>)>;

fn push(out: &mut Out, name: String, dims: Vec<usize>, vals: Vec<f32>) {
    out.push((name, dims, vals));
}

/// Splits a weight fused by rows into `parts` equal pieces.
fn split_rows(dims: &[usize], vals: &[f32], parts: usize) -> Result<Vec<Shaped>, ModelError> {
    if dims.is_empty() || dims[0] % parts != 0 {
        return Err(ModelError::Format(format!("cannot split shape {dims:?} in {parts}")));
    }
    let rows = dims[0] / parts;
    let per = vals.len() / parts;
    Ok((0..parts)
        .map(|i| {
            let mut d = dims.to_vec();
            d[0] = rows;
            (d, vals[i * per..(i + 1) * per].to_vec())
        })
        .collect())
}

fn map_weights(map: &Mapper<'_>) -> Result<Out, ModelError> {
    let mut out = Out::new();
    let ln = |out: &mut Out, src: &str, dst: &str| -> Result<(), ModelError> {
        let (d, v) = map.get(&format!("{src}/gamma"))?;
        push(out, format!("{dst}.weight"), d, v);
        let (d, v) = map.get(&format!("{src}/beta"))?;
        push(out, format!("{dst}.bias"), d, v);
        Ok(())
    };
    let lin = |out: &mut Out, src: &str, dst: &str| -> Result<(), ModelError> {
        let (d, v) = map.get(&format!("{src}/weight"))?;
        push(out, format!("{dst}.weight"), d, v);
        let (d, v) = map.get(&format!("{src}/bias"))?;
        push(out, format!("{dst}.bias"), d, v);
        Ok(())
    };
    // Fused projections: whisper.cpp has no key bias (it is all zeros in Whisper).
    let fused = |out: &mut Out, src: &str, dst: &str, names: &[&str]| -> Result<(), ModelError> {
        let (d, v) = map.get(&format!("{src}/weight"))?;
        let (bd, bv) = map.get(&format!("{src}/bias"))?;
        let ws = split_rows(&d, &v, names.len())?;
        let bs = split_rows(&bd, &bv, names.len())?;
        for ((n, (wd, wv)), (bdims, bvals)) in names.iter().zip(ws).zip(bs) {
            push(out, format!("{dst}.{n}.weight"), wd, wv);
            if *n != "key" {
                push(out, format!("{dst}.{n}.bias"), bdims, bvals);
            }
        }
        Ok(())
    };
    for conv in ["conv1", "conv2"] {
        let (d, v) = map.get(&format!("encoder/{conv}/weight"))?;
        push(&mut out, format!("encoder.{conv}.weight"), d, v);
        let (d, v) = map.get(&format!("encoder/{conv}/bias"))?;
        push(&mut out, format!("encoder.{conv}.bias"), vec![d[0], 1], v);
    }
    let (d, v) = map.get("encoder/position_encodings/encodings")?;
    push(&mut out, "encoder.positional_embedding".into(), d, v);
    for i in 0..map.layers("encoder") {
        let (s, t) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        ln(&mut out, &format!("{s}/self_attention/layer_norm"), &format!("{t}.attn_ln"))?;
        fused(&mut out, &format!("{s}/self_attention/linear_0"), &format!("{t}.attn"), &["query", "key", "value"])?;
        lin(&mut out, &format!("{s}/self_attention/linear_1"), &format!("{t}.attn.out"))?;
        ln(&mut out, &format!("{s}/ffn/layer_norm"), &format!("{t}.mlp_ln"))?;
        lin(&mut out, &format!("{s}/ffn/linear_0"), &format!("{t}.mlp.0"))?;
        lin(&mut out, &format!("{s}/ffn/linear_1"), &format!("{t}.mlp.2"))?;
    }
    ln(&mut out, "encoder/layer_norm", "encoder.ln_post")?;
    let (d, v) = map.get("decoder/embeddings/weight")?;
    push(&mut out, "decoder.token_embedding.weight".into(), d, v);
    let (d, v) = map.get("decoder/position_encodings/encodings")?;
    push(&mut out, "decoder.positional_embedding".into(), d, v);
    for i in 0..map.layers("decoder") {
        let (s, t) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        ln(&mut out, &format!("{s}/self_attention/layer_norm"), &format!("{t}.attn_ln"))?;
        fused(&mut out, &format!("{s}/self_attention/linear_0"), &format!("{t}.attn"), &["query", "key", "value"])?;
        lin(&mut out, &format!("{s}/self_attention/linear_1"), &format!("{t}.attn.out"))?;
        ln(&mut out, &format!("{s}/attention/layer_norm"), &format!("{t}.cross_attn_ln"))?;
        lin(&mut out, &format!("{s}/attention/linear_0"), &format!("{t}.cross_attn.query"))?;
        fused(&mut out, &format!("{s}/attention/linear_1"), &format!("{t}.cross_attn"), &["key", "value"])?;
        lin(&mut out, &format!("{s}/attention/linear_2"), &format!("{t}.cross_attn.out"))?;
        ln(&mut out, &format!("{s}/ffn/layer_norm"), &format!("{t}.mlp_ln"))?;
        lin(&mut out, &format!("{s}/ffn/linear_0"), &format!("{t}.mlp.0"))?;
        lin(&mut out, &format!("{s}/ffn/linear_1"), &format!("{t}.mlp.2"))?;
    }
    ln(&mut out, "decoder/layer_norm", "decoder.ln")?;
    Ok(out)
}

/// Converts `dir` (CTranslate2 Whisper model) to an f16 ggml file at `out`.
pub fn import_ct2(dir: &Path, out: &Path) -> Result<ImportSummary, ModelError> {
    import_ct2_with(dir, out, ImportOptions::default())
}

/// Converts `dir` (CTranslate2 Whisper model) to a ggml file at `out`.
pub fn import_ct2_with(dir: &Path, out: &Path, opts: ImportOptions) -> Result<ImportSummary, ModelError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| ModelError::Io { path: p, source: e }
    };
    let (bin_path, bin) = read_model_bin(dir)?;
    let model = ct2::parse(&bin).map_err(|e| e.in_file(&bin_path))?;
    if !model.spec.starts_with("WhisperSpec") {
        return Err(ModelError::Format(format!(
            "{}: spec {:?} is not a Whisper model",
            bin_path.display(),
            model.spec
        )));
    }
    let vocab_path = dir.join("vocabulary.txt");
    let vocab_text = std::fs::read_to_string(&vocab_path).map_err(io(&vocab_path))?;
    let lines: Vec<&str> = vocab_text.lines().collect();
    let eot = lines
        .iter()
        .position(|l| *l == "<|endoftext|>")
        .ok_or_else(|| ModelError::Format(format!("{}: no <|endoftext|> token", vocab_path.display())))?;
    let dec = byte_decoder();
    // whisper.cpp adds the special and timestamp tokens itself.
    let vocab: Vec<Vec<u8>> = lines[..eot].iter().map(|t| token_bytes(t, &dec)).collect::<Result<_, _>>()?;
    let map = Mapper { m: &model };
    let weights = map_weights(&map).map_err(|e| e.in_file(&bin_path))?;
    let dims_of =
        |name: &str| weights.iter().find(|(n, _, _)| n == name).map(|(_, d, _)| d.clone()).unwrap_or_default();
    let conv1 = dims_of("encoder.conv1.weight");
    let enc_pos = dims_of("encoder.positional_embedding");
    let dec_pos = dims_of("decoder.positional_embedding");
    let emb = dims_of("decoder.token_embedding.weight");
    let n_audio_state = conv1[0] as i32;
    let n_text_state = emb[1] as i32;
    let hparams = HParams {
        n_vocab: emb[0] as i32,
        n_audio_ctx: enc_pos[0] as i32,
        n_audio_state,
        n_audio_head: map.scalar("encoder/num_heads").map_or(n_audio_state / 64, |h| h as i32),
        n_audio_layer: map.layers("encoder") as i32,
        n_text_ctx: dec_pos[0] as i32,
        n_text_state,
        n_text_head: map.scalar("decoder/num_heads").map_or(n_text_state / 64, |h| h as i32),
        n_text_layer: map.layers("decoder") as i32,
        n_mels: conv1[1] as i32,
        ftype: opts.quantize.map_or(1, Quantization::ftype),
    };
    let n_fft = 400;
    let filters = mel::filters(16000, n_fft, hparams.n_mels as usize);
    let tmp = out.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut w = ggml::Writer::new(std::io::BufWriter::new(file), &hparams, &filters, n_fft / 2 + 1, &vocab)
        .map_err(io(&tmp))?;
    for (name, dims, vals) in &weights {
        w.tensor(name, dims, ttype_for(name, dims, opts.quantize), vals).map_err(io(&tmp))?;
    }
    w.finish().map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(ImportSummary {
        out: out.to_path_buf(),
        hparams,
        tensors: weights.len(),
        vocab_written: vocab.len(),
        multilingual: hparams.n_vocab >= 51865,
        bytes,
        quantize: opts.quantize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_decode_to_raw_bytes() {
        let dec = byte_decoder();
        assert_eq!(dec.len(), 256);
        assert_eq!(token_bytes("Ġthe", &dec).unwrap(), b" the");
        assert_eq!(token_bytes("Ċ", &dec).unwrap(), b"\n");
        assert_eq!(token_bytes("hello", &dec).unwrap(), b"hello");
        // "é" in byte-level BPE is the two bytes of its UTF-8 form, shown as "Ã©".
        assert_eq!(token_bytes("Ã©", &dec).unwrap(), "é".as_bytes());
        assert!(token_bytes("\u{4e00}", &dec).is_err());
    }

    #[test]
    fn fused_rows_split_evenly() {
        let parts = split_rows(&[6, 2], &(0..12).map(|v| v as f32).collect::<Vec<_>>(), 3).unwrap();
        assert_eq!(parts[1], (vec![2, 2], vec![4.0, 5.0, 6.0, 7.0]));
        assert!(split_rows(&[5, 2], &[0.0; 10], 3).is_err());
    }
}
