//! The rep overlay and team view: static assets compiled into the binary, served at
//! `/overlay`. Sign-in with a token (pasted, or in the URL fragment `#token=…`, which
//! never reaches server logs); everything live comes over `/live`.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("overlay/index.html");
const JS: &str = include_str!("overlay/overlay.js");
const CSS: &str = include_str!("overlay/overlay.css");

/// Same-origin only: scripts, styles and the websocket come from this server.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'self'";

fn asset(body: &'static str, mime: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn index() -> impl IntoResponse {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> impl IntoResponse {
    asset(JS, "text/javascript; charset=utf-8")
}

pub async fn style() -> impl IntoResponse {
    asset(CSS, "text/css; charset=utf-8")
}
