//! Exports: a job that builds an encrypted ZIP of a subject's or the tenant's calls
//! (resumed by another node if its builder dies), its progress, and the download by
//! signed 24-hour link.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::app::Records;
use crate::store::privacy;

use axum::body::Body;

use super::audit::audit;
use super::auth::{Authorised, AuthorisedBody};
use super::{body, json_ok, Addr, ApiResult, Problem, SubjectBody};
use crate::call::CallId;
use crate::store::objects::StorageError;
use crate::store::privacy::{AuditEntry, ExportRecord, LinkCheck};

pub(super) fn export_rel(tenant: &str, id: &str, ext: &str) -> String {
    format!("exports/{tenant}/{id}.{ext}")
}

pub(super) async fn save_export(app: &Records, r: &ExportRecord) -> Result<(), StorageError> {
    app.store.put_meta(&r.tenant, &export_rel(&r.tenant, &r.id, "json"), &serde_json::to_vec(r).unwrap()).await
}

pub(super) async fn post_export(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    AuthorisedBody(p, bytes): AuthorisedBody,
) -> ApiResult {
    let b: SubjectBody = body(&bytes)?;
    let subject = b.subject.filter(|s| !s.trim().is_empty());
    let calls = match &subject {
        Some(s) => privacy::subject_calls(&app.store, &p.tenant, s).await?,
        None => app.store.list_calls(&p.tenant).await?,
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let rec = ExportRecord {
        id: id.clone(),
        tenant: p.tenant.clone(),
        scope: if subject.is_some() { "subject" } else { "tenant" }.into(),
        state: "running".into(),
        done: 0,
        total: calls.len(),
        created_at: app.now(),
        finished_at: None,
        expires_at: None,
        summary: None,
        error: None,
        calls: calls.clone(),
    };
    // Several nodes: the builder holds a lock on the export while it runs, so that
    // another node finishes it (and only then) if this one dies.
    let lease = match &app.cluster {
        Some(c) => match c.try_lock(&format!("export:{id}")).await {
            Some(g) => Some(g),
            None => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    "exports need Redis when several nodes share the store; retry shortly",
                ))
            }
        },
        None => None,
    };
    // Marked as being built here before it is saved as running (resume_exports skips it).
    app.exports.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (0, calls.len()));
    if let Err(e) = save_export(&app, &rec).await {
        app.exports.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        return Err(e.into());
    }
    audit(
        &app,
        &p,
        addr,
        "export.start",
        Some(format!("export:{id}")),
        json!({ "scope": rec.scope, "calls": calls.len() }),
    )
    .await;
    let total = calls.len();
    // Building the ZIP is blocking IO and decryption: a blocking thread drives it.
    let (app2, handle) = (app.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || handle.block_on(run_export(app2, rec, calls, lease)));
    Ok(json_ok(StatusCode::ACCEPTED, json!({ "id": id, "state": "running", "total": total })))
}

/// Finishes exports whose builder died: with several nodes, those whose lock has
/// expired (taken here, so one node does it); alone, those this process is not
/// building (left by a crash). Called from the retention round.
pub(crate) async fn resume_exports(app: &Arc<Records>, tenant: &str) {
    let running = match privacy::running_exports(&app.store, tenant).await {
        Ok(r) => r,
        Err(e) => return tracing::error!(tenant, error = %e, "listing unfinished exports"),
    };
    for mut rec in running {
        if app.exports.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&rec.id) {
            continue;
        }
        let lease = match &app.cluster {
            Some(c) => match c.try_lock(&format!("export:{}", rec.id)).await {
                Some(g) => Some(g),
                None => continue,
            },
            None => None,
        };
        if rec.calls.is_empty() && rec.total > 0 {
            rec.state = "failed".into();
            rec.error = Some("interrupted before its calls were recorded; request it again".into());
            let _ = save_export(app, &rec).await;
            continue;
        }
        tracing::warn!(export = %rec.id, tenant, "resuming an export whose builder stopped");
        app.exports.lock().unwrap_or_else(|e| e.into_inner()).insert(rec.id.clone(), (0, rec.total));
        let calls = rec.calls.clone();
        let (app2, handle) = (app.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || handle.block_on(run_export(app2, rec, calls, lease)));
    }
}

pub(super) async fn run_export(
    app: Arc<Records>,
    mut rec: ExportRecord,
    calls: Vec<CallId>,
    _lease: Option<crate::cluster::node::LockGuard>,
) {
    let tmp_dir = app.store.spool().root().join(".exports");
    let _ = std::fs::create_dir_all(&tmp_dir);
    let tmp = tmp_dir.join(format!("{}.zip", rec.id));
    let id = rec.id.clone();
    let progress = |done, total| {
        app.exports.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (done, total));
    };
    let result = async {
        let summary = privacy::build_export(&app.store, &rec.tenant, &calls, &tmp, progress).await?;
        let path = object_store::path::Path::from(format!(
            "{}/{}",
            crate::store::objects::META,
            export_rel(&rec.tenant, &rec.id, "zip")
        ));
        app.store.put_encrypted_file(&rec.tenant, &path, &tmp).await?;
        Ok::<_, StorageError>(summary)
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let now = app.now();
    match result {
        Ok(summary) => {
            rec.state = "done".into();
            rec.done = rec.total;
            rec.summary = Some(summary);
            rec.finished_at = Some(now);
            rec.expires_at = Some(now + chrono::Duration::hours(privacy::EXPORT_LINK_TTL_HOURS));
        }
        Err(e) => {
            tracing::error!(export = %rec.id, error = %e, "export failed");
            rec.state = "failed".into();
            rec.error = Some(e.to_string());
        }
    }
    if let Err(e) = save_export(&app, &rec).await {
        tracing::error!(export = %rec.id, error = %e, "saving export state");
    }
    app.exports.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
}

pub(super) async fn load_export(app: &Records, tenant: &str, id: &str) -> Result<ExportRecord, Problem> {
    if !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Problem::not_found());
    }
    let bytes = app.store.get_meta(tenant, &export_rel(tenant, id, "json")).await?.ok_or_else(Problem::not_found)?;
    serde_json::from_slice(&bytes).map_err(|_| Problem::not_found())
}

pub(super) async fn get_export(
    State(app): State<Arc<Records>>,
    Path(id): Path<String>,
    Authorised(p): Authorised,
) -> ApiResult {
    let mut rec = load_export(&app, &p.tenant, &id).await?;
    if let Some((done, total)) = app.exports.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        (rec.done, rec.total) = (*done, *total);
    }
    let now = app.now();
    if rec.expires_at.is_some_and(|e| e <= now) {
        return Err(Problem::new(StatusCode::GONE, "Gone", "the export's download link has expired"));
    }
    let mut v = serde_json::to_value(&rec).unwrap_or_default();
    if let (Some(exp), Some(secret)) =
        (rec.expires_at, app.config.tenant(&p.tenant).and_then(|t| t.signing_secret.as_deref()))
    {
        let e = exp.timestamp();
        v["download_url"] = json!(format!(
            "/v1/exports/{id}/download?tenant={}&expires={e}&sig={}",
            p.tenant,
            privacy::sign_link(secret, &p.tenant, &id, e)
        ));
    }
    Ok(json_ok(StatusCode::OK, v))
}

#[derive(Deserialize, Default)]
pub(super) struct LinkQuery {
    tenant: Option<String>,
    expires: Option<i64>,
    sig: Option<String>,
}

pub(super) async fn download_export(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> ApiResult {
    let forbidden = || Problem::new(StatusCode::FORBIDDEN, "Forbidden", "invalid download link");
    let (Some(tenant), Some(expires), Some(sig)) = (q.tenant, q.expires, q.sig) else { return Err(forbidden()) };
    let Some(secret) = app.active_tenant(&tenant).and_then(|t| t.signing_secret.clone()) else {
        return Err(forbidden());
    };
    match privacy::check_link(&secret, &tenant, &id, expires, &sig, app.now()) {
        LinkCheck::BadSignature => return Err(forbidden()),
        LinkCheck::Expired => {
            return Err(Problem::new(StatusCode::GONE, "Gone", "the download link has expired (valid 24 hours)"))
        }
        LinkCheck::Valid => {}
    }
    let bytes = app.store.get_meta(&tenant, &export_rel(&tenant, &id, "zip")).await?.ok_or_else(Problem::not_found)?;
    let e = AuditEntry {
        at: app.now(),
        tenant: tenant.clone(),
        actor: "link".into(),
        action: "export.download".into(),
        target: Some(format!("export:{id}")),
        addr: Some(addr.ip().to_string()),
        detail: json!({ "bytes": bytes.len() }),
    };
    let _ = privacy::audit(&app.store, &e).await;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"earshot-export-{id}.zip\""))
        .body(Body::from(bytes))
        .expect("response"))
}
