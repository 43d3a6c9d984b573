//! Legal holds (one call, or the whole tenant; releasing one runs a pending erasure)
//! and the effective retention policies.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::Records;
use crate::store::privacy;

use super::audit::audit;
use super::auth::{call_target, visible_call, Authorised, AuthorisedBody};
use super::{body, json_ok, Addr, ApiResult, Problem};

#[derive(Deserialize, Default)]
pub(super) struct HoldBody {
    #[serde(default)]
    reason: String,
}

pub(super) async fn put_hold(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    AuthorisedBody(p, bytes): AuthorisedBody,
) -> ApiResult {
    let b: HoldBody = body(&bytes)?;
    let (call, _) = visible_call(&app, &p, &id).await?;
    app.store.hold(&call, &b.reason, app.now()).await?;
    audit(&app, &p, addr, "hold.set", call_target(&app, &p.tenant, call.call_id), json!({ "reason": b.reason })).await;
    Ok(json_ok(StatusCode::OK, json!({ "held": true })))
}

pub(super) async fn delete_hold(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Path(id): Path<String>,
    Authorised(p): Authorised,
) -> ApiResult {
    let (call, _) = visible_call(&app, &p, &id).await?;
    let (was, erased) = privacy::release_hold(&app.store, &call).await?;
    let target = call_target(&app, &p.tenant, call.call_id);
    audit(&app, &p, addr, "hold.release", target.clone(), json!({ "was_held": was })).await;
    if let Some(e) = &erased {
        audit(&app, &p, addr, "call.erase", target, json!({ "objects": e.objects, "pending_erasure": true })).await;
    }
    Ok(json_ok(StatusCode::OK, json!({ "released": was, "erased": erased })))
}

pub(super) async fn tenant_hold(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Authorised(p): Authorised,
    on: bool,
) -> ApiResult {
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

pub(super) async fn get_retention(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Authorised(p): Authorised,
) -> ApiResult {
    // The policies as the sweeper sees them: the config file as it is now.
    let config = match app.config_path.clone() {
        Some(path) => tokio::task::spawn_blocking(move || crate::config::Config::load(&path))
            .await
            .ok()
            .and_then(Result::ok)
            .map(Arc::new)
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
