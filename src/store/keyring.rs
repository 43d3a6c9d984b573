//! The keyring of tenant key-encryption keys as the server holds it: read from its file
//! (or `EARSHOT_KEYRING`), re-read when the file changes, and written back atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::store::crypt::Keyring;
use crate::store::error::{io_err, StorageError};

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
