//! Reader for CTranslate2 `model.bin` (format version 6), as faster-whisper ships it.
//! Pure: bytes in, named tensors out.

use std::collections::BTreeMap;

use crate::asr::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Type {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2Type {
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Ct2Type::F32,
            1 => Ct2Type::I8,
            2 => Ct2Type::I16,
            3 => Ct2Type::I32,
            4 => Ct2Type::F16,
            5 => Ct2Type::BF16,
            _ => return None,
        })
    }

    pub fn size(&self) -> usize {
        match self {
            Ct2Type::I8 => 1,
            Ct2Type::I16 | Ct2Type::F16 | Ct2Type::BF16 => 2,
            Ct2Type::F32 | Ct2Type::I32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ct2Var<'a> {
    pub dims: Vec<usize>,
    pub dtype: Ct2Type,
    pub data: &'a [u8],
}

impl Ct2Var<'_> {
    /// Values as f32 (float types only).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self.dtype {
            Ct2Type::F32 => {
                Some(self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            Ct2Type::F16 => {
                Some(self.data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            Ct2Type::BF16 => {
                Some(self.data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            _ => None,
        }
    }

    /// A scalar integer (e.g. `encoder/num_heads`).
    pub fn scalar_int(&self) -> Option<i64> {
        if !self.dims.is_empty() {
            return None;
        }
        match self.dtype {
            Ct2Type::I8 => self.data.first().map(|&b| b as i8 as i64),
            Ct2Type::I16 => Some(i16::from_le_bytes(self.data.get(..2)?.try_into().ok()?) as i64),
            Ct2Type::I32 => Some(i32::from_le_bytes(self.data.get(..4)?.try_into().ok()?) as i64),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Ct2Model<'a> {
    pub spec: String,
    pub vars: BTreeMap<String, Ct2Var<'a>>,
    /// alias -> target
    pub aliases: BTreeMap<String, String>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            ModelError::Format(format!("CTranslate2 model truncated at byte {} (wanted {n} more)", self.pos))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ModelError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn name(&mut self) -> Result<String, ModelError> {
        let n = self.u16()? as usize;
        let raw = self.take(n)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| ModelError::Format("variable name is not UTF-8".into()))
    }
}

pub fn parse(buf: &[u8]) -> Result<Ct2Model<'_>, ModelError> {
    let mut c = Cursor { buf, pos: 0 };
    let version = c.u32()?;
    if version != 6 {
        return Err(ModelError::Format(format!("CTranslate2 model.bin version {version}, expected 6")));
    }
    let spec = c.name()?;
    let _revision = c.u32()?;
    let count = c.u32()? as usize;
    if count > 100_000 {
        return Err(ModelError::Format(format!("implausible variable count {count}")));
    }
    let mut vars = BTreeMap::new();
    for _ in 0..count {
        let name = c.name()?;
        let rank = c.u8()? as usize;
        if rank > 8 {
            return Err(ModelError::Format(format!("{name}: rank {rank}")));
        }
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(c.u32()? as usize);
        }
        let code = c.u8()?;
        let dtype =
            Ct2Type::from_code(code).ok_or_else(|| ModelError::Format(format!("{name}: unknown dtype {code}")))?;
        let nbytes = c.u32()? as usize;
        let elems: usize = dims.iter().product();
        if elems.checked_mul(dtype.size()) != Some(nbytes) {
            return Err(ModelError::Format(format!("{name}: {nbytes} bytes for shape {dims:?} of {dtype:?}")));
        }
        let data = c.take(nbytes)?;
        vars.insert(name, Ct2Var { dims, dtype, data });
    }
    let mut aliases = BTreeMap::new();
    if c.pos < buf.len() {
        let n = c.u32()? as usize;
        for _ in 0..n.min(100_000) {
            let a = c.name()?;
            let t = c.name()?;
            aliases.insert(a, t);
        }
    }
    Ok(Ct2Model { spec, vars, aliases })
}
