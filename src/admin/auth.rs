//! Who may do what: the bearer token checked against the roles of the route table's
//! entry the request was routed by (`401`, then `403`), and which calls a principal
//! may see (another tenant's or rep's: `404`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::route::Route;
use super::Problem;
use crate::app::{AppState, Records};
use crate::call::CallId;
use crate::live::token;
use crate::live::token::{Principal, TokenRole::Rep};
use crate::store::objects::CallRef;
use crate::store::privacy;

/// The principal of a request whose token the route's roles allow. Handlers take it
/// after their path and query extractors (whose rejections come first).
pub(super) struct Authorised(pub(super) Principal);

impl FromRequestParts<AppState> for Authorised {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        authorise(&state.records, &parts.headers, table_entry(&parts.extensions)).map(Authorised)
    }
}

/// [`Authorised`] with the request body, for handlers that take one: the body is read
/// first, then the token checked.
pub(super) struct AuthorisedBody(pub(super) Principal, pub(super) Bytes);

impl FromRequest<AppState> for AuthorisedBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let route = table_entry(req.extensions());
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        let p = authorise(&state.records, &headers, route).map_err(IntoResponse::into_response)?;
        Ok(AuthorisedBody(p, bytes))
    }
}

/// The route table's entry the request was routed by (the router attaches it).
fn table_entry(ext: &Extensions) -> &'static Route {
    ext.get::<&'static Route>().copied().expect("route in the table")
}

fn authorise(app: &Records, headers: &HeaderMap, r: &Route) -> Result<Principal, Problem> {
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
    if !r.roles.contains(&p.claims.role) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("role {:?} may not {} {}", p.claims.role, r.method, r.path),
        ));
    }
    Ok(p)
}

pub(super) fn actor(p: &Principal) -> String {
    format!(
        "{}:{}",
        serde_json::to_value(p.claims.role).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        p.claims.sub
    )
}

pub(super) fn call_target(app: &Records, tenant: &str, id: CallId) -> Option<String> {
    privacy::call_ref(&app.store, tenant, id).ok()
}

/// The call, if the principal may see it (else 404).
pub(super) async fn visible_call(
    app: &Records,
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
