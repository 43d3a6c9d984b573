//! The error every HTTP API answers with: an RFC 9457 problem document that says what
//! went wrong without showing internals.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::objects::StorageError;

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem { status, title, detail: detail.into() }
    }
    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", "no such resource")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({ "type": "about:blank", "title": self.title, "status": self.status.as_u16(), "detail": self.detail });
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

impl From<StorageError> for Problem {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(_) | StorageError::NoObject(..) | StorageError::Erased(_) => Problem::not_found(),
            e => {
                tracing::error!(error = %e, "admin API: storage");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Storage unavailable",
                    "the store could not be read or written; retry later",
                )
            }
        }
    }
}
