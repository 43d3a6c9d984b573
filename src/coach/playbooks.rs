//! Playbooks read from disk (the IO side of coaching): re-read when the file changes,
//! so a new version applies from the next call without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::coach::{Playbook, PlaybookError, PlaybookFile};
use crate::config::{Config, TenantConfig};

#[derive(Debug, thiserror::Error)]
#[error("playbook {path}: {detail}")]
pub struct PlaybookLoadError {
    pub path: PathBuf,
    pub detail: String,
}

type Stamp = (Option<SystemTime>, u64);

/// Parsed playbooks by path, with the file's modification stamp.
#[derive(Default)]
pub struct Playbooks {
    cache: Mutex<HashMap<PathBuf, (Stamp, Arc<PlaybookFile>)>>,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let md = std::fs::metadata(path)?;
    Ok((md.modified().ok(), md.len()))
}

pub fn load_playbook(path: &Path) -> Result<PlaybookFile, PlaybookLoadError> {
    let err = |detail: String| PlaybookLoadError { path: path.to_path_buf(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    PlaybookFile::parse(&text).map_err(|e: PlaybookError| err(e.to_string()))
}

impl Playbooks {
    /// Loads every tenant's playbook: a bad one is a start-up error.
    pub fn preload(config: &Config) -> Result<Playbooks, PlaybookLoadError> {
        let p = Playbooks::default();
        for t in &config.tenants {
            if let Some(path) = &t.playbook {
                let file = load_playbook(path)?;
                let st = stamp(path).map_err(|e| PlaybookLoadError { path: path.clone(), detail: e.to_string() })?;
                p.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone(), (st, Arc::new(file)));
            }
        }
        Ok(p)
    }

    /// The rules for a new call (blocking: a `stat`, and a read when the file changed).
    /// A file that became unreadable or invalid keeps its last good version (logged).
    pub fn for_call(&self, tenant: Option<&TenantConfig>, campaign: Option<&str>) -> Arc<Playbook> {
        let Some(path) = tenant.and_then(|t| t.playbook.as_ref()) else {
            return Arc::new(Playbook::default());
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let current = stamp(path).ok();
        let cached = cache.get(path).cloned();
        let file = match (&cached, current) {
            (Some((st, f)), Some(now)) if *st == now => f.clone(),
            (_, Some(now)) => match load_playbook(path) {
                Ok(f) => {
                    let f = Arc::new(f);
                    if cached.is_some() {
                        tracing::info!(path = %path.display(), "playbook changed: reloaded");
                    }
                    cache.insert(path.clone(), (now, f.clone()));
                    f
                }
                Err(e) => {
                    tracing::error!(error = %e, "playbook reload failed: keeping the last good version");
                    match cached {
                        Some((_, f)) => f,
                        None => return Arc::new(Playbook::default()),
                    }
                }
            },
            (Some((_, f)), None) => {
                tracing::error!(path = %path.display(), "playbook unreadable: keeping the last good version");
                f.clone()
            }
            (None, None) => return Arc::new(Playbook::default()),
        };
        drop(cache);
        match file.resolve(campaign) {
            Ok(pb) => Arc::new(pb),
            Err(e) => {
                tracing::error!(error = %e, "playbook campaign does not resolve: using defaults");
                Arc::new(Playbook::default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playbooks_reload_when_the_file_changes_and_keep_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pb.toml");
        let v1 = "[[triggers]]\nid = \"a\"\nphrases = [\"alpha\"]\ntitle = \"A\"\n";
        std::fs::write(&path, v1).unwrap();
        let text = format!(
            "[[tenants]]\nid = \"t\"\nfork_secret = \"0123456789abcdef0\"\nplaybook = \"{}\"\n",
            path.display()
        );
        let config = Config::from_toml_with_env(&text, &dir.path().join("c.toml"), std::iter::empty()).unwrap();
        let p = Playbooks::preload(&config).unwrap();
        let t = config.tenant("t");
        assert_eq!(p.for_call(t, None).triggers[0].id, "a");
        // A new version (different size, so the stamp changes even within one mtime tick).
        std::fs::write(&path, "[[triggers]]\nid = \"bravo\"\nphrases = [\"bravo\"]\ntitle = \"B\"\n").unwrap();
        assert_eq!(p.for_call(t, None).triggers[0].id, "bravo");
        // A broken edit keeps the last good version; a deleted file too.
        std::fs::write(&path, "[[triggers]]\nid = \"c\"\nphrases = []\ntitle = \"broken, and longer than before\"\n")
            .unwrap();
        assert_eq!(p.for_call(t, None).triggers[0].id, "bravo");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.for_call(t, None).triggers[0].id, "bravo");
        // No playbook: the defaults.
        assert!(p.for_call(None, None).triggers.is_empty());
        // A bad playbook at start-up is an error naming the file.
        std::fs::write(&path, "nonsense = = 1").unwrap();
        let e = Playbooks::preload(&config).err().unwrap().to_string();
        assert!(e.contains("pb.toml"), "{e}");
    }
}
