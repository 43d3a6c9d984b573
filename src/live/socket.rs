//! `GET /live`: the websocket the overlay and dashboards use.
//!
//! Authentication: a token (../../docs/contracts.md) as `Authorization: Bearer`, or as
//! `?token=` (browsers cannot set headers on a websocket). Checked before the upgrade:
//! a bad token is `401`, a tenant over its connection limit `429`.
//!
//! Query: `resume=<call_id>:<seq>[,<call_id>:<seq>…]` — the last `seq` the client has
//! of each call; it gets exactly what it missed, or a `snapshot` when that is no longer
//! in the replay buffer. Calls it has no `seq` for arrive as snapshots.
//!
//! Server messages: event envelopes (with `seq`) and connection-level messages without
//! `seq`: `hello`, `snapshot`, `lagged`, `pong`, `error`. Client messages: `{"type":"ping"}`.
//! The server pings every `live.heartbeat`; a client silent for three periods is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use crate::app::Viewers;
use crate::call::CallId;
use crate::ingest::fork_auth;
use crate::live::hub::{Connected, LiveHub};
use crate::live::protocol::{parse_client_message, parse_resume, ClientMessage};
use crate::live::token;
use crate::live::token::{Principal, TokenRole};

pub async fn handler(
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    State(app): State<Arc<Viewers>>,
) -> Response {
    let metrics = &app.metrics;
    if app.is_draining() {
        metrics.live_rejected.with_label_values(&["draining"]).inc();
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let presented = match fork_auth::from_headers(&headers) {
        Some(fork_auth::Credentials::Bearer(t)) => Some(t),
        _ => params.get("token").cloned(),
    };
    let principal = match presented.as_deref().map(|t| token::verify(&app.config, t)) {
        Some(Ok(p)) if matches!(p.claims.role, TokenRole::Rep | TokenRole::Manager | TokenRole::Admin) => p,
        Some(Ok(_)) => {
            metrics.live_rejected.with_label_values(&["auth"]).inc();
            return (StatusCode::FORBIDDEN, "this token's role cannot watch calls\n").into_response();
        }
        Some(Err(e)) => {
            metrics.live_rejected.with_label_values(&["auth"]).inc();
            return (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response();
        }
        None => {
            metrics.live_rejected.with_label_values(&["auth"]).inc();
            return (StatusCode::UNAUTHORIZED, "a token is required (Authorization: Bearer or ?token=)\n")
                .into_response();
        }
    };
    let resume = match params.get("resume").map(|r| parse_resume(r)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("resume: {e}\n")).into_response(),
        None => HashMap::new(),
    };
    let limit = app
        .config
        .tenant(&principal.tenant)
        .and_then(|t| t.live_max_connections)
        .unwrap_or(app.config.live.max_connections_per_tenant);
    let Some(slot) = app.live.reserve(&principal.tenant, limit) else {
        metrics.live_rejected.with_label_values(&["limit"]).inc();
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "5")], "too many live connections for this tenant\n")
            .into_response();
    };
    let Ok(ws) = ws else {
        // A plain GET with a good token (a page asking why its socket failed).
        return (StatusCode::UPGRADE_REQUIRED, [("upgrade", "websocket")], "this endpoint is a websocket\n")
            .into_response();
    };
    ws.read_buffer_size(4 * 1024).max_message_size(64 * 1024).max_frame_size(64 * 1024).on_upgrade(
        move |socket| async move {
            run(app, socket, principal, resume).await;
            drop(slot);
        },
    )
}

async fn run(app: Arc<Viewers>, socket: WebSocket, principal: Principal, resume: HashMap<CallId, u64>) {
    let hub: Arc<LiveHub> = app.live.clone();
    let heartbeat = hub.heartbeat();
    let hello = serde_json::json!({
        "type": "hello",
        "tenant": principal.tenant,
        "sub": principal.claims.sub,
        "role": principal.claims.role,
        "heartbeat_ms": heartbeat.as_millis() as u64,
    })
    .to_string();
    let Connected { client, initial, mut rx } = hub.connect(principal, &resume);
    let (mut sink, mut stream) = socket.split();
    let sent = app.metrics.live_messages_sent.clone();
    // A client that cannot take a message within three heartbeats is gone.
    let send_timeout = heartbeat * 3;
    let mut ok = send_within(&mut sink, Message::Text(hello.into()), send_timeout).await;
    for m in initial {
        if !ok {
            break;
        }
        ok = send_within(&mut sink, Message::Text(m), send_timeout).await;
        sent.inc();
    }
    let mut ping = tokio::time::interval(heartbeat);
    ping.tick().await;
    let mut last_heard = Instant::now();
    while ok {
        if client.is_lagged() && rx.is_empty() {
            ok = send_within(&mut sink, Message::Text(Utf8Bytes::from_static(r#"{"type":"lagged"}"#)), send_timeout)
                .await;
            for m in hub.resync(&client) {
                if !ok {
                    break;
                }
                ok = send_within(&mut sink, Message::Text(m), send_timeout).await;
                sent.inc();
            }
            continue;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    ok = send_within(&mut sink, Message::Text(m), send_timeout).await;
                    sent.inc();
                }
                None => break,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    tracing::debug!(client = client.id, "live client silent for three heartbeats: closing");
                    break;
                }
                ok = send_within(&mut sink, Message::Ping(Default::default()), send_timeout).await;
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    last_heard = Instant::now();
                    let reply = match parse_client_message(t.as_str()) {
                        Ok(ClientMessage::Ping) => r#"{"type":"pong"}"#,
                        Err(_) => r#"{"type":"error","code":"bad_message","message":"expected {\"type\":\"ping\"}"}"#,
                    };
                    ok = send_within(&mut sink, Message::Text(Utf8Bytes::from_static(reply)), send_timeout).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = app.lifecycle.force_close.cancelled() => {
                let _ = send_within(&mut sink, Message::Close(Some(axum::extract::ws::CloseFrame { code: 1001, reason: "server shutting down".into() })), send_timeout).await;
                break;
            }
        }
    }
    hub.disconnect(&client);
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send_within(sink: &mut Sink, m: Message, limit: std::time::Duration) -> bool {
    matches!(tokio::time::timeout(limit, sink.send(m)).await, Ok(Ok(())))
}
