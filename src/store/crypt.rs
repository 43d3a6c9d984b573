//! Encryption at rest: the stored object format and the tenant keyring (pure, no IO).
//!
//! Every object in the store is AES-256-GCM encrypted with its own random 256-bit data
//! key (DEK). The DEK is wrapped (AES-256-GCM) by the tenant's key-encryption key (KEK)
//! of a given version, kept in the keyring. Destroying a tenant's KEKs makes every
//! object of that tenant unreadable wherever a copy lives (crypto-shredding).
//!
//! Object layout (version 1), all integers big-endian:
//!
//! ```text
//! 0   magic "ESHTOBJ1"                         8
//! 8   KEK version                              u32
//! 12  chunk size (plaintext bytes per chunk)   u32
//! 16  nonce prefix (random)                    7
//! 23  wrap nonce (random)                      12
//! 35  wrapped DEK (32 + 16-byte tag)           48
//! 83  chunks: ciphertext + 16-byte tag each; every chunk but the last holds
//!     exactly `chunk size` plaintext bytes, the last 0..=chunk size
//! ```
//!
//! Chunks follow the STREAM construction: chunk `i` uses nonce
//! `prefix ‖ i (u32) ‖ last (u8)` and the header (bytes 0..83) as associated data, so
//! a changed byte, a reordered, dropped or duplicated chunk, a cut after any chunk, and
//! a header moved onto another object's body all fail authentication. The DEK wrap
//! binds the object's context (tenant and store path), so an object copied under
//! another call's name does not decrypt either. Chunks decrypt independently, which
//! gives ranged reads without reading the whole object.

use std::collections::BTreeMap;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MAGIC: &[u8; 8] = b"ESHTOBJ1";
pub const HEADER_LEN: usize = 83;
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk: 64 KiB (2 s of 16 kHz stereo audio).
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
const MAX_CHUNK: u32 = 16 * 1024 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptError {
    #[error("not an Earshot encrypted object (bad magic)")]
    BadMagic,
    #[error("encrypted object too short: {0} bytes")]
    Short(u64),
    #[error("bad object header: {0}")]
    BadHeader(&'static str),
    #[error("no key {version} for tenant {tenant:?} in the keyring")]
    KeyMissing { tenant: String, version: u32 },
    #[error("key {version} of tenant {tenant:?} was destroyed: the data it protected is unreadable")]
    KeyDestroyed { tenant: String, version: u32 },
    #[error("tenant {0:?} has no keys (destroyed or never created): its data is unreadable")]
    NoTenantKeys(String),
    #[error("data key does not unwrap: wrong key, or the object was moved or tampered with")]
    Unwrap,
    #[error("chunk {0} failed authentication: tampered, reordered or truncated object")]
    Chunk(u64),
    #[error("object truncated: its last chunk is missing")]
    Truncated,
    #[error("keyring: {0}")]
    Keyring(String),
}

/// A 256-bit key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn random() -> Key {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("operating system random source");
        Key(k)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Option<Key> {
        let v = base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?;
        Some(Key(v.try_into().ok()?))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0).expect("32-byte key")
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("operating system random source");
    b
}

fn seal(cipher: &Aes256Gcm, nonce: &[u8; 12], aad: &[u8], buf: &mut Vec<u8>) {
    let n = aes_gcm::aead::Nonce::<Aes256Gcm>::from(*nonce);
    cipher.encrypt_in_place(&n, aad, buf).expect("AES-GCM encrypt within limits");
}

fn open(cipher: &Aes256Gcm, nonce: &[u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> bool {
    let n = aes_gcm::aead::Nonce::<Aes256Gcm>::from(*nonce);
    cipher.decrypt_in_place(&n, aad, buf).is_ok()
}

fn chunk_nonce(prefix: &[u8; 7], index: u64, last: bool) -> Result<[u8; 12], CryptError> {
    let i = u32::try_from(index).map_err(|_| CryptError::BadHeader("too many chunks"))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&i.to_be_bytes());
    n[11] = u8::from(last);
    Ok(n)
}

fn wrap_aad(header_prefix: &[u8], context: &str) -> Vec<u8> {
    let mut aad = b"earshot-dek\0".to_vec();
    aad.extend_from_slice(header_prefix);
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// Streaming encryption of one object. Feed plaintext in any pieces with `push`;
/// ciphertext comes out a chunk at a time; `finish` writes the last chunk.
pub struct Encryptor {
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; 7],
    chunk: usize,
    buf: Vec<u8>,
    index: u64,
}

impl Encryptor {
    /// `context` names the object (tenant and path); reading it back needs the same.
    /// Returns the encryptor and the header, which starts the object.
    pub fn new(kek: &Key, kek_version: u32, context: &str, chunk_size: u32) -> (Encryptor, Vec<u8>) {
        let chunk_size = chunk_size.clamp(1, MAX_CHUNK);
        let dek = Key::random();
        let prefix: [u8; 7] = random();
        let wrap_nonce: [u8; 12] = random();
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&kek_version.to_be_bytes());
        header[12..16].copy_from_slice(&chunk_size.to_be_bytes());
        header[16..23].copy_from_slice(&prefix);
        header[23..35].copy_from_slice(&wrap_nonce);
        let mut wrapped = dek.0.to_vec();
        seal(&kek.cipher(), &wrap_nonce, &wrap_aad(&header[..35], context), &mut wrapped);
        header[35..83].copy_from_slice(&wrapped);
        let enc =
            Encryptor { cipher: dek.cipher(), header, prefix, chunk: chunk_size as usize, buf: Vec::new(), index: 0 };
        (enc, header.to_vec())
    }

    fn emit(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) {
        let mut b = plain.to_vec();
        let nonce = chunk_nonce(&self.prefix, self.index, last).expect("object under 2^32 chunks");
        seal(&self.cipher, &nonce, &self.header, &mut b);
        out.extend_from_slice(&b);
        self.index += 1;
    }

    /// Encrypts what completes a chunk; holds back the rest (and one full chunk, which
    /// may turn out to be the last).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.buf.len() == self.chunk {
                let full = std::mem::take(&mut self.buf);
                self.emit(&full, false, out);
                self.buf = full;
                self.buf.clear();
            }
            let take = (self.chunk - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    pub fn finish(mut self, out: &mut Vec<u8>) {
        let rest = std::mem::take(&mut self.buf);
        self.emit(&rest, true, out);
    }
}

/// Encrypts a whole buffer.
pub fn encrypt(kek: &Key, kek_version: u32, context: &str, plain: &[u8]) -> Vec<u8> {
    let (mut enc, mut out) = Encryptor::new(kek, kek_version, context, DEFAULT_CHUNK);
    out.reserve(plain.len() + (plain.len() / DEFAULT_CHUNK as usize + 1) * TAG_LEN);
    enc.push(plain, &mut out);
    enc.finish(&mut out);
    out
}

/// The parsed header of an encrypted object.
#[derive(Debug, Clone)]
pub struct Header {
    bytes: [u8; HEADER_LEN],
    pub kek_version: u32,
    pub chunk_size: u32,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header, CryptError> {
        if bytes.len() < HEADER_LEN {
            return if bytes.len() >= 8 && &bytes[..8] != MAGIC {
                Err(CryptError::BadMagic)
            } else {
                Err(CryptError::Short(bytes.len() as u64))
            };
        }
        if &bytes[..8] != MAGIC {
            return Err(CryptError::BadMagic);
        }
        let kek_version = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
        let chunk_size = u32::from_be_bytes(bytes[12..16].try_into().unwrap());
        if chunk_size == 0 || chunk_size > MAX_CHUNK {
            return Err(CryptError::BadHeader("chunk size"));
        }
        Ok(Header { bytes: bytes[..HEADER_LEN].try_into().unwrap(), kek_version, chunk_size })
    }

    /// Unwraps the object's data key.
    pub fn open(&self, kek: &Key, context: &str) -> Result<ObjectKey, CryptError> {
        let wrap_nonce: [u8; 12] = self.bytes[23..35].try_into().unwrap();
        let mut dek = self.bytes[35..83].to_vec();
        if !open(&kek.cipher(), &wrap_nonce, &wrap_aad(&self.bytes[..35], context), &mut dek) {
            return Err(CryptError::Unwrap);
        }
        let key = Key(dek.try_into().map_err(|_| CryptError::Unwrap)?);
        Ok(ObjectKey {
            cipher: key.cipher(),
            header: self.bytes,
            prefix: self.bytes[16..23].try_into().unwrap(),
            chunk: self.chunk_size,
        })
    }
}

/// Where an object's chunks lie, from its total stored length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub chunks: u64,
    pub plain_len: u64,
    chunk: u64,
}

impl Layout {
    pub fn of(stored_len: u64, chunk_size: u32) -> Result<Layout, CryptError> {
        let body = stored_len.checked_sub(HEADER_LEN as u64).ok_or(CryptError::Short(stored_len))?;
        let stride = chunk_size as u64 + TAG_LEN as u64;
        if body < TAG_LEN as u64 {
            return Err(CryptError::Truncated);
        }
        let chunks = body.div_ceil(stride);
        let last = body - (chunks - 1) * stride;
        if last < TAG_LEN as u64 {
            return Err(CryptError::Truncated);
        }
        Ok(Layout { chunks, plain_len: body - chunks * TAG_LEN as u64, chunk: chunk_size as u64 })
    }

    /// Stored byte range of chunk `i` (from the start of the object).
    pub fn chunk_range(&self, i: u64) -> std::ops::Range<u64> {
        let stride = self.chunk + TAG_LEN as u64;
        let start = HEADER_LEN as u64 + i * stride;
        let len = if i + 1 == self.chunks { self.plain_len - i * self.chunk + TAG_LEN as u64 } else { stride };
        start..start + len
    }

    /// Chunks holding plaintext bytes `range` (clamped to the object).
    pub fn chunks_for(&self, range: std::ops::Range<u64>) -> std::ops::Range<u64> {
        let end = range.end.min(self.plain_len);
        if range.start >= end {
            return 0..0;
        }
        range.start / self.chunk..end.div_ceil(self.chunk)
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk
    }
}

/// An object's unwrapped data key: decrypts its chunks.
pub struct ObjectKey {
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; 7],
    chunk: u32,
}

impl ObjectKey {
    pub fn chunk_size(&self) -> u32 {
        self.chunk
    }

    /// Decrypts chunk `index` in place; `last` says whether it ends the object.
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), CryptError> {
        let nonce = chunk_nonce(&self.prefix, index, last)?;
        if open(&self.cipher, &nonce, &self.header, buf) {
            Ok(())
        } else if last && open(&self.cipher, &chunk_nonce(&self.prefix, index, false)?, &self.header, &mut buf.clone())
        {
            Err(CryptError::Truncated)
        } else {
            Err(CryptError::Chunk(index))
        }
    }

    /// Decrypts a whole stored object (header included) into plaintext.
    pub fn open_all(&self, stored: &[u8]) -> Result<Vec<u8>, CryptError> {
        let layout = Layout::of(stored.len() as u64, self.chunk)?;
        let mut out = Vec::with_capacity(layout.plain_len as usize);
        let mut buf = Vec::new();
        for i in 0..layout.chunks {
            let r = layout.chunk_range(i);
            buf.clear();
            buf.extend_from_slice(&stored[r.start as usize..r.end as usize]);
            self.open_chunk(i, i + 1 == layout.chunks, &mut buf)?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }
}

/// Decrypts a whole object with the keyring.
pub fn decrypt(keyring: &Keyring, tenant: &str, context: &str, stored: &[u8]) -> Result<Vec<u8>, CryptError> {
    let header = Header::parse(stored)?;
    let kek = keyring.key(tenant, header.kek_version)?;
    header.open(&kek, context)?.open_all(stored)
}

/// Key-encryption keys per tenant, by version, and the key that names tombstones.
///
/// Stored as TOML (see `earshot keys`); the file is the only copy of the keys, so
/// back it up apart from the data: deleting a version from it makes what that
/// version protected unreadable, backups of the data included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// Keys tombstone names (a keyed hash of the call id), so erased calls stay erased
    /// even after their tenant's keys are gone.
    #[serde(default)]
    pub tombstone_key: Option<String>,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantKeys>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantKeys {
    /// The version new objects use.
    pub active: u32,
    /// Version → base64 key.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Versions destroyed on purpose (crypto-shredding), for a clear error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destroyed: Vec<u32>,
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Keyring, CryptError> {
        let k: Keyring = toml::from_str(text).map_err(|e| CryptError::Keyring(e.message().to_string()))?;
        if let Some(t) = &k.tombstone_key {
            Key::from_base64(t).ok_or_else(|| CryptError::Keyring("tombstone_key: not a base64 256-bit key".into()))?;
        }
        for (tenant, tk) in &k.tenants {
            for (v, key) in &tk.keys {
                v.parse::<u32>().map_err(|_| {
                    CryptError::Keyring(format!("tenants.{tenant}.keys: version {v:?} is not a number"))
                })?;
                Key::from_base64(key).ok_or_else(|| {
                    CryptError::Keyring(format!("tenants.{tenant}.keys.{v}: not a base64 256-bit key"))
                })?;
            }
            if !tk.keys.is_empty() && !tk.keys.contains_key(&tk.active.to_string()) {
                return Err(CryptError::Keyring(format!("tenants.{tenant}.active = {} has no key", tk.active)));
            }
        }
        Ok(k)
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::from(
            "# Earshot keyring: key-encryption keys per tenant. Keep it secret (mode 0600) and back it\n\
             # up apart from the data. Removing a key makes what it protected unreadable everywhere.\n",
        );
        s.push_str(&toml::to_string_pretty(self).expect("keyring serialises"));
        s
    }

    /// The tombstone key, created if missing. True when the keyring changed.
    pub fn ensure_tombstone_key(&mut self) -> bool {
        if self.tombstone_key.is_some() {
            return false;
        }
        self.tombstone_key = Some(Key::random().to_base64());
        true
    }

    pub fn tombstone_key(&self) -> Option<Key> {
        self.tombstone_key.as_deref().and_then(Key::from_base64)
    }

    /// Creates version 1 for a tenant without keys. True when the keyring changed.
    pub fn ensure_tenant(&mut self, tenant: &str) -> bool {
        let tk = self.tenants.entry(tenant.to_string()).or_default();
        if !tk.keys.is_empty() || !tk.destroyed.is_empty() {
            return false;
        }
        tk.active = 1;
        tk.keys.insert("1".into(), Key::random().to_base64());
        true
    }

    /// A new active version for the tenant; old versions stay for reading. Returns it.
    pub fn rotate(&mut self, tenant: &str) -> u32 {
        let tk = self.tenants.entry(tenant.to_string()).or_default();
        let next =
            tk.keys.keys().filter_map(|v| v.parse::<u32>().ok()).chain(tk.destroyed.iter().copied()).max().unwrap_or(0)
                + 1;
        tk.keys.insert(next.to_string(), Key::random().to_base64());
        tk.active = next;
        next
    }

    /// Destroys every key of the tenant. Returns how many were destroyed.
    pub fn destroy_tenant(&mut self, tenant: &str) -> usize {
        let Some(tk) = self.tenants.get_mut(tenant) else { return 0 };
        let versions: Vec<u32> = tk.keys.keys().filter_map(|v| v.parse().ok()).collect();
        tk.keys.clear();
        tk.destroyed.extend(&versions);
        tk.destroyed.sort_unstable();
        tk.destroyed.dedup();
        versions.len()
    }

    /// The active key of a tenant: (version, key).
    pub fn active(&self, tenant: &str) -> Result<(u32, Key), CryptError> {
        let tk = self
            .tenants
            .get(tenant)
            .filter(|t| !t.keys.is_empty())
            .ok_or_else(|| CryptError::NoTenantKeys(tenant.into()))?;
        Ok((tk.active, self.key(tenant, tk.active)?))
    }

    pub fn key(&self, tenant: &str, version: u32) -> Result<Key, CryptError> {
        let tk = self.tenants.get(tenant).ok_or_else(|| CryptError::NoTenantKeys(tenant.into()))?;
        if tk.destroyed.contains(&version) {
            return Err(CryptError::KeyDestroyed { tenant: tenant.into(), version });
        }
        let b64 = tk
            .keys
            .get(&version.to_string())
            .ok_or_else(|| CryptError::KeyMissing { tenant: tenant.into(), version })?;
        Key::from_base64(b64).ok_or_else(|| CryptError::Keyring(format!("tenants.{tenant}.keys.{version}: bad key")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        let mut k = Keyring::default();
        k.ensure_tombstone_key();
        k.ensure_tenant("acme");
        k
    }

    fn enc_chunks(ring: &Keyring, plain: &[u8], chunk: u32) -> Vec<u8> {
        let (v, kek) = ring.active("acme").unwrap();
        let (mut e, mut out) = Encryptor::new(&kek, v, "acme/x", chunk);
        for piece in plain.chunks(7) {
            e.push(piece, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn round_trips_at_every_length_around_chunk_edges() {
        let ring = ring();
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 64, 100] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let stored = enc_chunks(&ring, &plain, 16);
            let layout = Layout::of(stored.len() as u64, 16).unwrap();
            assert_eq!(layout.plain_len, len as u64);
            assert_eq!(decrypt(&ring, "acme", "acme/x", &stored).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn detects_tampering_truncation_reordering_and_moves() {
        let ring = ring();
        let plain: Vec<u8> = (0..100u8).collect();
        let stored = enc_chunks(&ring, &plain, 16);
        let stride = 16 + TAG_LEN;
        // flipped byte in a chunk
        let mut t = stored.clone();
        t[HEADER_LEN + 3] ^= 1;
        assert_eq!(decrypt(&ring, "acme", "acme/x", &t), Err(CryptError::Chunk(0)));
        // cut at a chunk boundary: the new last chunk was not written as last
        let cut = &stored[..HEADER_LEN + 2 * stride];
        assert_eq!(decrypt(&ring, "acme", "acme/x", cut), Err(CryptError::Truncated));
        // cut mid-chunk
        assert!(decrypt(&ring, "acme", "acme/x", &stored[..stored.len() - 5]).is_err());
        // chunks 0 and 1 swapped
        let mut r = stored.clone();
        let (a, b) = (HEADER_LEN..HEADER_LEN + stride, HEADER_LEN + stride..HEADER_LEN + 2 * stride);
        let c0 = stored[a.clone()].to_vec();
        r[a.start..a.end].copy_from_slice(&stored[b.clone()]);
        r[b.start..b.end].copy_from_slice(&c0);
        assert_eq!(decrypt(&ring, "acme", "acme/x", &r), Err(CryptError::Chunk(0)));
        // header tampered
        let mut h = stored.clone();
        h[13] ^= 1;
        assert!(decrypt(&ring, "acme", "acme/x", &h).is_err());
        // object moved under another name
        assert_eq!(decrypt(&ring, "acme", "acme/y", &stored), Err(CryptError::Unwrap));
        // not ours
        assert_eq!(decrypt(&ring, "acme", "acme/x", b"RIFF....WAVEfmt "), Err(CryptError::BadMagic));
    }

    #[test]
    fn rotation_keeps_old_objects_readable_and_destruction_shreds() {
        let mut ring = ring();
        let (v1, k1) = ring.active("acme").unwrap();
        let old = encrypt(&k1, v1, "acme/a", b"old words");
        assert_eq!(ring.rotate("acme"), 2);
        let (v2, k2) = ring.active("acme").unwrap();
        assert_eq!(v2, 2);
        let new = encrypt(&k2, v2, "acme/b", b"new words");
        let ring = Keyring::parse(&ring.to_toml()).unwrap();
        assert_eq!(decrypt(&ring, "acme", "acme/a", &old).unwrap(), b"old words");
        assert_eq!(decrypt(&ring, "acme", "acme/b", &new).unwrap(), b"new words");
        let mut ring = ring;
        assert_eq!(ring.destroy_tenant("acme"), 2);
        let ring = Keyring::parse(&ring.to_toml()).unwrap();
        assert_eq!(
            decrypt(&ring, "acme", "acme/a", &old),
            Err(CryptError::KeyDestroyed { tenant: "acme".into(), version: 1 })
        );
        assert!(matches!(ring.active("acme"), Err(CryptError::NoTenantKeys(_))));
        assert_eq!(decrypt(&ring, "other", "other/a", &old), Err(CryptError::NoTenantKeys("other".into())));
    }

    #[test]
    fn ranged_reads_decrypt_only_the_chunks_needed() {
        let ring = ring();
        let plain: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let stored = enc_chunks(&ring, &plain, 64);
        let header = Header::parse(&stored).unwrap();
        let key = header.open(&ring.key("acme", header.kek_version).unwrap(), "acme/x").unwrap();
        let layout = Layout::of(stored.len() as u64, header.chunk_size).unwrap();
        let want = 100..300u64;
        let chunks = layout.chunks_for(want.clone());
        assert_eq!(chunks, 1..5);
        let mut got = Vec::new();
        for i in chunks.clone() {
            let r = layout.chunk_range(i);
            let mut b = stored[r.start as usize..r.end as usize].to_vec();
            key.open_chunk(i, i + 1 == layout.chunks, &mut b).unwrap();
            got.extend_from_slice(&b);
        }
        let off = (want.start - chunks.start * 64) as usize;
        assert_eq!(&got[off..off + 200], &plain[100..300]);
    }

    #[test]
    fn keyring_errors_name_the_key() {
        assert!(Keyring::parse("[tenants.a]\nactive = 1\nkeys = { \"1\" = \"short\" }")
            .unwrap_err()
            .to_string()
            .contains("tenants.a.keys.1"));
        assert!(Keyring::parse(
            "[tenants.a]\nactive = 2\nkeys = { \"1\" = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\" }"
        )
        .unwrap_err()
        .to_string()
        .contains("active = 2"));
        assert!(Keyring::parse("bogus = 1").is_err());
    }
}
