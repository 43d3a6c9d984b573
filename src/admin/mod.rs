//! The admin API under `/v1`: calls, recordings (HTTP Range), holds, retention,
//! erasure by subject, exports with signed 24-hour links, tenant deletion with a
//! 7-day grace period, and the audit log.
//!
//! Tokens per docs/contracts.md (`Authorization: Bearer`). Roles: `admin` (everything
//! of its tenant), `manager` (read the tenant's calls, retention), `rep` (read its own
//! calls), `auditor` (the audit log). A call of another tenant, or another rep's call,
//! is `404`, never `403`; a role that may not do an operation at all gets `403`.
//! Errors are RFC 9457 problem details. The route table [`API`] is the one place a
//! route's method, path, roles and handler are written: it builds the router (each
//! route carries its entry, whose roles the token is checked against) and the OpenAPI
//! document (`/v1/openapi.json`), so they cannot drift apart.
//!
//! The files: `routes` (the route table, the router and the OpenAPI document),
//! `auth` (who may do what), `calls`, `holds` (legal holds and retention), `erasure`
//! (erasure by subject, tenant deletion), `exports` and `audit`.

mod audit;
mod auth;
mod calls;
mod erasure;
mod exports;
mod holds;
pub mod problem;
mod route;
mod routes;

pub use audit::audit_system;
pub(crate) use exports::resume_exports;
pub use problem::Problem;
pub use route::Route;
pub use routes::{openapi, router, API};

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

type ApiResult = Result<Response, Problem>;

fn json_ok(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

type Addr = ConnectInfo<SocketAddr>;

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, Problem> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("{s:?} is not an RFC 3339 time")))
}

fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("body: {e}")))
}

#[derive(Deserialize, Default)]
struct SubjectBody {
    subject: Option<String>,
}
