//! Erasure: every call of a data subject (with a receipt), and deletion of the whole
//! tenant after a grace period.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::app::Records;
use crate::store::privacy;

use super::audit::audit;
use super::auth::{actor, Authorised, AuthorisedBody};
use super::{body, json_ok, Addr, ApiResult, Problem, SubjectBody};

pub(super) async fn post_erasure(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    AuthorisedBody(p, bytes): AuthorisedBody,
) -> ApiResult {
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

pub(super) async fn post_tenant_deletion(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Authorised(p): Authorised,
) -> ApiResult {
    let d = privacy::request_tenant_deletion(&app.store, &p.tenant, &actor(&p), app.now()).await?;
    audit(&app, &p, addr, "tenant_deletion.request", Some("tenant".into()), json!({ "due_at": d.due_at })).await;
    Ok(json_ok(StatusCode::ACCEPTED, serde_json::to_value(d).unwrap_or_default()))
}

pub(super) async fn get_tenant_deletion(State(app): State<Arc<Records>>, Authorised(p): Authorised) -> ApiResult {
    let d = privacy::tenant_deletion(&app.store, &p.tenant).await?.ok_or_else(Problem::not_found)?;
    Ok(json_ok(StatusCode::OK, serde_json::to_value(d).unwrap_or_default()))
}

pub(super) async fn delete_tenant_deletion(
    State(app): State<Arc<Records>>,
    ConnectInfo(addr): Addr,
    Authorised(p): Authorised,
) -> ApiResult {
    if !privacy::cancel_tenant_deletion(&app.store, &p.tenant).await? {
        return Err(Problem::not_found());
    }
    audit(&app, &p, addr, "tenant_deletion.cancel", Some("tenant".into()), Value::Null).await;
    Ok(json_ok(StatusCode::OK, json!({ "cancelled": true })))
}
