//! The admin API under `/v1`: calls, recordings (HTTP Range), holds, retention,
//! erasure by subject, exports with signed 24-hour links, tenant deletion with a
//! 7-day grace period, and the audit log.
//!
//! Tokens per docs/contracts.md (`Authorization: Bearer`). Roles: `admin` (everything
//! of its tenant), `manager` (read the tenant's calls, retention), `rep` (read its own
//! calls), `auditor` (the audit log). A call of another tenant, or another rep's call,
//! is `404`, never `403`; a role that may not do an operation at all gets `403`.
//! Errors are RFC 9457 problem details. The route table [`API`] builds both the router
//! and the OpenAPI document (`/v1/openapi.json`), so the two cannot drift apart.

pub mod problem;
pub use problem::Problem;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::call::CallId;
use crate::live::token;
use crate::live::token::{Principal, TokenRole};
use crate::store::objects::{CallRef, StorageError};
use crate::store::privacy;
use crate::store::privacy::{AuditEntry, ExportRecord, LinkCheck};

/// One operation of the API.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Roles allowed; empty: no token (signed link or public document).
    pub roles: &'static [TokenRole],
    pub ok: u16,
}

use TokenRole::{Admin, Auditor, Manager, Rep};

const READERS: &[TokenRole] = &[Admin, Manager, Rep];

pub const API: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/calls",
        summary: "List calls (filters: from, to, campaign, rep, participant; cursor, limit)",
        roles: READERS,
        ok: 200,
    },
    Route { method: "GET", path: "/v1/calls/{id}", summary: "A call's manifest", roles: READERS, ok: 200 },
    Route {
        method: "DELETE",
        path: "/v1/calls/{id}",
        summary: "Erase every object of a call",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/recording",
        summary: "The recording, decrypted (WAV; HTTP Range)",
        roles: READERS,
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/transcript",
        summary: "The transcript (JSON, or text with ?format=txt)",
        roles: READERS,
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/hints",
        summary: "Coaching hints raised during the call",
        roles: READERS,
        ok: 200,
    },
    Route { method: "GET", path: "/v1/calls/{id}/scorecard", summary: "The call's scorecard", roles: READERS, ok: 200 },
    Route {
        method: "PUT",
        path: "/v1/calls/{id}/hold",
        summary: "Put a call under legal hold",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "DELETE",
        path: "/v1/calls/{id}/hold",
        summary: "Release a call's hold (a pending erasure then runs)",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "PUT",
        path: "/v1/tenant/hold",
        summary: "Legal hold on every call of the tenant",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "DELETE",
        path: "/v1/tenant/hold",
        summary: "Release the tenant-wide hold",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/retention",
        summary: "Effective retention policies",
        roles: &[Admin, Manager],
        ok: 200,
    },
    Route {
        method: "POST",
        path: "/v1/erasure",
        summary: "Erase every call of a data subject; returns a receipt",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "POST",
        path: "/v1/exports",
        summary: "Start an export (a subject, or the whole tenant)",
        roles: &[Admin],
        ok: 202,
    },
    Route {
        method: "GET",
        path: "/v1/exports/{id}",
        summary: "Export progress; the signed download URL when done",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/exports/{id}/download",
        summary: "Download an export (signed link, valid 24 hours; no token)",
        roles: &[],
        ok: 200,
    },
    Route {
        method: "POST",
        path: "/v1/tenant/deletion",
        summary: "Delete the tenant after a 7-day grace period",
        roles: &[Admin],
        ok: 202,
    },
    Route {
        method: "GET",
        path: "/v1/tenant/deletion",
        summary: "A pending tenant deletion",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "DELETE",
        path: "/v1/tenant/deletion",
        summary: "Cancel a pending tenant deletion",
        roles: &[Admin],
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/audit",
        summary: "The audit log (filters: from, to, action)",
        roles: &[Admin, Auditor],
        ok: 200,
    },
    Route {
        method: "GET",
        path: "/v1/live/calls",
        summary: "Live calls of the tenant on every node (from the Redis registry; this node's alone without Redis)",
        roles: &[Admin, Manager],
        ok: 200,
    },
    Route { method: "GET", path: "/v1/openapi.json", summary: "This document", roles: &[], ok: 200 },
];

type ApiResult = Result<Response, Problem>;

fn json_ok(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// The route's allowed roles.
fn route(method: &str, path: &str) -> &'static Route {
    API.iter().find(|r| r.method == method && r.path == path).expect("route in the table")
}

fn authorise(app: &AppState, headers: &HeaderMap, method: &str, path: &str) -> Result<Principal, Problem> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| {
            Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "a token is required (Authorization: Bearer)")
        })?;
    let p = token::verify(&app.config, token.trim())
        .map_err(|e| Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()))?;
    if app.deleted_tenants.read().unwrap_or_else(|e| e.into_inner()).contains(&p.tenant) {
        return Err(Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "tenant deleted"));
    }
    let r = route(method, path);
    if !r.roles.contains(&p.claims.role) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("role {:?} may not {} {}", p.claims.role, r.method, r.path),
        ));
    }
    Ok(p)
}

fn actor(p: &Principal) -> String {
    format!(
        "{}:{}",
        serde_json::to_value(p.claims.role).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        p.claims.sub
    )
}

async fn audit(app: &AppState, p: &Principal, addr: SocketAddr, action: &str, target: Option<String>, detail: Value) {
    let e = AuditEntry {
        at: app.now(),
        tenant: p.tenant.clone(),
        actor: actor(p),
        action: action.into(),
        target,
        addr: Some(addr.ip().to_string()),
        detail,
    };
    if let Err(err) = privacy::audit(&app.store, &e).await {
        tracing::error!(error = %err, action, "audit log write failed");
    }
}

/// An audit entry by the system (jobs).
pub async fn audit_system(app: &AppState, tenant: &str, action: &str, target: Option<String>, detail: Value) {
    let e = AuditEntry {
        at: app.now(),
        tenant: tenant.into(),
        actor: "system".into(),
        action: action.into(),
        target,
        addr: None,
        detail,
    };
    if let Err(err) = privacy::audit(&app.store, &e).await {
        tracing::error!(error = %err, action, "audit log write failed");
    }
}

fn call_target(app: &AppState, tenant: &str, id: CallId) -> Option<String> {
    privacy::call_ref(&app.store, tenant, id).ok()
}

/// The call, if the principal may see it (else 404).
async fn visible_call(
    app: &AppState,
    p: &Principal,
    id: &str,
) -> Result<(CallRef, crate::store::manifest::Manifest), Problem> {
    let id = CallId::parse(id).ok_or_else(Problem::not_found)?;
    if p.claims.call.as_deref().is_some_and(|c| c != id.to_string()) {
        return Err(Problem::not_found());
    }
    let call = app.store.find_call_in(&p.tenant, id).await?;
    let m = app.store.manifest(&call).await?;
    if p.claims.role == Rep && m.rep_id.as_deref() != Some(p.claims.sub.as_str()) {
        return Err(Problem::not_found());
    }
    Ok((call, m))
}

pub fn router() -> Router<Arc<AppState>> {
    let mut r = Router::new();
    for route in API {
        r = r.route(route.path, handler(route.method, route.path));
    }
    r
}

fn filter(m: &str) -> MethodFilter {
    match m {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "POST" => MethodFilter::POST,
        "DELETE" => MethodFilter::DELETE,
        other => panic!("method {other} not supported"),
    }
}

fn handler(method: &'static str, path: &'static str) -> MethodRouter<Arc<AppState>> {
    let f = filter(method);
    match (method, path) {
        ("GET", "/v1/calls") => on(f, list_calls),
        ("GET", "/v1/calls/{id}") => on(f, get_call),
        ("DELETE", "/v1/calls/{id}") => on(f, delete_call),
        ("GET", "/v1/calls/{id}/recording") => on(f, get_recording),
        ("GET", "/v1/calls/{id}/transcript") => on(f, get_transcript),
        ("GET", "/v1/calls/{id}/hints") => {
            on(f, |s, c, h, p| get_file(s, c, h, p, "hints.json", "/v1/calls/{id}/hints"))
        }
        ("GET", "/v1/calls/{id}/scorecard") => {
            on(f, |s, c, h, p| get_file(s, c, h, p, "scorecard.json", "/v1/calls/{id}/scorecard"))
        }
        ("PUT", "/v1/calls/{id}/hold") => on(f, put_hold),
        ("DELETE", "/v1/calls/{id}/hold") => on(f, delete_hold),
        ("PUT", "/v1/tenant/hold") => on(f, |s, c, h| tenant_hold(s, c, h, true)),
        ("DELETE", "/v1/tenant/hold") => on(f, |s, c, h| tenant_hold(s, c, h, false)),
        ("GET", "/v1/retention") => on(f, get_retention),
        ("POST", "/v1/erasure") => on(f, post_erasure),
        ("POST", "/v1/exports") => on(f, post_export),
        ("GET", "/v1/exports/{id}") => on(f, get_export),
        ("GET", "/v1/exports/{id}/download") => on(f, download_export),
        ("POST", "/v1/tenant/deletion") => on(f, post_tenant_deletion),
        ("GET", "/v1/tenant/deletion") => on(f, get_tenant_deletion),
        ("DELETE", "/v1/tenant/deletion") => on(f, delete_tenant_deletion),
        ("GET", "/v1/audit") => on(f, get_audit),
        ("GET", "/v1/live/calls") => on(f, get_live_calls),
        ("GET", "/v1/openapi.json") => on(f, || async { json_ok(StatusCode::OK, openapi()) }),
        (m, p) => panic!("no handler for {m} {p}"),
    }
}

type Addr = ConnectInfo<SocketAddr>;

#[derive(Deserialize, Default)]
struct ListQuery {
    from: Option<String>,
    to: Option<String>,
    campaign: Option<String>,
    rep: Option<String>,
    participant: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, Problem> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("{s:?} is not an RFC 3339 time")))
}

async fn list_calls(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/calls")?;
    let from = q.from.as_deref().map(parse_time).transpose()?;
    let to = q.to.as_deref().map(parse_time).transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let cursor = match q.cursor.as_deref() {
        Some(c) => {
            Some(CallId::parse(c).ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, "Bad request", "bad cursor"))?)
        }
        None => None,
    };
    let mut ids = match &q.participant {
        Some(s) => privacy::subject_calls(&app.store, &p.tenant, s).await?,
        None => app.store.list_calls(&p.tenant).await?,
    };
    ids.sort();
    let mut out = Vec::new();
    let mut next = None;
    for id in ids {
        if cursor.is_some_and(|c| id <= c) {
            continue;
        }
        let at = id.created_at();
        if from.zip(at).is_some_and(|(f, a)| a < f) || to.zip(at).is_some_and(|(t, a)| a > t) {
            continue;
        }
        let Ok(m) = app.store.manifest(&CallRef { tenant: p.tenant.clone(), call_id: id }).await else { continue };
        if p.claims.role == Rep && m.rep_id.as_deref() != Some(p.claims.sub.as_str()) {
            continue;
        }
        if q.campaign.as_ref().is_some_and(|c| m.campaign.as_ref() != Some(c))
            || q.rep.as_ref().is_some_and(|r| m.rep_id.as_ref() != Some(r))
        {
            continue;
        }
        if out.len() == limit {
            next = out.last().map(|v: &Value| v["call_id"].clone());
            break;
        }
        out.push(json!({
            "call_id": m.call_id, "started_at": m.started_at, "ended_at": m.ended_at, "campaign": m.campaign,
            "rep_id": m.rep_id, "source": m.source, "recording": m.recording, "outcome": m.outcome,
            "duration_ms": m.audio.as_ref().map(|a| a.duration_ms),
        }));
    }
    audit(&app, &p, addr, "calls.list", None, json!({ "returned": out.len() })).await;
    Ok(json_ok(StatusCode::OK, json!({ "calls": out, "next_cursor": next })))
}

async fn get_call(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/calls/{id}")?;
    let (call, m) = visible_call(&app, &p, &id).await?;
    audit(&app, &p, addr, "call.read", call_target(&app, &p.tenant, call.call_id), Value::Null).await;
    Ok(json_ok(StatusCode::OK, serde_json::to_value(m).unwrap_or_default()))
}

async fn delete_call(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let p = authorise(&app, &headers, "DELETE", "/v1/calls/{id}")?;
    let (call, _) = visible_call(&app, &p, &id).await?;
    if app.store.is_held(&call).await? {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Under legal hold",
            "the call is under legal hold: release it first",
        ));
    }
    let erased = privacy::erase_call(&app.store, &call).await?;
    audit(
        &app,
        &p,
        addr,
        "call.erase",
        call_target(&app, &p.tenant, call.call_id),
        json!({ "objects": erased.objects, "bytes": erased.bytes }),
    )
    .await;
    Ok(json_ok(StatusCode::OK, json!({ "erased": erased })))
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a length.
fn parse_range(h: &str, len: u64) -> Option<Option<std::ops::Range<u64>>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return Some(None); // multiple ranges: not served (answered whole)
    }
    let (a, b) = spec.split_once('-')?;
    let r = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            len.saturating_sub(n)..len
        }
        (a, "") => a.parse().ok()?..len,
        (a, b) => a.parse().ok()?..b.parse::<u64>().ok()?.saturating_add(1).min(len),
    };
    Some(Some(r))
}

async fn get_recording(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/calls/{id}/recording")?;
    let (call, m) = visible_call(&app, &p, &id).await?;
    if m.audio.is_none() && !m.recording {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", "this call was not recorded"));
    }
    let target = call_target(&app, &p.tenant, call.call_id);
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Length first (a zero-length range read gives it without reading the audio).
    let (_, total) = app.store.get_range(&call, crate::store::spool::AUDIO_FILE, 0..0).await?;
    let wanted = range.as_deref().and_then(|h| parse_range(h, total)).flatten();
    let resp = match wanted {
        Some(r) if r.start >= total || r.start >= r.end => {
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{total}"))])
                .into_response());
        }
        Some(r) => {
            let (bytes, _) = app.store.get_range(&call, crate::store::spool::AUDIO_FILE, r.clone()).await?;
            audit(&app, &p, addr, "recording.read", target, json!({ "range": [r.start, r.end] })).await;
            Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, "audio/wav")
                .header(header::ACCEPT_RANGES, "bytes")
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{total}", r.start, r.start + bytes.len() as u64 - 1),
                )
                .body(Body::from(bytes))
                .expect("response")
        }
        None => {
            let bytes = app.store.get(&call, crate::store::spool::AUDIO_FILE).await?;
            audit(&app, &p, addr, "recording.read", target, Value::Null).await;
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "audio/wav")
                .header(header::ACCEPT_RANGES, "bytes")
                .body(Body::from(bytes))
                .expect("response")
        }
    };
    Ok(resp)
}

#[derive(Deserialize, Default)]
struct FormatQuery {
    format: Option<String>,
}

async fn get_transcript(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/calls/{id}/transcript")?;
    let (call, _) = visible_call(&app, &p, &id).await?;
    let txt = q.format.as_deref() == Some("txt");
    let bytes = app.store.get(&call, if txt { "transcript.txt" } else { "transcript.json" }).await?;
    audit(&app, &p, addr, "transcript.read", call_target(&app, &p.tenant, call.call_id), Value::Null).await;
    let ct = if txt { "text/plain; charset=utf-8" } else { "application/json" };
    Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response())
}

async fn get_file(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
    name: &'static str,
    path: &'static str,
) -> ApiResult {
    let p = authorise(&app, &headers, "GET", path)?;
    let (call, _) = visible_call(&app, &p, &id).await?;
    let bytes = app.store.get(&call, name).await?;
    audit(
        &app,
        &p,
        addr,
        &format!("{}.read", name.trim_end_matches(".json")),
        call_target(&app, &p.tenant, call.call_id),
        Value::Null,
    )
    .await;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

#[derive(Deserialize, Default)]
struct HoldBody {
    #[serde(default)]
    reason: String,
}

fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("body: {e}")))
}

async fn put_hold(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let p = authorise(&app, &headers, "PUT", "/v1/calls/{id}/hold")?;
    let b: HoldBody = body(&bytes)?;
    let (call, _) = visible_call(&app, &p, &id).await?;
    app.store.hold(&call, &b.reason, app.now()).await?;
    audit(&app, &p, addr, "hold.set", call_target(&app, &p.tenant, call.call_id), json!({ "reason": b.reason })).await;
    Ok(json_ok(StatusCode::OK, json!({ "held": true })))
}

async fn delete_hold(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let p = authorise(&app, &headers, "DELETE", "/v1/calls/{id}/hold")?;
    let (call, _) = visible_call(&app, &p, &id).await?;
    let (was, erased) = privacy::release_hold(&app.store, &call).await?;
    let target = call_target(&app, &p.tenant, call.call_id);
    audit(&app, &p, addr, "hold.release", target.clone(), json!({ "was_held": was })).await;
    if let Some(e) = &erased {
        audit(&app, &p, addr, "call.erase", target, json!({ "objects": e.objects, "pending_erasure": true })).await;
    }
    Ok(json_ok(StatusCode::OK, json!({ "released": was, "erased": erased })))
}

async fn tenant_hold(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    on: bool,
) -> ApiResult {
    let p = authorise(&app, &headers, if on { "PUT" } else { "DELETE" }, "/v1/tenant/hold")?;
    app.store.set_tenant_hold(&p.tenant, on, "admin API", app.now()).await?;
    let erased = if on { Vec::new() } else { privacy::run_pending_erasures(&app.store, &p.tenant).await? };
    audit(
        &app,
        &p,
        addr,
        if on { "tenant_hold.set" } else { "tenant_hold.release" },
        Some("tenant".into()),
        json!({ "pending_erased": erased.len() }),
    )
    .await;
    Ok(json_ok(StatusCode::OK, json!({ "tenant_hold": on, "erased": erased.len() })))
}

async fn get_live_calls(State(app): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/live/calls")?;
    let here = app.cluster.as_ref().map(|c| c.node.clone());
    let local = || -> Vec<Value> {
        app.live
            .live_calls(&p.tenant)
            .into_iter()
            .filter(|(_, owner)| owner.is_none())
            .map(|(id, _)| json!({ "call_id": id.to_string(), "node": here }))
            .collect()
    };
    let (calls, source) = match &app.cluster {
        Some(c) => match c.live_calls(&p.tenant).await {
            Some(entries) => {
                (entries.into_iter().map(|e| json!({ "call_id": e.call_id, "node": e.node })).collect(), "registry")
            }
            // Redis unreachable: what this node knows (its own calls), said so.
            None => (local(), "local"),
        },
        None => (local(), "local"),
    };
    Ok(json_ok(StatusCode::OK, json!({ "calls": calls, "source": source })))
}

async fn get_retention(State(app): State<Arc<AppState>>, ConnectInfo(addr): Addr, headers: HeaderMap) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/retention")?;
    // The policies as the sweeper sees them: the config file as it is now.
    let config = match app.config_path.clone() {
        Some(path) => tokio::task::spawn_blocking(move || crate::config::Config::load(&path))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| app.config.clone()),
        None => app.config.clone(),
    };
    let t = config.tenant(&p.tenant).ok_or_else(Problem::not_found)?;
    let policy = t.retention_policy();
    let kinds = |c: Option<&str>| {
        policy.as_ref().map(|pol| {
            use crate::store::retention::Kind;
            json!({ "audio_days": pol.days_for(c, Kind::Audio), "transcript_days": pol.days_for(c, Kind::Transcript), "coaching_days": pol.days_for(c, Kind::Coaching) })
        })
    };
    let campaigns: serde_json::Map<String, Value> = t
        .campaigns
        .iter()
        .map(|(name, c)| {
            (name.clone(), json!({ "recording": c.recording.unwrap_or(t.recording), "effective": kinds(Some(name)) }))
        })
        .collect();
    let v = json!({
        "tenant": p.tenant,
        "plan_days": t.retention_days,
        "effective": kinds(None),
        "recording": t.recording,
        "legal_hold": { "config": t.legal_hold, "api": app.store.tenant_hold(&p.tenant).await? },
        "campaigns": campaigns,
        "audit_log_days": privacy::AUDIT_RETENTION_DAYS,
    });
    audit(&app, &p, addr, "retention.read", None, Value::Null).await;
    Ok(json_ok(StatusCode::OK, v))
}

#[derive(Deserialize, Default)]
struct SubjectBody {
    subject: Option<String>,
}

async fn post_erasure(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let p = authorise(&app, &headers, "POST", "/v1/erasure")?;
    let b: SubjectBody = body(&bytes)?;
    let subject = b.subject.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "subject (phone number, email or participant id) is required",
        )
    })?;
    let receipt = privacy::erase_subject(&app.store, &p.tenant, &subject, app.now()).await?;
    let subject_hash = app
        .store
        .keyed_hash("audit-subject", &p.tenant, &privacy::normalize_subject(&subject))
        .map(|h| h[..32].to_string())
        .ok();
    audit(&app, &p, addr, "erasure", subject_hash.map(|h| format!("subject:{h}")), json!({ "erased_calls": receipt.erased.len(), "held_calls": receipt.held.len(), "objects": receipt.erased.iter().map(|e| e.objects).sum::<usize>() })).await;
    Ok(json_ok(StatusCode::OK, serde_json::to_value(receipt).unwrap_or_default()))
}

fn export_rel(tenant: &str, id: &str, ext: &str) -> String {
    format!("exports/{tenant}/{id}.{ext}")
}

async fn save_export(app: &AppState, r: &ExportRecord) -> Result<(), StorageError> {
    app.store.put_meta(&r.tenant, &export_rel(&r.tenant, &r.id, "json"), &serde_json::to_vec(r).unwrap()).await
}

async fn post_export(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let p = authorise(&app, &headers, "POST", "/v1/exports")?;
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
pub(crate) async fn resume_exports(app: &Arc<AppState>, tenant: &str) {
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

async fn run_export(
    app: Arc<AppState>,
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

async fn load_export(app: &AppState, tenant: &str, id: &str) -> Result<ExportRecord, Problem> {
    if !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Problem::not_found());
    }
    let bytes = app.store.get_meta(tenant, &export_rel(tenant, id, "json")).await?.ok_or_else(Problem::not_found)?;
    serde_json::from_slice(&bytes).map_err(|_| Problem::not_found())
}

async fn get_export(State(app): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/exports/{id}")?;
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
struct LinkQuery {
    tenant: Option<String>,
    expires: Option<i64>,
    sig: Option<String>,
}

async fn download_export(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> ApiResult {
    let forbidden = || Problem::new(StatusCode::FORBIDDEN, "Forbidden", "invalid download link");
    let (Some(tenant), Some(expires), Some(sig)) = (q.tenant, q.expires, q.sig) else { return Err(forbidden()) };
    let Some(secret) = app.ingest_tenant(&tenant).and_then(|t| t.signing_secret.clone()) else {
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

async fn post_tenant_deletion(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
) -> ApiResult {
    let p = authorise(&app, &headers, "POST", "/v1/tenant/deletion")?;
    let d = privacy::request_tenant_deletion(&app.store, &p.tenant, &actor(&p), app.now()).await?;
    audit(&app, &p, addr, "tenant_deletion.request", Some("tenant".into()), json!({ "due_at": d.due_at })).await;
    Ok(json_ok(StatusCode::ACCEPTED, serde_json::to_value(d).unwrap_or_default()))
}

async fn get_tenant_deletion(State(app): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/tenant/deletion")?;
    let d = privacy::tenant_deletion(&app.store, &p.tenant).await?.ok_or_else(Problem::not_found)?;
    Ok(json_ok(StatusCode::OK, serde_json::to_value(d).unwrap_or_default()))
}

async fn delete_tenant_deletion(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
) -> ApiResult {
    let p = authorise(&app, &headers, "DELETE", "/v1/tenant/deletion")?;
    if !privacy::cancel_tenant_deletion(&app.store, &p.tenant).await? {
        return Err(Problem::not_found());
    }
    audit(&app, &p, addr, "tenant_deletion.cancel", Some("tenant".into()), Value::Null).await;
    Ok(json_ok(StatusCode::OK, json!({ "cancelled": true })))
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
}

async fn get_audit(
    State(app): State<Arc<AppState>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let p = authorise(&app, &headers, "GET", "/v1/audit")?;
    let now = app.now();
    let from = q
        .from
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now - chrono::Duration::days(privacy::AUDIT_RETENTION_DAYS));
    let to = q.to.as_deref().map(parse_time).transpose()?.unwrap_or(now + chrono::Duration::minutes(1));
    let entries = privacy::read_audit(&app.store, &p.tenant, from, to, q.action.as_deref()).await?;
    audit(&app, &p, addr, "audit.read", None, json!({ "returned": entries.len() })).await;
    Ok(json_ok(StatusCode::OK, json!({ "entries": entries })))
}

/// The OpenAPI 3.1 document, from the route table.
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in API {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut responses = serde_json::Map::new();
        responses.insert(r.ok.to_string(), json!({ "description": "OK" }));
        let problem = |d: &str| json!({ "description": d, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } });
        if !r.roles.is_empty() {
            responses.insert("401".into(), problem("No or bad token"));
            responses.insert("403".into(), problem("The token's role may not do this"));
        }
        responses.insert("404".into(), problem("No such resource in the token's tenant"));
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method.to_lowercase(), r.path.replace(['/', '{', '}', '.'], "_")),
            "responses": responses,
            "x-roles": r.roles.iter().map(|x| serde_json::to_value(x).unwrap()).collect::<Vec<_>>(),
        });
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        if r.roles.is_empty() {
            op["security"] = json!([]);
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Earshot admin API", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": { "Problem": { "type": "object", "properties": {
                "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" }, "detail": { "type": "string" } } } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Some(0..100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some(Some(900..1000)));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Some(900..1000)));
        assert_eq!(parse_range("bytes=0-5000", 1000), Some(Some(0..1000)));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Some(None));
        assert_eq!(parse_range("items=0-1", 1000), None);
    }

    #[test]
    fn the_document_lists_every_route_once() {
        let doc = openapi();
        let n: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(n, API.len());
    }
}
