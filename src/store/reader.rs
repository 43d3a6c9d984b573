//! `StoreReader`: a blocking face of the object store for tools and tests, each call on
//! its own short-lived runtime thread.

use std::path::PathBuf;

use object_store::ObjectStoreExt;

use crate::call::CallId;
use crate::config::StorageConfig;
use crate::store::manifest::Manifest;
use crate::store::objects::{CallRef, StorageError, Store};
use crate::store::spool::Recording;

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
