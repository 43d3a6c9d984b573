//! The audit log: entries written for each operation (by a principal, or by the
//! system's jobs), and `GET /v1/audit` that reads them.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::Records;
use crate::store::privacy;
use std::net::SocketAddr;

use super::auth::{actor, Authorised};
use super::{json_ok, parse_time, Addr, ApiResult};
use crate::live::token::Principal;
use crate::store::privacy::AuditEntry;

pub(super) async fn audit(
    app: &Records,
    p: &Principal,
    addr: SocketAddr,
    action: &str,
    target: Option<String>,
    detail: Value,
) {
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
pub async fn audit_system(app: &Records, tenant: &str, action: &str, target: Option<String>, detail: Value) {
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

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
}

pub(super) async fn get_audit(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Query(q): Query<AuditQuery>,
    Authorised(p): Authorised,
) -> ApiResult {
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
