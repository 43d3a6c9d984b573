//! `/fork/pcm` and `/fork/pcm/{tenant}`: raw L16 forks in the style of jambonz `listen`
//! and FreeSWITCH `mod_audio_fork`. First text frame: JSON metadata; then binary
//! frames of interleaved samples; text frames after that may carry DTMF.
//! Auth: `Authorization: Bearer <fork secret>` or Basic (user = tenant, password = secret),
//! checked when the metadata names the tenant, before any audio is accepted.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::WebSocket;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::Intake;
use crate::call::session::{CallSession, CallSlot};
use crate::call::{CallId, CallInfo, Layout, Outcome, Role, SampleEncoding, Source};
use crate::config::ChannelSide;
use crate::ingest::fork::{close, recv_frame, Frame, StatsReporter};
use crate::ingest::fork_auth::Credentials;
use crate::ingest::pcm::protocol::{parse_metadata, PcmFramer, JAMBONZ_SUBPROTOCOL};
use crate::ingest::{close_code, fork_auth, IngestError};
use crate::store::manifest::MediaStats;

pub async fn handler_with_tenant(
    ws: WebSocketUpgrade,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    State(app): State<Arc<Intake>>,
) -> Response {
    upgrade(ws, Some(tenant), headers, app)
}

pub async fn handler(ws: WebSocketUpgrade, headers: HeaderMap, State(app): State<Arc<Intake>>) -> Response {
    upgrade(ws, None, headers, app)
}

fn upgrade(ws: WebSocketUpgrade, path_tenant: Option<String>, headers: HeaderMap, app: Arc<Intake>) -> Response {
    if app.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let creds = fork_auth::from_headers(&headers);
    let token = app.lifecycle.tracker.token();
    crate::ingest::fork::configure_ws(ws).protocols([JAMBONZ_SUBPROTOCOL]).on_upgrade(move |socket| async move {
        run(app, socket, path_tenant, creds).await;
        drop(token);
    })
}

struct LiveCall {
    session: CallSession,
    framer: PcmFramer,
    stats: MediaStats,
    reporter: StatsReporter,
}

#[derive(Deserialize)]
struct TextEvent {
    event: String,
    #[serde(default, alias = "digit")]
    dtmf: Option<serde_json::Value>,
}

async fn run(app: Arc<Intake>, mut socket: WebSocket, path_tenant: Option<String>, creds: Option<Credentials>) {
    let metrics = app.metrics.clone();
    metrics.ws_connections.with_label_values(&["pcm"]).inc();
    let active = metrics.ws_connections_active.with_label_values(&["pcm"]);
    active.inc();
    let idle = app.config.media.idle_timeout;
    let mut call: Option<LiveCall> = None;
    let mut out = Vec::with_capacity(4096);

    let (outcome, close_with): (Outcome, Option<(u16, String)>) = loop {
        let frame = tokio::select! {
            biased;
            _ = app.lifecycle.force_close.cancelled() => break (Outcome::Shutdown, Some((close_code::GOING_AWAY, "server shutting down".into()))),
            f = recv_frame(&mut socket, idle) => f,
        };
        let result = match frame {
            Frame::Closed => {
                // tungstenite queued the reply to the peer's close: send it.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), futures_util::SinkExt::flush(&mut socket))
                        .await;
                break (Outcome::Completed, None);
            }
            Frame::Lost(code) => break (Outcome::ClientError(code), None),
            Frame::Error(e) => Err(e),
            Frame::Text(text) => match call.as_mut() {
                None => start_call(&app, path_tenant.as_deref(), creds.as_ref(), &text).await.map(|c| {
                    call = Some(c);
                }),
                Some(live) => on_text_event(live, &text),
            },
            Frame::Binary(data) => match call.as_mut() {
                None => Err(IngestError::BinaryBeforeMetadata),
                Some(live) => {
                    live.stats.frames_received += 1;
                    out.clear();
                    live.framer.push(&data, &mut out);
                    live.reporter.report_stats(live.stats, (0, 0));
                    if live.session.write_audio(&out).is_err() {
                        break (Outcome::StorageError, Some((close_code::INTERNAL_ERROR, "storage error".into())));
                    }
                    Ok(())
                }
            },
        };
        if let Err(e) = result {
            break (Outcome::ClientError(e.code()), Some((e.close_code(), e.close_reason())));
        }
    };
    if let Outcome::ClientError(code) = &outcome {
        metrics.errors.with_label_values(&["ingest", code]).inc();
        if let Some((_, reason)) = &close_with {
            tracing::warn!(code, reason = %reason, "pcm fork closed on bad input");
        }
    }
    let outcome = if matches!(outcome, Outcome::ClientError("idle_timeout")) { Outcome::Timeout } else { outcome };
    if let Some((code, reason)) = close_with {
        close(&mut socket, code, &reason).await;
    }
    if let Some(live) = call {
        let stats = live.stats;
        live.session.end(outcome, stats).await;
    }
    active.dec();
}

fn on_text_event(live: &mut LiveCall, text: &str) -> Result<(), IngestError> {
    let ev: TextEvent = serde_json::from_str(text).map_err(|e| IngestError::MalformedJson(e.to_string()))?;
    match ev.event.as_str() {
        "dtmf" => {
            let digit = match ev.dtmf {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => return Err(IngestError::MissingField("dtmf")),
            };
            live.session.record_dtmf(digit, None);
            live.stats.dtmf_events += 1;
            Ok(())
        }
        "metadata" => Err(IngestError::DuplicateStart),
        other => Err(IngestError::UnknownEvent(other.chars().take(40).collect())),
    }
}

async fn start_call(
    app: &Arc<Intake>,
    path_tenant: Option<&str>,
    creds: Option<&Credentials>,
    text: &str,
) -> Result<LiveCall, IngestError> {
    let meta = parse_metadata(text)?;
    let tenant_id = path_tenant
        .map(str::to_string)
        .or_else(|| meta.tenant.clone())
        .or_else(|| creds.and_then(|c| c.tenant_hint()).map(str::to_string))
        .ok_or(IngestError::MissingField("tenant"))?;
    if let (Some(p), Some(m)) = (path_tenant, meta.tenant.as_deref()) {
        if p != m {
            return Err(IngestError::InvalidField { field: "tenant", detail: "differs from the URL".into() });
        }
    }
    let unauthorized = IngestError::Unauthorized("invalid credentials");
    let tenant = app.active_tenant(&tenant_id).ok_or(unauthorized.clone())?;
    let creds = creds.ok_or(IngestError::Unauthorized("missing Authorization (Bearer or Basic)"))?;
    if !fork_auth::secret_matches(tenant, creds.secret()) {
        return Err(unauthorized);
    }
    let slot = CallSlot::try_acquire(app).ok_or(IngestError::Overloaded)?;
    let layout = if meta.channels == 2 { Layout::Stereo } else { Layout::Mono };
    let rep_channel = meta.rep_channel.unwrap_or(match tenant.pcm_rep_channel {
        ChannelSide::Left => 0,
        ChannelSide::Right => 1,
    });
    let mut source_ids = BTreeMap::new();
    if let Some(id) = &meta.external_call_id {
        source_ids.insert("pcm_call_id".to_string(), id.clone());
    }
    let mut participants = meta.participants.clone();
    if let Some(rep) = &meta.rep {
        participants
            .insert(0, crate::call::Participant { role: Some(Role::Rep), id: Some(rep.clone()), ..Default::default() });
    }
    let now = app.now();
    let info = CallInfo {
        call_id: CallId::new_at(now),
        tenant: tenant.id.clone(),
        campaign: meta.campaign.clone(),
        rep_id: meta.rep.clone(),
        source: Source::Pcm,
        source_ids,
        participants,
        layout,
        sample_rate: meta.sample_rate,
        encoding: SampleEncoding::L16,
        started_at: now,
    };
    let recording = tenant.recording_for(info.campaign.as_deref());
    let session =
        CallSession::start(app.clone(), slot, info, recording).await.map_err(|_| IngestError::StorageUnavailable)?;
    Ok(LiveCall {
        session,
        framer: PcmFramer::new(meta.channels, rep_channel == 1),
        stats: MediaStats::default(),
        reporter: StatsReporter::new(&app.metrics, Source::Pcm),
    })
}
