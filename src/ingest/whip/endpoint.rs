//! WHIP (RFC 9725): `POST /whip` with an SDP offer and a publisher token answers
//! `201 Created` with the SDP answer and a session `Location`; `DELETE` on it ends the
//! session; `PATCH` is `405` (no trickle ICE: the answer carries every candidate);
//! `OPTIONS` answers CORS preflights.
//!
//! This file owns the HTTP side (who may push, what the request asks for, refusals,
//! redirects to the call's node); each session's peer connection and its task are in
//! `session`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;

use super::session::{build_peer, join_call, leave, negotiate, run_session, Leg};
use crate::admin::problem::Problem;
use crate::app::Intake;
use crate::ingest::whip::registry::{LegEnd, SessionEntry};
use crate::ingest::whip::request as core;
use crate::ingest::whip::request::WhipParams;
use crate::live::token;
use crate::live::token::TokenRole;

pub fn router() -> Router<crate::app::AppState> {
    Router::new()
        .route("/whip", post(create).options(preflight))
        .route("/whip/{id}", delete(remove).patch(patch).options(preflight))
        .route("/whip/publisher.js", axum::routing::get(publisher_js))
}

pub(super) fn cors(app: &Intake, mut r: Response) -> Response {
    let origin = app.config.whip.as_ref().map_or("*", |w| w.allow_origin.as_str());
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Link, ETag, Accept-Patch"));
    r
}

pub(super) async fn preflight(State(app): State<Arc<Intake>>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, If-Match, X-Earshot-Call, X-Earshot-Campaign, X-Earshot-Rep, X-Earshot-Party",
        ),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    cors(&app, r)
}

pub(super) async fn publisher_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("publisher.js")).into_response()
}

/// `PATCH`: trickle ICE and ICE restarts are not supported; the answer to the `POST`
/// already carries every server candidate (RFC 9725 §4.3.1 allows this `405`).
pub(super) async fn patch(State(app): State<Arc<Intake>>) -> Response {
    let p = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "this WHIP server gathers all its candidates before answering: no trickle ICE or ICE restart (PATCH); end the session with DELETE and POST again");
    let mut r = p.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    cors(&app, r)
}

pub(super) fn refuse(app: &Intake, result: &'static str, p: Problem) -> Response {
    app.metrics.whip_sessions.with_label_values(&[result]).inc();
    tracing::info!(result, detail = %p.detail, "WHIP session refused");
    let retry = p.status == StatusCode::SERVICE_UNAVAILABLE;
    let mut r = p.into_response();
    if retry {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    cors(app, r)
}

/// `307` to the node that owns the call. Browsers drop `Authorization` on a
/// cross-origin redirect, so the URL carries a fresh publisher token for this call
/// only, valid for a minute (`access_token`, as RFC 6750 allows).
pub(super) fn redirect(
    app: &Arc<Intake>,
    to: &str,
    query: Option<&str>,
    principal: &token::Principal,
    call_key: &str,
) -> Response {
    let kept: Vec<&str> =
        query.unwrap_or("").split('&').filter(|kv| !kv.is_empty() && !kv.starts_with("access_token=")).collect();
    let mut url = format!("{}/whip?{}", to.trim_end_matches('/'), kept.join("&"));
    if let Ok(t) = token::issue(
        &app.config,
        &principal.tenant,
        &principal.claims.sub,
        TokenRole::Publisher,
        std::time::Duration::from_secs(60),
        Some(call_key.to_string()),
    ) {
        if !kept.is_empty() {
            url.push('&');
        }
        url.push_str("access_token=");
        url.push_str(&t);
    }
    app.metrics.cluster_redirects.inc();
    app.metrics.whip_sessions.with_label_values(&["redirected"]).inc();
    tracing::info!(to = %to, "WHIP: call owned by another node; redirecting");
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    cors(app, r)
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

pub(super) fn params(query: Option<&str>, headers: &HeaderMap) -> WhipParams {
    let mut p = WhipParams::default();
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    p.call = h("x-earshot-call");
    p.campaign = h("x-earshot-campaign");
    p.rep = h("x-earshot-rep");
    p.party = h("x-earshot-party");
    for (k, v) in url_pairs(query.unwrap_or("")) {
        match k.as_str() {
            "call" => p.call = Some(v),
            "campaign" => p.campaign = Some(v),
            "rep" => p.rep = Some(v),
            "party" => p.party = Some(v),
            _ => {}
        }
    }
    p
}

pub(super) fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub(super) fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /whip`.
pub(super) async fn create(
    State(app): State<Arc<Intake>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(cfg) = app.config.whip.clone() else {
        return cors(
            &app,
            Problem::new(StatusCode::NOT_FOUND, "Not found", "WebRTC ingest is not enabled ([whip] in the config)")
                .into_response(),
        );
    };
    // Who: a publisher token of a tenant that may send calls.
    let from_query =
        url_pairs(query.as_deref().unwrap_or("")).into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v);
    let Some(tok) = bearer(&headers).map(str::to_string).or(from_query) else {
        return refuse(
            &app,
            "unauthorized",
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a publisher token is required (Authorization: Bearer, from `earshot token issue --role publisher`)",
            ),
        );
    };
    let principal = match token::verify(&app.config, &tok) {
        Ok(p) => p,
        Err(e) => {
            return refuse(&app, "unauthorized", Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()))
        }
    };
    if principal.claims.role != TokenRole::Publisher {
        return refuse(
            &app,
            "forbidden",
            Problem::new(StatusCode::FORBIDDEN, "Forbidden", "only a publisher token may push media"),
        );
    }
    let Some(tenant) = app.active_tenant(&principal.tenant) else {
        return refuse(
            &app,
            "unauthorized",
            Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "unknown or deleted tenant"),
        );
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with("application/sdp") {
        return refuse(
            &app,
            "unsupported_media_type",
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "the body must be an SDP offer (Content-Type: application/sdp)",
            ),
        );
    }
    // What: the call it belongs to, and which tracks fill which channel.
    let p = match params(query.as_deref(), &headers).validated() {
        Ok(p) => p,
        Err(e) => return refuse(&app, e.code(), Problem::new(StatusCode::BAD_REQUEST, "Bad request", e.to_string())),
    };
    let call_key = match (&p.call, &principal.claims.call) {
        (Some(k), Some(scope)) if k != scope => {
            return refuse(
                &app,
                "forbidden",
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("this token is scoped to call {scope:?}, not {k:?}"),
                ),
            );
        }
        (Some(k), _) => k.clone(),
        (None, Some(scope)) => scope.clone(),
        (None, None) => {
            return refuse(
                &app,
                "bad_param",
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "no call key: pass ?call=… (or X-Earshot-Call), or scope the token to one call (--call)",
                ),
            );
        }
    };
    let offer = match std::str::from_utf8(&body) {
        Ok(s) => s.to_string(),
        Err(_) => {
            return refuse(
                &app,
                "bad_sdp",
                Problem::new(StatusCode::BAD_REQUEST, "Bad request", "the SDP offer is not UTF-8"),
            )
        }
    };
    let plan = match core::plan(&offer, p.party.as_deref()) {
        Ok(plan) => plan,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let title = if status == StatusCode::BAD_REQUEST { "Bad request" } else { "Unprocessable offer" };
            return refuse(&app, e.code(), Problem::new(status, title, e.to_string()));
        }
    };
    // Several nodes: a call lives on one node; a leg that reaches another is sent there.
    let mut claimed = false;
    if let Some(cluster) = &app.cluster {
        let local = app
            .whip
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(tenant.id.clone(), call_key.clone()));
        if !local {
            match cluster.claim(&tenant.id, &format!("whip:{call_key}")).await {
                crate::cluster::node::Claim::Owned(owner) => {
                    return redirect(&app, &owner.url, query.as_deref(), &principal, &call_key)
                }
                crate::cluster::node::Claim::Mine => claimed = true,
                crate::cluster::node::Claim::Unavailable => {}
            }
        }
    }
    let release = |app: &Arc<Intake>| {
        if let (true, Some(c)) = (claimed, &app.cluster) {
            c.release(&tenant.id, &format!("whip:{call_key}"));
        }
    };
    // Room: the WHIP session limit, then the call (a new one takes a call slot).
    let active = app.whip.active.fetch_add(1, Ordering::AcqRel);
    let guard = ActiveGuard(app.clone());
    if active >= cfg.max_sessions || app.is_draining() {
        release(&app);
        return refuse(
            &app,
            "over_limit",
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "too many WebRTC sessions (whip.max_sessions) or draining; retry later",
            ),
        );
    }
    let channels: Vec<usize> = plan.tracks.iter().map(|(_, c)| *c).collect();
    let joined = match join_call(&app, &tenant.id, &call_key, &channels, &p, principal.claims.sub.as_str()) {
        Ok(j) => j,
        Err(no) => {
            release(&app);
            return refuse(&app, no.result, no.problem);
        }
    };
    let stop = joined.stop.child_token();
    let leg = Arc::new(Leg::new(app.clone(), joined.tx.clone(), &plan));
    let pc = match build_peer(&app, &cfg, leg.clone()).await {
        Ok(pc) => pc,
        Err(e) => {
            leave(&app, &joined.tx, &channels, LegEnd::Failed);
            tracing::error!(error = %e, "WHIP: could not open a peer connection");
            return refuse(
                &app,
                "internal",
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    format!("no media port could be opened ({e}); retry later"),
                ),
            );
        }
    };
    let answer = match negotiate(&pc, offer, &leg).await {
        Ok(a) => a,
        Err(e) => {
            let _ = pc.close().await;
            leave(&app, &joined.tx, &channels, LegEnd::Failed);
            return refuse(
                &app,
                "bad_sdp",
                Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("the offer could not be answered: {e}")),
            );
        }
    };
    let id = random_id();
    app.whip
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), SessionEntry { tenant: tenant.id.clone(), stop: stop.clone() });
    app.metrics.whip_sessions.with_label_values(&["created"]).inc();
    app.metrics.whip_sessions_active.inc();
    tracing::info!(session = %id, tenant = %tenant.id, call_key = %call_key, party = ?plan.party, "WHIP session created");
    let task_app = app.clone();
    let sid = id.clone();
    let tx = joined.tx.clone();
    app.lifecycle.tracker.spawn(async move {
        let reason = run_session(&task_app, &cfg, pc, leg, stop).await;
        task_app.whip.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&sid);
        task_app.metrics.whip_session_ends.with_label_values(&[reason.label()]).inc();
        task_app.metrics.whip_sessions_active.dec();
        tracing::info!(session = %sid, reason = reason.label(), "WHIP session ended");
        leave(&task_app, &tx, &channels, reason);
        drop(guard);
    });
    let mut r = (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/whip/{id}")) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
        h.insert(header::ETAG, v);
    }
    cors(&app, r)
}

pub(super) struct ActiveGuard(Arc<Intake>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.whip.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `DELETE /whip/{id}`: ends the session (its call ends when its last session does).
pub(super) async fn remove(State(app): State<Arc<Intake>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let principal = match bearer(&headers).map(|t| token::verify(&app.config, t)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return cors(&app, Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()).into_response())
        }
        None => {
            return cors(
                &app,
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "the session's token is required (Authorization: Bearer)",
                )
                .into_response(),
            )
        }
    };
    let stop = {
        let sessions = app.whip.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&id).filter(|s| s.tenant == principal.tenant).map(|s| s.stop.clone())
    };
    match stop {
        Some(stop) if matches!(principal.claims.role, TokenRole::Publisher | TokenRole::Admin) => {
            stop.cancel();
            cors(&app, StatusCode::OK.into_response())
        }
        Some(_) => cors(
            &app,
            Problem::new(StatusCode::FORBIDDEN, "Forbidden", "only a publisher or admin token may end a session")
                .into_response(),
        ),
        None => cors(
            &app,
            Problem::new(StatusCode::NOT_FOUND, "Not found", "no such WHIP session (ended already?)").into_response(),
        ),
    }
}
