//! Websocket client plumbing shared by the senders.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a fork connection ended, as the sender saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Closing {
    /// Close code the server sent, if it sent one.
    pub code: Option<u16>,
    pub reason: String,
}

/// Connects with optional extra headers (e.g. Authorization) and small buffers.
pub async fn connect(url: &str, headers: &[(String, String)], subprotocol: Option<&str>) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request().with_context(|| format!("bad url {url}"))?;
    for (k, v) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?);
    }
    if let Some(p) = subprotocol {
        req.headers_mut().insert("sec-websocket-protocol", http::HeaderValue::from_str(p)?);
    }
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(req, Some(config), false),
    )
    .await
    .context("connect timed out")?
    .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// Waits (bounded) for the server's close frame; answers it.
pub async fn await_close(ws: &mut Ws, wait: Duration) -> Closing {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Closing { code: None, reason: "timed out waiting for close".into() },
            Ok(None) | Ok(Some(Err(_))) => {
                return Closing { code: None, reason: "connection ended without close frame".into() }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let c = frame
                    .map(|f| Closing { code: Some(u16::from(f.code)), reason: f.reason.to_string() })
                    .unwrap_or_default();
                let _ = ws.close(None).await;
                return c;
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Drains anything the server sent without blocking (catches an early close).
pub fn poll_close(ws: &mut Ws) -> Option<Closing> {
    use futures_util::FutureExt;
    match ws.next().now_or_never() {
        Some(Some(Ok(Message::Close(frame)))) => Some(
            frame.map(|f| Closing { code: Some(u16::from(f.code)), reason: f.reason.to_string() }).unwrap_or_default(),
        ),
        Some(None) | Some(Some(Err(_))) => Some(Closing { code: None, reason: "connection ended".into() }),
        _ => None,
    }
}
