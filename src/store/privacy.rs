//! Data-subject rights on the store: the subject index, erasure, export, tenant
//! deletion with a grace period, and the audit log. Used by the admin API and the CLI.
//!
//! Everything here names people and calls by keyed hash where it is kept
//! (`Store::keyed_hash`): the subject index is `.meta/subjects/<tenant>/<hash(subject)>/<call_id>`
//! (removed with the call), audit entries carry `hash(call_id)`, erasure receipts are
//! returned, not stored.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::call::CallId;
use crate::store::manifest::Manifest;
use crate::store::objects::{CallRef, StorageError, Store};

/// One identifier form per kind: phone numbers as `+` and digits, emails lower-case,
/// anything else (participant ids) trimmed.
pub fn normalize_subject(s: &str) -> String {
    let t = s.trim();
    let t = t.strip_prefix("tel:").or_else(|| t.strip_prefix("sip:")).or_else(|| t.strip_prefix("sips:")).unwrap_or(t);
    if t.contains('@') {
        let (user, _) = t.split_once('@').unwrap();
        // sip:+15551230000@host is a phone number; alice@example.com an email.
        if user.starts_with('+') && user[1..].chars().all(|c| c.is_ascii_digit()) {
            return user.to_string();
        }
        return t.to_lowercase();
    }
    let phoneish = t.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
        && t.chars().filter(char::is_ascii_digit).count() >= 5;
    if phoneish {
        let digits: String = t.chars().filter(char::is_ascii_digit).collect();
        return if t.starts_with('+') { format!("+{digits}") } else { digits };
    }
    t.to_string()
}

/// The identifiers of the people on a call, normalised.
pub fn subjects_of(m: &Manifest) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in &m.participants {
        for v in [&p.phone_e164, &p.id, &p.aor].into_iter().flatten() {
            if !v.trim().is_empty() {
                out.insert(normalize_subject(v));
            }
        }
    }
    out
}

fn subject_dir(store: &Store, tenant: &str, subject: &str) -> Result<String, StorageError> {
    Ok(format!("subjects/{tenant}/{}", store.keyed_hash("subject", tenant, &normalize_subject(subject))?))
}

/// Records the call under each of its subjects.
pub async fn index_call(store: &Store, tenant: &str, m: &Manifest) -> Result<(), StorageError> {
    for s in subjects_of(m) {
        index_subject(store, tenant, &s, m.call_id).await?;
    }
    Ok(())
}

/// Records one subject of a call.
pub async fn index_subject(store: &Store, tenant: &str, subject: &str, call_id: CallId) -> Result<(), StorageError> {
    store.put_marker(&format!("{}/{call_id}", subject_dir(store, tenant, subject)?)).await
}

/// Every call of the tenant that involved `subject`: the index (stored calls) and the
/// manifests of calls still in the spool (running, or waiting for upload).
pub async fn subject_calls(store: &Store, tenant: &str, subject: &str) -> Result<Vec<CallId>, StorageError> {
    let dir = subject_dir(store, tenant, subject)?;
    let mut ids: Vec<CallId> =
        store.list_meta(&dir).await?.into_iter().filter_map(|(p, _)| CallId::parse(&p)).collect();
    let (wanted, spool, tenant2) = (normalize_subject(subject), store.spool().clone(), tenant.to_string());
    let spooled = tokio::task::spawn_blocking(move || {
        crate::store::objects::spool_calls(&spool, Some(&tenant2))
            .into_iter()
            .filter(|(_, folder)| {
                std::fs::read(folder.join("manifest.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                    .is_some_and(|m| subjects_of(&m).contains(&wanted))
            })
            .map(|(c, _)| c.call_id)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    ids.extend(spooled);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErasedCall {
    pub call_id: CallId,
    pub objects: usize,
    pub bytes: u64,
    /// Files removed from the local spool (a call not uploaded yet).
    pub spooled_files: usize,
}

/// Erases every object of a call wherever it is: store, spool, subject index, hold
/// and pending-erasure markers. A tombstone first, so a late upload cannot bring it back.
pub async fn erase_call(store: &Store, call: &CallRef) -> Result<ErasedCall, StorageError> {
    erase_call_of(store, call, None).await
}

/// As [`erase_call`]; `subject` (the one an erasure request named) is dropped from
/// the index even if the manifest cannot be read.
async fn erase_call_of(store: &Store, call: &CallRef, subject: Option<&str>) -> Result<ErasedCall, StorageError> {
    let manifest = store.manifest(call).await.ok();
    store.tombstone(call).await?;
    let mut out = ErasedCall { call_id: call.call_id, objects: 0, bytes: 0, spooled_files: 0 };
    let spool = store.spool().call_dir(&call.tenant, call.call_id);
    if let Ok(entries) = std::fs::read_dir(&spool) {
        out.spooled_files = entries.count();
        tokio::fs::remove_dir_all(&spool).await.map_err(|source| StorageError::Io { path: spool.clone(), source })?;
    }
    let mut objects = store.list_call_objects(call).await?;
    // The manifest last: while it exists, the call is still found and retried.
    objects.sort_by_key(|(n, _)| n == "manifest.json");
    for (name, size) in objects {
        store.delete(call, &name).await?;
        out.objects += 1;
        out.bytes += size;
    }
    let mut subjects = manifest.map(|m| subjects_of(&m)).unwrap_or_default();
    subjects.extend(subject.map(normalize_subject));
    for s in subjects {
        store.delete_meta(&format!("{}/{}", subject_dir(store, &call.tenant, &s)?, call.call_id)).await?;
    }
    store.delete_meta(&format!("holds/{}/{}", call.tenant, call.call_id)).await?;
    store.delete_meta(&format!("pending-erasure/{}/{}", call.tenant, call.call_id)).await?;
    Ok(out)
}

/// What an erasure did: returned to the requester, never stored with the call ids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub tenant: String,
    pub at: DateTime<Utc>,
    pub erased: Vec<ErasedCall>,
    /// Calls under legal hold: not erased now; erased when the hold is released.
    pub held: Vec<CallId>,
}

/// Erases every call of the tenant involving `subject` (held calls wait for release).
pub async fn erase_subject(
    store: &Store,
    tenant: &str,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<Receipt, StorageError> {
    let mut receipt = Receipt { tenant: tenant.into(), at: now, erased: Vec::new(), held: Vec::new() };
    for id in subject_calls(store, tenant, subject).await? {
        let call = CallRef { tenant: tenant.into(), call_id: id };
        if store.is_held(&call).await? {
            store.put_marker(&format!("pending-erasure/{tenant}/{id}")).await?;
            receipt.held.push(id);
        } else {
            receipt.erased.push(erase_call_of(store, &call, Some(subject)).await?);
        }
    }
    // An index entry whose call is gone already (erased by id, or by retention) is dropped.
    Ok(receipt)
}

/// Releases a call's hold; a pending erasure then runs. Returns the erasure, if any.
pub async fn release_hold(store: &Store, call: &CallRef) -> Result<(bool, Option<ErasedCall>), StorageError> {
    let was = store.release(call).await?;
    let pending = store.exists_meta(&format!("pending-erasure/{}/{}", call.tenant, call.call_id)).await?;
    if pending && !store.is_held(call).await? {
        return Ok((was, Some(erase_call(store, call).await?)));
    }
    Ok((was, None))
}

/// Runs pending erasures of a tenant that are no longer held (after a tenant hold ends).
pub async fn run_pending_erasures(store: &Store, tenant: &str) -> Result<Vec<ErasedCall>, StorageError> {
    let mut out = Vec::new();
    for (p, _) in store.list_meta(&format!("pending-erasure/{tenant}")).await? {
        let Some(id) = CallId::parse(&p) else { continue };
        let call = CallRef { tenant: tenant.into(), call_id: id };
        if !store.is_held(&call).await? {
            out.push(erase_call(store, &call).await?);
        }
    }
    Ok(out)
}

// ---- export ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportSummary {
    pub calls: usize,
    pub files: usize,
    pub bytes: u64,
}

const EXPORT_README: &str = "Earshot data export\n\
===================\n\n\
One folder per call, named by its call id, holding what was stored for it (decrypted):\n\
  manifest.json     the call: when, who (participants), campaign, rep, channels, outcome\n\
  audio.wav         the recording (16-bit PCM; stereo: rep left, customer right), if recorded\n\
  transcript.json   the transcript with timings per channel; transcript.txt as plain text\n\
  transcript.live.json  the live transcript, when a refined one replaced it\n\
  hints.json        coaching hints raised during the call\n\
  scorecard.json    the call's scorecard\n\n\
calls.json lists the calls in this export.\n";

/// Writes a ZIP of the calls' files (decrypted) and a README to `out`. `progress` is
/// told (done, total) after each call. The ZIP is written with blocking IO: run it on a
/// blocking thread (the admin API does), not on the async runtime's workers.
pub async fn build_export(
    store: &Store,
    tenant: &str,
    calls: &[CallId],
    out: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<ExportSummary, StorageError> {
    let io = |source| StorageError::Io { path: out.to_path_buf(), source };
    let file = std::fs::File::create(out).map_err(io)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    let zerr = |e: zip::result::ZipError| StorageError::Corrupt(out.display().to_string(), e.to_string());
    let mut summary = ExportSummary::default();
    let mut listed = Vec::new();
    for (i, id) in calls.iter().enumerate() {
        let call = CallRef { tenant: tenant.into(), call_id: *id };
        let mut names: Vec<String> = store.list_call_objects(&call).await?.into_iter().map(|(n, _)| n).collect();
        if let Ok(entries) = std::fs::read_dir(store.spool().call_dir(tenant, *id)) {
            names.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| !n.starts_with('.') && !n.ends_with(".tmp")),
            );
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            continue;
        }
        for name in names {
            let bytes = store.get(&call, &name).await?;
            // Audio hardly compresses: stored as is (several times faster); text deflated.
            let o = if name.ends_with(".wav") { opts.compression_method(zip::CompressionMethod::Stored) } else { opts };
            zip.start_file(format!("{id}/{name}"), o).map_err(zerr)?;
            zip.write_all(&bytes).map_err(io)?;
            summary.files += 1;
            summary.bytes += bytes.len() as u64;
        }
        summary.calls += 1;
        listed.push(id.to_string());
        progress(i + 1, calls.len());
    }
    zip.start_file("README.txt", opts).map_err(zerr)?;
    zip.write_all(EXPORT_README.as_bytes()).map_err(io)?;
    zip.start_file("calls.json", opts).map_err(zerr)?;
    zip.write_all(serde_json::to_string_pretty(&listed).unwrap_or_default().as_bytes()).map_err(io)?;
    let mut w = zip.finish().map_err(zerr)?;
    w.flush().map_err(io)?;
    Ok(summary)
}

/// A download link's signature: HMAC-SHA256 over tenant, export id and expiry.
pub fn sign_link(secret: &str, tenant: &str, export_id: &str, expires: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("export\0{tenant}\0{export_id}\0{expires}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCheck {
    Valid,
    Expired,
    BadSignature,
}

/// Checks a download link (constant-time signature comparison).
pub fn check_link(
    secret: &str,
    tenant: &str,
    export_id: &str,
    expires: i64,
    sig: &str,
    now: DateTime<Utc>,
) -> LinkCheck {
    use subtle::ConstantTimeEq;
    let want = sign_link(secret, tenant, export_id, expires);
    if want.as_bytes().ct_eq(sig.as_bytes()).unwrap_u8() != 1 {
        return LinkCheck::BadSignature;
    }
    if now.timestamp() >= expires {
        return LinkCheck::Expired;
    }
    LinkCheck::Valid
}

/// An export as kept in `.meta/exports/<tenant>/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportRecord {
    pub id: String,
    pub tenant: String,
    /// `subject` or `tenant`.
    pub scope: String,
    pub state: String,
    pub done: usize,
    pub total: usize,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub summary: Option<ExportSummary>,
    #[serde(default)]
    pub error: Option<String>,
    /// The calls it covers (ids only), so another node can finish it if this one dies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<crate::call::CallId>,
}

pub const EXPORT_LINK_TTL_HOURS: i64 = 24;

/// Deletes the archives of exports whose link has expired (their records stay, so the
/// API answers `410 Gone`). Returns how many were deleted.
/// Exports of `tenant` still marked running (their builder may have died).
pub async fn running_exports(store: &Store, tenant: &str) -> Result<Vec<ExportRecord>, StorageError> {
    let mut out = Vec::new();
    for (rel, _) in store.list_meta(&format!("exports/{tenant}")).await?.iter().filter(|(r, _)| r.ends_with(".json")) {
        let Some(bytes) = store.get_meta(tenant, &format!("exports/{tenant}/{rel}")).await? else { continue };
        if let Ok(rec) = serde_json::from_slice::<ExportRecord>(&bytes) {
            if rec.state == "running" {
                out.push(rec);
            }
        }
    }
    Ok(out)
}

pub async fn sweep_exports(store: &Store, tenant: &str, now: DateTime<Utc>) -> Result<usize, StorageError> {
    let mut n = 0;
    let listed = store.list_meta(&format!("exports/{tenant}")).await?;
    for (rel, _) in listed.iter().filter(|(r, _)| r.ends_with(".json")) {
        let Some(bytes) = store.get_meta(tenant, &format!("exports/{tenant}/{rel}")).await? else { continue };
        let Ok(rec) = serde_json::from_slice::<ExportRecord>(&bytes) else { continue };
        let zip = format!("{}.zip", rel.trim_end_matches(".json"));
        if rec.expires_at.is_some_and(|e| e <= now) && listed.iter().any(|(r, _)| *r == zip) {
            store.delete_meta(&format!("exports/{tenant}/{zip}")).await?;
            n += 1;
        }
    }
    Ok(n)
}

// ---- tenant deletion ----

pub const TENANT_DELETION_GRACE_DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantDeletion {
    pub tenant: String,
    pub requested_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub by: String,
}

/// Marker names are not secret: they are kept in plain JSON, so a deletion can still
/// be carried out after the tenant's keys are gone.
pub async fn request_tenant_deletion(
    store: &Store,
    tenant: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<TenantDeletion, StorageError> {
    if let Some(d) = tenant_deletion(store, tenant).await? {
        return Ok(d);
    }
    let d = TenantDeletion {
        tenant: tenant.into(),
        requested_at: now,
        due_at: now + Duration::days(TENANT_DELETION_GRACE_DAYS),
        by: by.into(),
    };
    store
        .put_raw(
            &object_store::path::Path::from(format!("{}/tenant-deletion/{tenant}.json", crate::store::objects::META)),
            serde_json::to_vec(&d).unwrap(),
        )
        .await?;
    Ok(d)
}

pub async fn tenant_deletion(store: &Store, tenant: &str) -> Result<Option<TenantDeletion>, StorageError> {
    let path = object_store::path::Path::from(format!("{}/tenant-deletion/{tenant}.json", crate::store::objects::META));
    match store.raw(&path).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(StorageError::Backend(object_store::Error::NotFound { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Cancels a pending deletion. False if none was pending.
pub async fn cancel_tenant_deletion(store: &Store, tenant: &str) -> Result<bool, StorageError> {
    if tenant_deletion(store, tenant).await?.is_none() {
        return Ok(false);
    }
    store.delete_meta(&format!("tenant-deletion/{tenant}.json")).await?;
    Ok(true)
}

pub async fn is_tenant_deleted(store: &Store, tenant: &str) -> Result<bool, StorageError> {
    store.exists_meta(&format!("deleted-tenants/{tenant}")).await
}

pub async fn deleted_tenants(store: &Store) -> Result<BTreeSet<String>, StorageError> {
    Ok(store.list_meta("deleted-tenants").await?.into_iter().map(|(p, _)| p).collect())
}

/// Carries out a tenant's deletion: every object of the tenant (calls, index, holds,
/// exports, audit), its spool, then its keys (so any copy left anywhere — a backup of
/// the store — is unreadable); the tenant is marked deleted (ingest refused).
pub async fn delete_tenant_now(store: &Store, tenant: &str) -> Result<usize, StorageError> {
    store.put_marker(&format!("deleted-tenants/{tenant}")).await?;
    let mut n = store.delete_prefix(tenant).await?;
    for kind in ["subjects", "holds", "pending-erasure", "exports", "audit", "tombstones"] {
        n += store.delete_prefix(&format!("{}/{kind}/{tenant}", crate::store::objects::META)).await?;
    }
    let spool = store.spool().root().join(tenant);
    if spool.exists() {
        tokio::fs::remove_dir_all(&spool).await.map_err(|source| StorageError::Io { path: spool.clone(), source })?;
    }
    store.keys().update(|k| k.destroy_tenant(tenant))?;
    store.delete_meta(&format!("tenant-deletion/{tenant}.json")).await?;
    Ok(n)
}

/// Deletes every tenant whose grace period has ended. Returns them.
pub async fn run_due_tenant_deletions(store: &Store, now: DateTime<Utc>) -> Result<Vec<String>, StorageError> {
    let mut done = Vec::new();
    for (p, _) in store.list_meta("tenant-deletion").await? {
        let Some(tenant) = p.strip_suffix(".json") else { continue };
        if let Some(d) = tenant_deletion(store, tenant).await? {
            if d.due_at <= now {
                delete_tenant_now(store, tenant).await?;
                done.push(tenant.to_string());
            }
        }
    }
    Ok(done)
}

// ---- audit log ----

/// Days the audit log is kept (the promise: security logs at most 90 days).
pub const AUDIT_RETENTION_DAYS: i64 = 90;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub tenant: String,
    /// Who: `<role>:<sub>` for tokens, `operator:<user>` for the CLI, `system` for jobs.
    pub actor: String,
    pub action: String,
    /// A call, as `call:<keyed hash>`; or another object (`export:<id>`, `tenant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The client's address, for HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// How an audit entry names a call: a keyed hash, so an erasure leaves no id behind.
pub fn call_ref(store: &Store, tenant: &str, id: CallId) -> Result<String, StorageError> {
    Ok(format!("call:{}", &store.keyed_hash("audit-call", tenant, &id.to_string())?[..32]))
}

/// Appends an entry (one encrypted object per entry: append-only on any store).
pub async fn audit(store: &Store, e: &AuditEntry) -> Result<(), StorageError> {
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).expect("random");
    let suffix: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let rel = format!("audit/{}/{}/{}-{suffix}.json", e.tenant, e.at.format("%Y-%m-%d"), e.at.format("%H%M%S%.6f"));
    store.put_meta(&e.tenant, &rel, &serde_json::to_vec(e).unwrap()).await
}

/// Entries of a tenant between two times (inclusive), oldest first.
pub async fn read_audit(
    store: &Store,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    action: Option<&str>,
) -> Result<Vec<AuditEntry>, StorageError> {
    let mut out = Vec::new();
    let mut days: Vec<(String, u64)> = store.list_meta(&format!("audit/{tenant}")).await?;
    days.sort();
    let (lo, hi) = (from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string());
    for (rel, _) in days {
        let day = rel.split('/').next().unwrap_or("");
        if day < lo.as_str() || day > hi.as_str() {
            continue;
        }
        let Some(bytes) = store.get_meta(tenant, &format!("audit/{tenant}/{rel}")).await? else { continue };
        let Ok(e) = serde_json::from_slice::<AuditEntry>(&bytes) else { continue };
        if e.at >= from && e.at <= to && action.is_none_or(|a| e.action == a) {
            out.push(e);
        }
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

/// Deletes audit days older than `days` (at most [`AUDIT_RETENTION_DAYS`]). Returns entries deleted.
pub async fn sweep_audit(store: &Store, tenant: &str, now: DateTime<Utc>, days: i64) -> Result<usize, StorageError> {
    let cutoff = (now - Duration::days(days.min(AUDIT_RETENTION_DAYS))).format("%Y-%m-%d").to_string();
    let mut n = 0;
    for (rel, _) in store.list_meta(&format!("audit/{tenant}")).await? {
        let day = rel.split('/').next().unwrap_or("");
        if day < cutoff.as_str() {
            store.delete_meta(&format!("audit/{tenant}/{rel}")).await?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_normalise() {
        assert_eq!(normalize_subject(" +1 (555) 123-0000 "), "+15551230000");
        assert_eq!(normalize_subject("tel:+15551230000"), "+15551230000");
        assert_eq!(normalize_subject("sip:+15551230000@sbc.example.com"), "+15551230000");
        assert_eq!(normalize_subject("Alice@Example.COM"), "alice@example.com");
        assert_eq!(normalize_subject("crm-42"), "crm-42");
    }

    #[test]
    fn links_expire_and_resist_tampering() {
        let now = Utc::now();
        let exp = now.timestamp() + 24 * 3600;
        let sig = sign_link("s3cret", "acme", "x1", exp);
        assert_eq!(check_link("s3cret", "acme", "x1", exp, &sig, now), LinkCheck::Valid);
        assert_eq!(check_link("s3cret", "acme", "x1", exp, &sig, now + Duration::hours(24)), LinkCheck::Expired);
        assert_eq!(check_link("s3cret", "acme", "x2", exp, &sig, now), LinkCheck::BadSignature);
        assert_eq!(check_link("s3cret", "acme", "x1", exp + 3600, &sig, now), LinkCheck::BadSignature);
        assert_eq!(check_link("other", "acme", "x1", exp, &sig, now), LinkCheck::BadSignature);
    }
}
