//! Moves finished calls from the spool into the store, encrypted.
//!
//! A call is uploaded once it is *sealed*: every part that writes into its spool folder
//! (the call task and recorder, the recogniser, the refinement job, the post-call
//! writer of hints and scorecard) holds a [`Seal`]; the last one to let go writes
//! `.sealed` into the folder and wakes the uploader. At start-up every folder left in
//! the spool is sealed (nothing is writing after a restart), so a full spool drains.
//!
//! Each file is streamed through the encryptor into the store, the manifest last; the
//! folder is removed only after everything is stored. When the store is unavailable
//! the upload is retried with back-off (doubling up to `storage.upload_backoff_max`);
//! nothing leaves the spool until it is safely stored. A call with a tombstone
//! (erased, or deleted by retention) is dropped, never uploaded again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::call::CallId;
use crate::metrics::Metrics;
use crate::store::objects::{spool_calls, CallRef, StorageError, Store, SEALED};
use crate::store::spool::StoreLayout;

/// Held by each writer of a call's spool folder; see the module docs.
#[derive(Clone)]
pub struct Seal(#[allow(dead_code)] Arc<SealInner>);

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seal({})", self.0.dir.display())
    }
}

struct SealInner {
    dir: PathBuf,
    notify: Arc<Notify>,
}

impl Drop for SealInner {
    fn drop(&mut self) {
        if self.dir.is_dir() {
            if let Err(e) = std::fs::write(self.dir.join(SEALED), b"") {
                tracing::error!(dir = %self.dir.display(), error = %e, "sealing a call for upload (it is sealed again at the next start)");
            }
        }
        self.notify.notify_one();
    }
}

#[derive(Clone)]
pub struct Uploader {
    store: Store,
    notify: Arc<Notify>,
    /// Passes over the spool started so far.
    passes: Arc<std::sync::atomic::AtomicU64>,
    /// The last pass that found nothing to upload.
    empty_pass: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Uploader {
    /// Seals every call folder in the spool (blocking; start-up only, after crash
    /// recovery) and starts the upload task.
    pub fn start(store: Store, metrics: Metrics, backoff_max: Duration, tasks: &crate::shutdown::Tasks) -> Uploader {
        let sealed = seal_all(store.spool());
        if sealed > 0 {
            tracing::info!(calls = sealed, "spool: calls left from before the restart will be uploaded");
        }
        let (empty_pass, _) = tokio::sync::watch::channel(0);
        let up = Uploader {
            store,
            notify: Arc::new(Notify::new()),
            passes: Default::default(),
            empty_pass: Arc::new(empty_pass),
        };
        tasks.spawn_background(up.clone().run(metrics, backoff_max));
        up
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A seal for a new call's spool folder.
    pub fn seal(&self, tenant: &str, call_id: CallId) -> Seal {
        Seal(Arc::new(SealInner { dir: self.store.spool().call_dir(tenant, call_id), notify: self.notify.clone() }))
    }

    /// Waits (up to `timeout`) until a pass that started after this call found no
    /// sealed call left in the spool. True if that happened in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self.passes.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let mut rx = self.empty_pass.subscribe();
        self.notify.notify_one();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= target)).await.is_ok_and(|r| r.is_ok())
    }

    async fn run(self, metrics: Metrics, backoff_max: Duration) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let pass = self.passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let layout = self.store.spool().clone();
            let (pending, bytes, calls) = tokio::task::spawn_blocking(move || scan(&layout)).await.unwrap_or_default();
            metrics.spool_bytes.set(bytes as i64);
            metrics.spool_calls.set(calls as i64);
            let mut failed = false;
            for (call, dir) in &pending {
                let t0 = Instant::now();
                match upload_call(&self.store, call, dir).await {
                    Ok(Uploaded::Stored(n)) => {
                        metrics.uploads.with_label_values(&["ok"]).inc();
                        metrics.upload_bytes.inc_by(n);
                        metrics.upload_seconds.observe(t0.elapsed().as_secs_f64());
                        tracing::info!(call_id = %call.call_id, bytes = n, ms = t0.elapsed().as_millis() as u64, "call uploaded");
                    }
                    Ok(Uploaded::Erased) => {
                        metrics.uploads.with_label_values(&["erased"]).inc();
                        tracing::info!(call_id = %call.call_id, "spooled call was erased meanwhile: dropped, not uploaded");
                    }
                    Err(e) => {
                        metrics.uploads.with_label_values(&["failed"]).inc();
                        tracing::warn!(call_id = %call.call_id, error = %e, retry_in = ?backoff, "upload failed; the call stays in the spool");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
                continue;
            }
            backoff = Duration::from_millis(500);
            if pending.is_empty() {
                self.empty_pass.send_replace(pass);
                let _ = tokio::time::timeout(Duration::from_secs(30), self.notify.notified()).await;
            }
        }
    }
}

fn seal_all(spool: &StoreLayout) -> usize {
    let mut n = 0;
    for (_, dir) in spool_calls(spool, None) {
        if !dir.join(SEALED).exists() && std::fs::write(dir.join(SEALED), b"").is_ok() {
            n += 1;
        }
    }
    n
}

/// Sealed calls, and the spool's size in bytes and calls.
fn scan(spool: &StoreLayout) -> (Vec<(CallRef, PathBuf)>, u64, usize) {
    let all = spool_calls(spool, None);
    let mut bytes = 0;
    for (_, dir) in &all {
        if let Ok(d) = std::fs::read_dir(dir) {
            bytes += d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum::<u64>();
        }
    }
    let n = all.len();
    (all.into_iter().filter(|(_, d)| d.join(SEALED).exists()).collect(), bytes, n)
}

pub enum Uploaded {
    Stored(u64),
    Erased,
}

/// Uploads one sealed call folder, then removes it from the spool.
pub async fn upload_call(store: &Store, call: &CallRef, dir: &Path) -> Result<Uploaded, StorageError> {
    if store.is_tombstoned(call).await? {
        remove_spooled(store, dir).await;
        return Ok(Uploaded::Erased);
    }
    let redact = dir.join(crate::store::objects::REDACT_AUDIO);
    if redact.exists() {
        let (dir2, redact2) = (dir.to_path_buf(), redact.clone());
        tokio::task::spawn_blocking(move || silence(&dir2.join(crate::store::spool::AUDIO_FILE), &redact2))
            .await
            .map_err(|e| StorageError::Corrupt(redact.display().to_string(), e.to_string()))?
            .map_err(|source| StorageError::Io { path: redact.clone(), source })?;
        std::fs::remove_file(&redact).map_err(|source| StorageError::Io { path: redact.clone(), source })?;
    }
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| StorageError::Io { path: dir.into(), source })?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && !n.ends_with(".tmp"))
        .collect();
    // The manifest last: a stored manifest means the call is complete.
    files.sort_by_key(|n| (n == "manifest.json", n.clone()));
    let mut total = 0;
    for name in &files {
        total += store.put_encrypted_file(&call.tenant, &call.object(name), &dir.join(name)).await?;
    }
    // Indexed by its subjects, for erasure and export requests.
    if let Some(m) = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::store::manifest::Manifest>(&b).ok())
    {
        crate::store::privacy::index_call(store, &call.tenant, &m).await?;
    }
    // Erased while uploading: take back what was just stored.
    if store.is_tombstoned(call).await? {
        for name in &files {
            store.delete(call, name).await?;
        }
        remove_spooled(store, dir).await;
        return Ok(Uploaded::Erased);
    }
    remove_spooled(store, dir).await;
    Ok(Uploaded::Stored(total))
}

/// Zeroes the listed spans (one channel each, 200 ms of margin either side) in a spooled
/// WAV: masked utterances never reach the store as sound either.
fn silence(wav: &Path, spans: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    if !wav.exists() {
        return Ok(());
    }
    let spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(spans)?).unwrap_or_default();
    let spec = hound::WavReader::open(wav).map_err(std::io::Error::other)?.spec();
    let (channels, rate) = (u64::from(spec.channels), u64::from(spec.sample_rate));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(wav)?;
    let data_len = f.metadata()?.len().saturating_sub(crate::store::wav::HEADER_LEN);
    let frames = data_len / (2 * channels);
    for s in spans {
        let (Some(ch), Some(a), Some(b)) = (s["channel"].as_u64(), s["start_ms"].as_u64(), s["end_ms"].as_u64()) else {
            continue;
        };
        if ch >= channels {
            continue;
        }
        let from = (a.saturating_sub(200) * rate / 1000).min(frames);
        let to = ((b + 200) * rate / 1000).min(frames);
        if from >= to {
            continue;
        }
        let offset = crate::store::wav::HEADER_LEN + from * channels * 2;
        let mut buf = vec![0u8; ((to - from) * channels * 2) as usize];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
        for frame in buf.chunks_exact_mut((channels * 2) as usize) {
            let at = (ch * 2) as usize;
            frame[at] = 0;
            frame[at + 1] = 0;
        }
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&buf)?;
    }
    f.sync_all()
}

/// Removes a call's spool folder and the date folders it leaves empty (on a blocking
/// thread: a call-hour's recording is a large unlink).
async fn remove_spooled(store: &Store, dir: &Path) {
    let (root, dir) = (store.spool().root().to_path_buf(), dir.to_path_buf());
    let _ = tokio::task::spawn_blocking(move || remove_spooled_blocking(&root, &dir)).await;
}

fn remove_spooled_blocking(root: &Path, dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::error!(dir = %dir.display(), error = %e, "removing an uploaded call from the spool");
        return;
    }
    let mut d = dir.parent();
    while let Some(p) = d {
        if p == root || !p.starts_with(root) || std::fs::remove_dir(p).is_err() {
            break;
        }
        d = p.parent();
    }
}
