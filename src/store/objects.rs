//! The object store: where finished calls live, encrypted, on the local filesystem or
//! any S3-compatible server (through `object_store`), and the reader that gets them
//! back.
//!
//! Calls are written to the spool (`store::StoreLayout`, plain files, crash-safe) while
//! they run; the uploader (`store::uploader`) encrypts each file with the tenant's key
//! and puts it here at `<tenant>/<yyyy>/<mm>/<dd>/<call_id>/<file>`. Next to the calls:
//! `.meta/holds/<tenant>/<call_id>` (legal holds) and `.meta/tombstones/<tenant>/<hash>`
//! (calls deleted for good: a keyed hash of the call id, so the id itself is not kept).
//!
//! Reading looks in the spool first (a call not yet uploaded), then in the store.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::Sha256;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::call::CallId;
use crate::config::{StorageBackend, StorageConfig};
use crate::store::crypt;
use crate::store::crypt::{CryptError, Encryptor, Header, Keyring, Layout, HEADER_LEN};
use crate::store::manifest::Manifest;
use crate::store::spool::{Recording, StoreLayout, AUDIO_FILE};

pub const META: &str = ".meta";
pub const SEALED: &str = ".sealed";
/// Spans of the recording to silence before upload (redaction): `[{channel, start_ms, end_ms}]`.
pub const REDACT_AUDIO: &str = ".redact-audio.json";
/// Plaintext read and encrypted per step when uploading a file.
const UPLOAD_BLOCK: usize = 1 << 20;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("call {0} not found")]
    NotFound(CallId),
    #[error("call {0} has no {1}")]
    NoObject(CallId, String),
    #[error("call {0} was deleted (tombstone)")]
    Erased(CallId),
    #[error("{path}: {detail}")]
    Crypt { path: String, detail: CryptError },
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("keyring {path}: {detail}")]
    Keyring { path: PathBuf, detail: String },
    #[error("{0}: corrupt: {1}")]
    Corrupt(String, String),
    #[error("storage config: {0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

/// When a file was last changed, and its size.
type FileStamp = (SystemTime, u64);

/// The keyring file, re-read when it changes (so `earshot keys rotate` takes effect in
/// a running server).
pub struct KeyringHandle {
    path: PathBuf,
    cached: Mutex<(Option<FileStamp>, Arc<Keyring>)>,
    /// A keyring given in the environment (`EARSHOT_KEYRING`, the TOML text): read-only.
    fixed: Option<Arc<Keyring>>,
}

/// Environment variable that carries the whole keyring (TOML), instead of the file.
pub const KEYRING_ENV: &str = "EARSHOT_KEYRING";

impl KeyringHandle {
    /// Opens the keyring, creating it (mode 0600) with a tombstone key if missing.
    /// With `EARSHOT_KEYRING` set, that text is the keyring and the file is not used.
    pub fn open(path: &Path, create: bool) -> Result<KeyringHandle, StorageError> {
        if let Ok(text) = std::env::var(KEYRING_ENV) {
            let k = Keyring::parse(&text)
                .map_err(|e| StorageError::Keyring { path: KEYRING_ENV.into(), detail: e.to_string() })?;
            return Ok(KeyringHandle {
                path: KEYRING_ENV.into(),
                cached: Mutex::new((None, Arc::new(Keyring::default()))),
                fixed: Some(Arc::new(k)),
            });
        }
        let h = KeyringHandle {
            path: path.to_path_buf(),
            cached: Mutex::new((None, Arc::new(Keyring::default()))),
            fixed: None,
        };
        if !path.exists() {
            if !create {
                return Err(StorageError::Keyring { path: path.into(), detail: "not found".into() });
            }
            let mut k = Keyring::default();
            k.ensure_tombstone_key();
            h.write(&k)?;
        }
        h.current()?;
        Ok(h)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        std::fs::metadata(&self.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
    }

    /// The keyring as the file says now.
    pub fn current(&self) -> Result<Arc<Keyring>, StorageError> {
        if let Some(k) = &self.fixed {
            return Ok(k.clone());
        }
        let stamp = self.stamp();
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if c.0.is_some() && c.0 == stamp {
            return Ok(c.1.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        let k = Keyring::parse(&text)
            .map_err(|e| StorageError::Keyring { path: self.path.clone(), detail: e.to_string() })?;
        *c = (stamp, Arc::new(k));
        Ok(c.1.clone())
    }

    fn write(&self, k: &Keyring) -> Result<(), StorageError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let tmp = self.path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
            f.write_all(k.to_toml().as_bytes()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        Ok(())
    }

    /// Read-modify-write of the keyring file.
    pub fn update<R>(&self, f: impl FnOnce(&mut Keyring) -> R) -> Result<R, StorageError> {
        if self.fixed.is_some() {
            return Err(StorageError::Keyring {
                path: self.path.clone(),
                detail: "the keyring comes from the environment and is read-only here: change it where it is kept (missing tenant keys or a rotation need a new EARSHOT_KEYRING)".into(),
            });
        }
        let mut k = (*self.current()?).clone();
        let r = f(&mut k);
        self.write(&k)?;
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).0 = None;
        Ok(r)
    }

    /// Keys for tenants that have none yet.
    pub fn ensure_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) -> Result<(), StorageError> {
        let cur = self.current()?;
        let missing: Vec<&str> = tenants.into_iter().filter(|t| !cur.tenants.contains_key(*t)).collect();
        if missing.is_empty() && cur.tombstone_key.is_some() {
            return Ok(());
        }
        self.update(|k| {
            k.ensure_tombstone_key();
            for t in missing {
                k.ensure_tenant(t);
            }
        })
    }
}

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
    backend: Arc<dyn ObjectStore>,
    keys: Arc<KeyringHandle>,
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

    fn keyring(&self) -> Result<Arc<Keyring>, StorageError> {
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

    async fn get_object(&self, tenant: &str, path: &ObjPath) -> Result<Option<Vec<u8>>, StorageError> {
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
    async fn list_prefix(&self, prefix: Option<&ObjPath>) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
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

    /// A keyed hash (HMAC-SHA256 with the keyring's tombstone key) naming something
    /// without revealing it: tombstones, the subject index, call references in the audit log.
    pub fn keyed_hash(&self, purpose: &str, tenant: &str, value: &str) -> Result<String, StorageError> {
        let key = self.keyring()?.tombstone_key().ok_or_else(|| StorageError::Keyring {
            path: self.keys.path().into(),
            detail: "no tombstone_key".into(),
        })?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(tenant.as_bytes());
        mac.update(b"/");
        mac.update(value.as_bytes());
        Ok(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
    }

    fn tombstone_path(&self, call: &CallRef) -> Result<ObjPath, StorageError> {
        let hex = self.keyed_hash("tombstone", &call.tenant, &call.call_id.to_string())?;
        Ok(ObjPath::from(format!("{META}/tombstones/{}/{hex}", call.tenant)))
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

    /// Legal hold on every call of a tenant (set through the admin API), besides the
    /// config's `legal_hold`.
    pub async fn set_tenant_hold(
        &self,
        tenant: &str,
        on: bool,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let rel = format!("holds/{tenant}/tenant");
        if on {
            let body = serde_json::json!({ "reason": reason, "at": at });
            self.put_meta(tenant, &rel, body.to_string().as_bytes()).await
        } else {
            self.delete_meta(&rel).await
        }
    }

    pub async fn tenant_hold(&self, tenant: &str) -> Result<bool, StorageError> {
        self.exists_meta(&format!("holds/{tenant}/tenant")).await
    }

    pub async fn is_held(&self, call: &CallRef) -> Result<bool, StorageError> {
        Ok(self.exists_meta(&format!("holds/{}/{}", call.tenant, call.call_id)).await?
            || self.tenant_hold(&call.tenant).await?)
    }

    /// Marks a call deleted for good: uploads and jobs that come later drop it.
    pub async fn tombstone(&self, call: &CallRef) -> Result<(), StorageError> {
        let path = self.tombstone_path(call)?;
        self.backend.put(&path, PutPayload::from_static(b"")).await?;
        Ok(())
    }

    pub async fn is_tombstoned(&self, call: &CallRef) -> Result<bool, StorageError> {
        match self.backend.head(&self.tombstone_path(call)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn hold_path(call: &CallRef) -> ObjPath {
        ObjPath::from(format!("{META}/holds/{}/{}", call.tenant, call.call_id))
    }

    /// Puts a call under legal hold (nothing of it is deleted until released).
    pub async fn hold(
        &self,
        call: &CallRef,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let body = serde_json::json!({ "reason": reason, "at": at });
        self.put_encrypted(&call.tenant, &Self::hold_path(call), body.to_string().as_bytes()).await?;
        Ok(())
    }

    pub async fn release(&self, call: &CallRef) -> Result<bool, StorageError> {
        let path = Self::hold_path(call);
        match self.backend.head(&path).await {
            Ok(_) => {
                self.backend.delete(&path).await?;
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every call under a per-call hold.
    pub async fn holds(&self) -> Result<HashSet<(String, CallId)>, StorageError> {
        let prefix = ObjPath::from(format!("{META}/holds"));
        let mut out = HashSet::new();
        for meta in self.list_prefix(Some(&prefix)).await? {
            let parts: Vec<_> = meta.location.parts().collect();
            if let [_, _, tenant, id] = parts.as_slice() {
                if let Some(id) = CallId::parse(id.as_ref()) {
                    out.insert((tenant.as_ref().to_string(), id));
                }
            }
        }
        Ok(out)
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

/// A blocking face of [`Store`] for tools and tests: each call runs on its own
/// short-lived runtime thread, so it works inside or outside an async context.
#[derive(Clone)]
pub struct StoreReader {
    store: Store,
}

fn blocking<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    })
    .join()
    .expect("store reader thread")
}

impl StoreReader {
    /// A reader of the configured store.
    pub fn open(cfg: &StorageConfig) -> Result<StoreReader, StorageError> {
        let cfg = cfg.clone();
        blocking(async move { Store::open(&cfg) }).map(|store| StoreReader { store })
    }

    /// A reader of a local store at `dir` with the default spool and keyring there.
    pub fn new(dir: impl Into<PathBuf>) -> StoreReader {
        let cfg = StorageConfig { dir: dir.into(), ..StorageConfig::default() };
        Self::open(&cfg).expect("local store")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn find_call(&self, id: CallId) -> Result<CallRef, StorageError> {
        let s = self.store.clone();
        blocking(async move { s.find_call(id).await })
    }

    pub fn manifest(&self, id: CallId) -> Result<Manifest, StorageError> {
        let s = self.store.clone();
        blocking(async move { s.manifest(&s.find_call(id).await?).await })
    }

    pub fn file(&self, id: CallId, name: &str) -> Result<Vec<u8>, StorageError> {
        let (s, name) = (self.store.clone(), name.to_string());
        blocking(async move { s.get(&s.find_call(id).await?, &name).await })
    }

    /// A text file of a call (transcript, hints…).
    pub fn text(&self, id: CallId, name: &str) -> Result<String, StorageError> {
        let b = self.file(id, name)?;
        String::from_utf8(b).map_err(|e| StorageError::Corrupt(name.into(), e.to_string()))
    }

    pub fn audio(&self, id: CallId) -> Result<Recording, StorageError> {
        let s = self.store.clone();
        blocking(async move { s.recording(&s.find_call(id).await?).await })
    }

    pub fn list_calls(&self, tenant: &str) -> Vec<CallId> {
        let (s, t) = (self.store.clone(), tenant.to_string());
        blocking(async move { s.list_calls(&t).await }).unwrap_or_default()
    }

    /// True once the call has left the spool for the store.
    pub fn is_uploaded(&self, id: CallId) -> bool {
        let s = self.store.clone();
        blocking(async move {
            let Ok(call) = s.find_call(id).await else { return false };
            !s.spool().call_dir(&call.tenant, id).exists()
                && s.backend.head(&call.object("manifest.json")).await.is_ok()
        })
    }
}

/// What one retention sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub calls_seen: usize,
    pub calls_deleted: usize,
    pub objects_deleted: usize,
    pub bytes_deleted: u64,
    pub held: usize,
    /// Calls that were due more than `overdue_after` before this sweep.
    pub overdue: usize,
    /// Calls skipped because their manifest could not be read (upload in progress,
    /// or keys destroyed).
    pub unreadable: usize,
    pub errors: usize,
    /// Tenants something was deleted of.
    pub tenants_touched: BTreeSet<String>,
}

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Only plan (`earshot retention plan`): nothing is deleted.
    pub dry_run: bool,
    /// Stop after this many object deletions (tests: a sweep that crashes midway).
    pub max_deletes: Option<usize>,
    /// A call due longer ago than this counts as overdue.
    pub overdue_after: chrono::Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { dry_run: false, max_deletes: None, overdue_after: chrono::Duration::days(1) }
    }
}

/// What retention reads of a manifest.
#[derive(serde::Deserialize)]
struct CampaignOf {
    #[serde(default)]
    campaign: Option<String>,
}

/// Remembers calls' campaigns between sweeps, so a manifest is decrypted once.
#[derive(Default)]
pub struct SweepCache {
    campaigns: std::collections::HashMap<CallId, Option<String>>,
}

/// Reads what the store holds, plans with [`crate::store::retention::plan`] and carries it
/// out: tombstone first when a whole call goes, then its objects, the manifest last.
/// Idempotent: a sweep cut short is finished by the next one, which plans again from
/// what is left.
pub async fn sweep(
    store: &Store,
    policies: &crate::store::retention::Policies,
    now: chrono::DateTime<chrono::Utc>,
    opts: &SweepOptions,
    cache: &mut SweepCache,
) -> Result<(crate::store::retention::Plan, SweepReport), StorageError> {
    use crate::store::retention::{plan, StoredCall};
    let mut report = SweepReport::default();
    let holds = store.holds().await?;
    // A tenant-wide hold set through the admin API counts like the config's `legal_hold`.
    let mut policies = policies.clone();
    for (tenant, p) in policies.iter_mut() {
        if !p.hold && store.tenant_hold(tenant).await? {
            p.hold = true;
        }
    }
    let policies = &policies;
    let mut calls = Vec::new();
    for (tenant, policy) in policies {
        let horizon = now - chrono::Duration::days(i64::from(policy.min_days()));
        for (call_id, objects) in store.list_objects(tenant).await? {
            report.calls_seen += 1;
            let Some(started_at) = call_id.created_at() else { continue };
            if started_at > horizon {
                continue;
            }
            let call = CallRef { tenant: tenant.clone(), call_id };
            let campaign = match cache.campaigns.get(&call_id) {
                Some(c) => c.clone(),
                None if !objects.iter().any(|(n, _)| n == "manifest.json") => {
                    report.unreadable += 1;
                    continue;
                }
                None => match store.get_object(tenant, &call.object("manifest.json")).await {
                    Ok(Some(b)) => match serde_json::from_slice::<CampaignOf>(&b) {
                        Ok(m) => {
                            cache.campaigns.insert(call_id, m.campaign.clone());
                            m.campaign
                        }
                        Err(_) => {
                            report.unreadable += 1;
                            continue;
                        }
                    },
                    Ok(None) | Err(_) => {
                        report.unreadable += 1;
                        continue;
                    }
                },
            };
            calls.push(StoredCall { tenant: tenant.clone(), call_id, started_at, campaign, objects });
        }
    }
    let planned = plan(now, &calls, policies, &holds);
    report.held = planned.held;
    report.overdue = planned.actions.iter().filter(|a| a.due_since + opts.overdue_after < now).count();
    if opts.dry_run {
        return Ok((planned, report));
    }
    let mut budget = opts.max_deletes.unwrap_or(usize::MAX);
    'actions: for a in &planned.actions {
        let call = CallRef { tenant: a.tenant.clone(), call_id: a.call_id };
        if a.whole_call {
            if let Err(e) = store.tombstone(&call).await {
                tracing::error!(call_id = %a.call_id, error = %e, "retention: tombstone");
                report.errors += 1;
                continue;
            }
        }
        let sizes: BTreeMap<&str, u64> = calls
            .iter()
            .find(|c| c.call_id == a.call_id)
            .map(|c| c.objects.iter().map(|(n, b)| (n.as_str(), *b)).collect())
            .unwrap_or_default();
        for name in &a.delete {
            if budget == 0 {
                break 'actions;
            }
            budget -= 1;
            match store.delete(&call, name).await {
                Ok(()) => {
                    report.objects_deleted += 1;
                    report.tenants_touched.insert(a.tenant.clone());
                    report.bytes_deleted += sizes.get(name.as_str()).copied().unwrap_or(0);
                }
                Err(e) => {
                    tracing::error!(call_id = %a.call_id, file = %name, error = %e, "retention: delete");
                    report.errors += 1;
                    continue 'actions;
                }
            }
        }
        if a.whole_call {
            report.calls_deleted += 1;
            cache.campaigns.remove(&a.call_id);
        }
    }
    Ok((planned, report))
}
