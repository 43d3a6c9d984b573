//! The object store: where finished calls live, encrypted, on the local filesystem or
//! any S3-compatible server (through `object_store`): putting and getting objects
//! (whole or by range), listing calls, `.meta` objects, and the spool scan.
//!
//! Calls are written to the spool (`store::StoreLayout`, plain files, crash-safe) while
//! they run; the uploader (`store::uploader`) encrypts each file with the tenant's key
//! and puts it here at `<tenant>/<yyyy>/<mm>/<dd>/<call_id>/<file>`. Next to the calls:
//! `.meta/holds/<tenant>/<call_id>` (legal holds) and `.meta/tombstones/<tenant>/<hash>`
//! (calls deleted for good: a keyed hash of the call id, so the id itself is not kept).
//!
//! Reading looks in the spool first (a call not yet uploaded), then in the store.
//!
//! Around it, each in its own file and re-exported here: the keyring
//! (`store::keyring`), holds and tombstones (`store::holds`, more `impl Store`), the
//! blocking reader (`store::reader`) and the retention sweep (`store::sweep`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::call::CallId;
use crate::config::{StorageBackend, StorageConfig};
use crate::store::crypt;
use crate::store::crypt::{CryptError, Encryptor, Header, Keyring, Layout, HEADER_LEN};
use crate::store::manifest::Manifest;
use crate::store::spool::{Recording, StoreLayout, AUDIO_FILE};

pub use crate::store::keyring::{KeyringHandle, KEYRING_ENV};
pub use crate::store::reader::StoreReader;
pub use crate::store::sweep::{sweep, SweepCache, SweepOptions, SweepReport};

pub const META: &str = ".meta";
pub const SEALED: &str = ".sealed";
/// Spans of the recording to silence before upload (redaction): `[{channel, start_ms, end_ms}]`.
pub const REDACT_AUDIO: &str = ".redact-audio.json";
/// Plaintext read and encrypted per step when uploading a file.
const UPLOAD_BLOCK: usize = 1 << 20;

pub(super) use crate::store::error::io_err;
pub use crate::store::error::StorageError;

/// A call's place in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallRef {
    pub tenant: String,
    pub call_id: CallId,
}

impl CallRef {
    pub fn prefix(&self) -> String {
        StoreLayout::relative_call_dir(&self.tenant, self.call_id).to_string_lossy().into_owned()
    }

    pub fn object(&self, name: &str) -> ObjPath {
        ObjPath::from(format!("{}/{name}", self.prefix()))
    }
}

/// Finished calls: the object store, the keyring and the spool.
#[derive(Clone)]
pub struct Store {
    pub(super) backend: Arc<dyn ObjectStore>,
    pub(super) keys: Arc<KeyringHandle>,
    spool: StoreLayout,
    describe: String,
}

impl Store {
    /// Opens the configured backend and keyring (created if missing).
    pub fn open(cfg: &StorageConfig) -> Result<Store, StorageError> {
        let keys = Arc::new(KeyringHandle::open(&cfg.keyring_path(), true)?);
        let (backend, describe): (Arc<dyn ObjectStore>, String) = match cfg.backend {
            StorageBackend::Local => {
                std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&cfg.dir)?.with_automatic_cleanup(true);
                (Arc::new(fs), format!("local {}", cfg.dir.display()))
            }
            StorageBackend::S3 => {
                let s3 =
                    cfg.s3.as_ref().ok_or_else(|| StorageError::Config("backend s3 without [storage.s3]".into()))?;
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_virtual_hosted_style_request(s3.virtual_hosted)
                    // Our own uploader retries with back-off and keeps the spool; the
                    // client only retries briefly so an outage is seen quickly.
                    .with_retry(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig::default(),
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(10),
                    })
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_allow_http(s3.allow_http)
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(120)),
                    );
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                let describe = format!("s3 {}/{}", s3.endpoint.as_deref().unwrap_or("aws"), s3.bucket);
                (Arc::new(b.build()?), describe)
            }
        };
        Ok(Store { backend, keys, spool: StoreLayout::new(cfg.spool_dir()), describe })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn keys(&self) -> &Arc<KeyringHandle> {
        &self.keys
    }

    pub fn spool(&self) -> &StoreLayout {
        &self.spool
    }

    pub(super) fn keyring(&self) -> Result<Arc<Keyring>, StorageError> {
        self.keys.current()
    }

    fn crypt_err(path: &ObjPath) -> impl FnOnce(CryptError) -> StorageError + '_ {
        move |detail| StorageError::Crypt { path: path.to_string(), detail }
    }

    /// Encrypts `plain` for `tenant` and stores it at `path`.
    pub async fn put_encrypted(&self, tenant: &str, path: &ObjPath, plain: &[u8]) -> Result<u64, StorageError> {
        let (v, kek) = self.keyring()?.active(tenant).map_err(Self::crypt_err(path))?;
        let ct = crypt::encrypt(&kek, v, path.as_ref(), plain);
        let n = ct.len() as u64;
        self.backend.put(path, PutPayload::from(ct)).await?;
        Ok(n)
    }

    /// Streams a local file into the store, encrypted, without holding it in memory.
    pub async fn put_encrypted_file(&self, tenant: &str, path: &ObjPath, local: &Path) -> Result<u64, StorageError> {
        let (v, kek) = self.keyring()?.active(tenant).map_err(Self::crypt_err(path))?;
        let (enc, header) = Encryptor::new(&kek, v, path.as_ref(), crypt::DEFAULT_CHUNK);
        let file = std::fs::File::open(local).map_err(io_err(local))?;
        let mut w = object_store::buffered::BufWriter::new(self.backend.clone(), path.clone());
        w.write_all(&header).await.map_err(io_err(local))?;
        let mut state = Some((enc, file));
        let mut total = header.len() as u64;
        loop {
            let (mut enc, mut file) = state.take().expect("state");
            let local2 = local.to_path_buf();
            // Reading and encrypting are CPU and disk work: off the async threads.
            let (enc, file, out, eof) = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut buf = vec![0u8; UPLOAD_BLOCK];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(StorageError::Io { path: local2, source: e }),
                    }
                }
                let mut out = Vec::with_capacity(filled + 64);
                enc.push(&buf[..filled], &mut out);
                let eof = filled < buf.len();
                Ok((enc, file, out, eof))
            })
            .await
            .map_err(|e| StorageError::Corrupt(local.display().to_string(), e.to_string()))??;
            total += out.len() as u64;
            w.write_all(&out).await.map_err(io_err(local))?;
            if eof {
                let mut tail = Vec::new();
                enc.finish(&mut tail);
                total += tail.len() as u64;
                w.write_all(&tail).await.map_err(io_err(local))?;
                break;
            }
            state = Some((enc, file));
        }
        if let Err(e) = w.shutdown().await {
            w.abort().await.ok();
            return Err(StorageError::Io { path: local.into(), source: e });
        }
        Ok(total)
    }

    pub(super) async fn get_object(&self, tenant: &str, path: &ObjPath) -> Result<Option<Vec<u8>>, StorageError> {
        let stored = match self.backend.get(path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ring = self.keyring()?;
        // A recording is megabytes of AES work: off the async threads.
        let (tenant2, ctx) = (tenant.to_string(), path.to_string());
        let plain = tokio::task::spawn_blocking(move || crypt::decrypt(&ring, &tenant2, &ctx, &stored))
            .await
            .map_err(|e| StorageError::Corrupt(path.to_string(), e.to_string()))?
            .map_err(Self::crypt_err(path))?;
        Ok(Some(plain))
    }

    /// Plaintext bytes `range` of a stored object, reading only the chunks they are in.
    pub async fn get_range(
        &self,
        call: &CallRef,
        name: &str,
        range: std::ops::Range<u64>,
    ) -> Result<(Vec<u8>, u64), StorageError> {
        let spool = self.spool.call_dir(&call.tenant, call.call_id).join(name);
        if let Ok(mut f) = tokio::fs::File::open(&spool).await {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let len = f.metadata().await.map_err(io_err(&spool))?.len();
            let (s, e) = (range.start.min(len), range.end.min(len).max(range.start.min(len)));
            let mut buf = vec![0u8; (e - s) as usize];
            f.seek(std::io::SeekFrom::Start(s)).await.map_err(io_err(&spool))?;
            f.read_exact(&mut buf).await.map_err(io_err(&spool))?;
            return Ok((buf, len));
        }
        let path = call.object(name);
        let meta = match self.backend.head(&path).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NoObject(call.call_id, name.into())),
            Err(e) => return Err(e.into()),
        };
        let head = self.backend.get_range(&path, 0..(HEADER_LEN as u64).min(meta.size)).await?;
        let header = Header::parse(&head).map_err(Self::crypt_err(&path))?;
        let kek = self.keyring()?.key(&call.tenant, header.kek_version).map_err(Self::crypt_err(&path))?;
        let key = header.open(&kek, path.as_ref()).map_err(Self::crypt_err(&path))?;
        let layout = Layout::of(meta.size, header.chunk_size).map_err(Self::crypt_err(&path))?;
        let chunks = layout.chunks_for(range.clone());
        let mut out = Vec::new();
        if !chunks.is_empty() {
            let stored = self
                .backend
                .get_range(&path, layout.chunk_range(chunks.start).start..layout.chunk_range(chunks.end - 1).end)
                .await?;
            let base = layout.chunk_range(chunks.start).start;
            for i in chunks.clone() {
                let r = layout.chunk_range(i);
                let mut b = stored[(r.start - base) as usize..(r.end - base) as usize].to_vec();
                key.open_chunk(i, i + 1 == layout.chunks, &mut b).map_err(Self::crypt_err(&path))?;
                out.extend_from_slice(&b);
            }
            let skip = (range.start - chunks.start * layout.chunk_size()) as usize;
            let take = (range.end.min(layout.plain_len) - range.start) as usize;
            out = out[skip..skip + take].to_vec();
        }
        Ok((out, layout.plain_len))
    }

    /// A file of a call: from the spool while it is there, else decrypted from the store.
    pub async fn get(&self, call: &CallRef, name: &str) -> Result<Vec<u8>, StorageError> {
        let spool = self.spool.call_dir(&call.tenant, call.call_id).join(name);
        if let Ok(b) = tokio::fs::read(&spool).await {
            return Ok(b);
        }
        match self.get_object(&call.tenant, &call.object(name)).await? {
            Some(b) => Ok(b),
            // The upload may have just moved it.
            None => tokio::fs::read(&spool).await.map_err(|_| StorageError::NoObject(call.call_id, name.into())),
        }
    }

    /// The tenant of a call: looked up in the spool, then the store.
    pub async fn find_call(&self, call_id: CallId) -> Result<CallRef, StorageError> {
        // The spool first: it answers even while the store is unreachable.
        if let Some((call, _)) = spool_calls(&self.spool, None).into_iter().find(|(c, _)| c.call_id == call_id) {
            return Ok(call);
        }
        let mut tenants: Vec<String> = Vec::new();
        let listed = self.backend.list_with_delimiter(None).await?;
        tenants.extend(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)));
        tenants.retain(|t| !t.starts_with('.'));
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let call = CallRef { tenant, call_id };
            if self.spool.call_dir(&call.tenant, call_id).join("manifest.json").exists() {
                return Ok(call);
            }
            match self.backend.head(&call.object("manifest.json")).await {
                Ok(_) => return Ok(call),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StorageError::NotFound(call_id))
    }

    pub async fn manifest(&self, call: &CallRef) -> Result<Manifest, StorageError> {
        let b = self.get(call, "manifest.json").await?;
        serde_json::from_slice(&b)
            .map_err(|e| StorageError::Corrupt(call.object("manifest.json").to_string(), e.to_string()))
    }

    /// Every object under a prefix (a missing prefix is empty, not an error).
    pub(super) async fn list_prefix(
        &self,
        prefix: Option<&ObjPath>,
    ) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        let mut stream = self.backend.list(prefix);
        while let Some(meta) = stream.next().await {
            match meta {
                Ok(m) => out.push(m),
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Stored objects of a tenant's calls (not the spool): call → (file, stored bytes).
    pub async fn list_objects(&self, tenant: &str) -> Result<BTreeMap<CallId, Vec<(String, u64)>>, StorageError> {
        let prefix = ObjPath::from(tenant);
        let mut out: BTreeMap<CallId, Vec<(String, u64)>> = BTreeMap::new();
        for meta in self.list_prefix(Some(&prefix)).await? {
            let parts: Vec<_> = meta.location.parts().collect();
            // tenant/yyyy/mm/dd/call_id/file
            if parts.len() != 6 {
                continue;
            }
            let Some(id) = CallId::parse(parts[4].as_ref()) else { continue };
            out.entry(id).or_default().push((parts[5].as_ref().to_string(), meta.size));
        }
        Ok(out)
    }

    /// Every call of a tenant, spooled or stored, oldest first.
    pub async fn list_calls(&self, tenant: &str) -> Result<Vec<CallId>, StorageError> {
        let mut ids: Vec<CallId> = spool_calls(&self.spool, Some(tenant)).into_iter().map(|(c, _)| c.call_id).collect();
        match self.list_objects(tenant).await {
            Ok(stored) => ids.extend(stored.into_keys()),
            // Calls still in the spool are listed while the store is unreachable.
            Err(e) if !ids.is_empty() => tracing::warn!(error = %e, "listing the store failed: spooled calls only"),
            Err(e) => return Err(e),
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub async fn delete(&self, call: &CallRef, name: &str) -> Result<(), StorageError> {
        match self.backend.delete(&call.object(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Objects of one call (stored, not spooled): (file, stored bytes).
    pub async fn list_call_objects(&self, call: &CallRef) -> Result<Vec<(String, u64)>, StorageError> {
        let prefix = ObjPath::from(call.prefix());
        Ok(self
            .list_prefix(Some(&prefix))
            .await?
            .into_iter()
            .filter_map(|m| Some((m.location.filename()?.to_string(), m.size)))
            .collect())
    }

    /// The tenant of a call, looked up only under `tenant` (spool or store): a call of
    /// another tenant is simply not found.
    pub async fn find_call_in(&self, tenant: &str, call_id: CallId) -> Result<CallRef, StorageError> {
        let call = CallRef { tenant: tenant.to_string(), call_id };
        if self.spool.call_dir(tenant, call_id).join("manifest.json").exists() {
            return Ok(call);
        }
        match self.backend.head(&call.object("manifest.json")).await {
            Ok(_) => Ok(call),
            Err(object_store::Error::NotFound { .. }) => Err(StorageError::NotFound(call_id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Metadata objects (`.meta/...`): put encrypted with the tenant's key.
    pub async fn put_meta(&self, tenant: &str, rel: &str, plain: &[u8]) -> Result<(), StorageError> {
        self.put_encrypted(tenant, &ObjPath::from(format!("{META}/{rel}")), plain).await.map(|_| ())
    }

    /// An empty marker object (its name is the information).
    pub async fn put_marker(&self, rel: &str) -> Result<(), StorageError> {
        self.backend.put(&ObjPath::from(format!("{META}/{rel}")), PutPayload::from_static(b"")).await?;
        Ok(())
    }

    pub async fn get_meta(&self, tenant: &str, rel: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_object(tenant, &ObjPath::from(format!("{META}/{rel}"))).await
    }

    pub async fn exists_meta(&self, rel: &str) -> Result<bool, StorageError> {
        match self.backend.head(&ObjPath::from(format!("{META}/{rel}"))).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_meta(&self, rel: &str) -> Result<(), StorageError> {
        match self.backend.delete(&ObjPath::from(format!("{META}/{rel}"))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Metadata objects under `.meta/<rel>/`: (path below `.meta/<rel>/`, size).
    pub async fn list_meta(&self, rel: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let base = format!("{META}/{rel}");
        let listed = self.list_prefix(Some(&ObjPath::from(base.as_str()))).await?;
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                Some((m.location.as_ref().strip_prefix(&base)?.trim_start_matches('/').to_string(), m.size))
            })
            .collect())
    }

    /// Deletes every object under a prefix (a tenant's folder). Returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        let mut n = 0;
        let paths: Vec<ObjPath> =
            self.list_prefix(Some(&ObjPath::from(prefix))).await?.into_iter().map(|m| m.location).collect();
        for p in paths {
            match self.backend.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// Raw stored bytes (for tests that look at what is at rest, and for backups).
    pub async fn raw(&self, path: &ObjPath) -> Result<Vec<u8>, StorageError> {
        Ok(self.backend.get(path).await?.bytes().await?.to_vec())
    }

    /// Stores raw bytes as they are (tests that tamper with what is at rest).
    pub async fn put_raw(&self, path: &ObjPath, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.backend.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Every stored object path, for tests and audits.
    pub async fn list_all(&self) -> Result<Vec<(ObjPath, u64)>, StorageError> {
        let all = self.list_prefix(None).await?;
        Ok(all
            .into_iter()
            .filter(|m| !m.location.as_ref().starts_with(".spool") && !m.location.as_ref().starts_with(".keys"))
            .map(|m| (m.location, m.size))
            .collect())
    }

    pub async fn recording(&self, call: &CallRef) -> Result<Recording, StorageError> {
        let bytes = match self.get(call, AUDIO_FILE).await {
            Err(StorageError::NoObject(..)) => return Err(StorageError::NoObject(call.call_id, "recording".into())),
            r => r?,
        };
        let reader = hound::WavReader::new(std::io::Cursor::new(bytes))
            .map_err(|e| StorageError::Corrupt(call.object(AUDIO_FILE).to_string(), e.to_string()))?;
        let spec = reader.spec();
        let samples = reader
            .into_samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Corrupt(call.object(AUDIO_FILE).to_string(), e.to_string()))?;
        Ok(Recording { sample_rate: spec.sample_rate, channels: spec.channels, samples })
    }
}

/// Calls in the spool: (call, folder, sealed?).
pub fn spool_calls(spool: &StoreLayout, tenant: Option<&str>) -> Vec<(CallRef, PathBuf)> {
    let mut out = Vec::new();
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => std::fs::read_dir(spool.root())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default(),
    };
    for t in tenants {
        let mut stack = vec![(spool.root().join(&t), 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if depth == 3 {
                    if let Some(id) = e.file_name().to_str().and_then(CallId::parse) {
                        out.push((CallRef { tenant: t.clone(), call_id: id }, e.path()));
                    }
                } else {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out.sort_by_key(|(c, _)| c.call_id);
    out
}
