//! The calls: list, manifest, erasure of one call, the recording (HTTP Range), the
//! transcript, hints and scorecard, and the live calls of the tenant.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::Records;
use crate::store::privacy;

use super::audit::audit;
use super::auth::{call_target, visible_call, Authorised};
use super::{json_ok, parse_time, Addr, ApiResult, Problem};
use crate::call::CallId;
use crate::live::token::TokenRole::Rep;
use crate::store::objects::CallRef;

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    from: Option<String>,
    to: Option<String>,
    campaign: Option<String>,
    rep: Option<String>,
    participant: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_calls(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Query(q): Query<ListQuery>,
    Authorised(p): Authorised,
) -> ApiResult {
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

pub(super) async fn get_call(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Authorised(p): Authorised,
) -> ApiResult {
    let (call, m) = visible_call(&app, &p, &id).await?;
    audit(&app, &p, addr, "call.read", call_target(&app, &p.tenant, call.call_id), Value::Null).await;
    Ok(json_ok(StatusCode::OK, serde_json::to_value(m).unwrap_or_default()))
}

pub(super) async fn delete_call(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Authorised(p): Authorised,
) -> ApiResult {
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
pub(super) fn parse_range(h: &str, len: u64) -> Option<Option<std::ops::Range<u64>>> {
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

pub(super) async fn get_recording(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    headers: HeaderMap,
    Path(id): Path<String>,
    Authorised(p): Authorised,
) -> ApiResult {
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
pub(super) struct FormatQuery {
    format: Option<String>,
}

pub(super) async fn get_transcript(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
    Authorised(p): Authorised,
) -> ApiResult {
    let (call, _) = visible_call(&app, &p, &id).await?;
    let txt = q.format.as_deref() == Some("txt");
    let bytes = app.store.get(&call, if txt { "transcript.txt" } else { "transcript.json" }).await?;
    audit(&app, &p, addr, "transcript.read", call_target(&app, &p.tenant, call.call_id), Value::Null).await;
    let ct = if txt { "text/plain; charset=utf-8" } else { "application/json" };
    Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response())
}

pub(super) async fn get_file(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Authorised(p): Authorised,
    name: &'static str,
) -> ApiResult {
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

pub(super) async fn get_live_calls(State(app): State<Arc<Records>>, Authorised(p): Authorised) -> ApiResult {
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
}
