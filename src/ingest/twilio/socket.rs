//! `/fork/twilio/{tenant}`: Twilio Media Streams (and compatible) websocket forks.
//!
//! Authentication, checked before any audio is accepted: a valid `X-Twilio-Signature`
//! (tenant has a Twilio auth token), `Authorization: Bearer <fork secret>`, or the fork
//! secret as `token` in `start.customParameters`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::WebSocket;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::Intake;
use crate::call::session::{CallSession, CallSlot};
use crate::call::{CallId, CallInfo, Outcome, Participant, Role, Source};
use crate::config::{RepTrack, TenantConfig};
use crate::ingest::fork::{close, recv_frame, Frame, StatsReporter};
use crate::ingest::twilio::protocol::{decode_payload, StartInfo, Track, TwilioMessage, TwilioStream};
use crate::ingest::twilio::tracks::{TwilioMedia, TwilioMediaSettings};
use crate::ingest::{close_code, fork_auth, IngestError};

pub async fn handler(
    ws: WebSocketUpgrade,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    State(app): State<Arc<Intake>>,
) -> Response {
    if app.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let pre_auth = pre_authenticate(&app, &tenant_id, &headers);
    let token = app.lifecycle.tracker.token();
    crate::ingest::fork::configure_ws(ws).on_upgrade(move |socket| async move {
        run(app, socket, tenant_id, pre_auth).await;
        drop(token);
    })
}

#[derive(Debug, Clone, PartialEq)]
enum PreAuth {
    Verified,
    /// No header credential: `start.customParameters.token` must carry the secret.
    Pending,
    Failed(&'static str),
}

fn pre_authenticate(app: &Intake, tenant_id: &str, headers: &HeaderMap) -> PreAuth {
    let Some(tenant) = app.active_tenant(tenant_id) else {
        // Same answer as a wrong secret: a tenant's existence is not disclosed.
        return PreAuth::Failed("invalid credentials");
    };
    if let Some(sig) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) {
        let Some(token) = tenant.twilio_auth_token.as_deref() else {
            return PreAuth::Failed("X-Twilio-Signature given but no Twilio auth token configured");
        };
        let urls = app.signature_urls(headers, &format!("/fork/twilio/{tenant_id}"));
        return if crate::ingest::twilio::signature::is_valid(token, sig, &urls) {
            PreAuth::Verified
        } else {
            PreAuth::Failed("invalid X-Twilio-Signature")
        };
    }
    if let Some(creds) = fork_auth::from_headers(headers) {
        return if fork_auth::secret_matches(tenant, creds.secret()) {
            PreAuth::Verified
        } else {
            PreAuth::Failed("invalid credentials")
        };
    }
    PreAuth::Pending
}

struct LiveCall {
    session: CallSession,
    media: TwilioMedia,
    reporter: StatsReporter,
}

async fn run(app: Arc<Intake>, mut socket: WebSocket, tenant_id: String, pre_auth: PreAuth) {
    let metrics = app.metrics.clone();
    metrics.ws_connections.with_label_values(&["twilio"]).inc();
    let active = metrics.ws_connections_active.with_label_values(&["twilio"]);
    active.inc();
    if let PreAuth::Failed(reason) = pre_auth {
        let err = IngestError::Unauthorized(reason);
        metrics.ingest_error(&err);
        tracing::warn!(tenant = %tenant_id, reason, "twilio fork refused");
        close(&mut socket, err.close_code(), &err.close_reason()).await;
        active.dec();
        return;
    }
    let mut stream = TwilioStream::new();
    let mut call: Option<LiveCall> = None;
    let mut payload = Vec::with_capacity(160);
    let mut out = Vec::with_capacity(640);
    let idle = app.config.media.idle_timeout;

    let (outcome, close_with): (Outcome, Option<(u16, String)>) = loop {
        let frame = tokio::select! {
            biased;
            _ = app.lifecycle.force_close.cancelled() => break (Outcome::Shutdown, Some((close_code::GOING_AWAY, "server shutting down".into()))),
            f = recv_frame(&mut socket, idle) => f,
        };
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Closed => {
                // tungstenite queued the reply to the peer's close: send it.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), futures_util::SinkExt::flush(&mut socket))
                        .await;
                break (Outcome::Completed, None);
            }
            Frame::Lost(code) => break (Outcome::ClientError(code), None),
            Frame::Error(e) => break (Outcome::ClientError(e.code()), Some((e.close_code(), e.close_reason()))),
            Frame::Binary(_) => {
                let e = IngestError::UnexpectedFrame("binary frame on a Twilio stream");
                break (Outcome::ClientError(e.code()), Some((e.close_code(), e.close_reason())));
            }
        };
        let step =
            handle_text(&app, &tenant_id, &pre_auth, &mut stream, &mut call, &text, &mut payload, &mut out).await;
        match step {
            Ok(Step::Continue) => {}
            Ok(Step::Stop) => break (Outcome::Completed, Some((close_code::NORMAL, "stream stopped".into()))),
            Err(StepError::Ingest(e)) => {
                break (Outcome::ClientError(e.code()), Some((e.close_code(), e.close_reason())))
            }
            Err(StepError::Storage) => {
                break (Outcome::StorageError, Some((close_code::INTERNAL_ERROR, "storage error".into())))
            }
        }
    };
    if let Outcome::ClientError(code) = &outcome {
        if let Some(e) = close_with.as_ref() {
            tracing::warn!(tenant = %tenant_id, code, reason = %e.1, "twilio fork closed on bad input");
        }
        metrics.errors.with_label_values(&["ingest", code]).inc();
    }
    let outcome = if matches!(outcome, Outcome::ClientError("idle_timeout")) { Outcome::Timeout } else { outcome };
    if let Some((code, reason)) = close_with {
        close(&mut socket, code, &reason).await;
    }
    if let Some(mut live) = call {
        // Keep every sample already received: release what the reorder buffers hold.
        out.clear();
        live.media.finish(&mut out);
        let _ = live.session.write_audio(&out);
        let stats = live.media.stats();
        live.reporter.report(&live.media);
        live.session.end(outcome, stats).await;
    }
    active.dec();
}

enum Step {
    Continue,
    Stop,
}

enum StepError {
    Ingest(IngestError),
    Storage,
}

impl From<IngestError> for StepError {
    fn from(e: IngestError) -> Self {
        StepError::Ingest(e)
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle_text(
    app: &Arc<Intake>,
    tenant_id: &str,
    pre_auth: &PreAuth,
    stream: &mut TwilioStream,
    call: &mut Option<LiveCall>,
    text: &str,
    payload: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Step, StepError> {
    match stream.on_text(text)? {
        TwilioMessage::Connected | TwilioMessage::Mark { .. } => Ok(Step::Continue),
        TwilioMessage::Start(start) => {
            let tenant = app.active_tenant(tenant_id).ok_or(IngestError::Unauthorized("invalid credentials"))?;
            if *pre_auth == PreAuth::Pending {
                let ok = start.custom_parameters.get("token").is_some_and(|t| fork_auth::secret_matches(tenant, t));
                if !ok {
                    return Err(IngestError::Unauthorized("missing or invalid token in start.customParameters").into());
                }
            }
            let slot = CallSlot::try_acquire(app).ok_or(IngestError::Overloaded)?;
            let (info, rep) = call_info(tenant, &start, app.now())?;
            let media = TwilioMedia::new(&start.tracks, rep, start.encoding, app.twilio_media_settings());
            let recording = tenant.recording_for(info.campaign.as_deref());
            let session = CallSession::start(app.clone(), slot, info, recording)
                .await
                .map_err(|_| IngestError::StorageUnavailable)?;
            *call = Some(LiveCall { session, media, reporter: StatsReporter::new(&app.metrics, Source::Twilio) });
            Ok(Step::Continue)
        }
        TwilioMessage::Media { track, chunk, timestamp_ms, payload: b64 } => {
            let live = call.as_mut().ok_or(IngestError::BeforeStart("media"))?;
            decode_payload(&b64, payload)?;
            if !live.media.has_track(track) {
                return Err(IngestError::InvalidField {
                    field: "media.track",
                    detail: format!("{} was not declared in start.tracks", track.as_str()),
                }
                .into());
            }
            out.clear();
            live.media.push(track, chunk, timestamp_ms, std::mem::take(payload), out);
            live.reporter.tick(&live.media);
            live.session.write_audio(out).map_err(|_| StepError::Storage)?;
            Ok(Step::Continue)
        }
        TwilioMessage::Dtmf { track, digit } => {
            if let Some(live) = call.as_mut() {
                live.session.record_dtmf(digit, track.map(|t| t.as_str()));
            }
            Ok(Step::Continue)
        }
        TwilioMessage::Stop => Ok(Step::Stop),
    }
}

/// Builds the call description from `start`; returns it with the rep's track.
fn call_info(
    tenant: &TenantConfig,
    start: &StartInfo,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(CallInfo, Track), IngestError> {
    let params = &start.custom_parameters;
    let rep = match params.get("rep_track").map(String::as_str) {
        Some("inbound") => Track::Inbound,
        Some("outbound") => Track::Outbound,
        Some(other) => {
            return Err(IngestError::InvalidField { field: "customParameters.rep_track", detail: format!("{other:?}") })
        }
        None => match tenant.rep_track {
            RepTrack::Inbound => Track::Inbound,
            RepTrack::Outbound => Track::Outbound,
        },
    };
    let mut source_ids = BTreeMap::new();
    for (k, v) in [
        ("twilio_call_sid", &start.call_sid),
        ("twilio_stream_sid", &start.stream_sid),
        ("twilio_account_sid", &start.account_sid),
    ] {
        if let Some(v) = v {
            source_ids.insert(k.to_string(), v.clone());
        }
    }
    let mut participants = Vec::new();
    if let Some(rep_id) = params.get("rep") {
        participants.push(Participant { role: Some(Role::Rep), id: Some(rep_id.clone()), ..Default::default() });
    }
    for key in ["customer", "from", "to", "customer_phone"] {
        if let Some(v) = params.get(key) {
            let phone = v.starts_with('+').then(|| v.clone());
            participants.push(Participant {
                role: if key == "customer" || key == "customer_phone" { Some(Role::Customer) } else { None },
                id: Some(format!("{key}:{v}")),
                phone_e164: phone,
                aor: (!v.starts_with('+')).then(|| v.clone()),
                display_name: None,
            });
        }
    }
    let info = CallInfo {
        call_id: CallId::new_at(now),
        tenant: tenant.id.clone(),
        campaign: params.get("campaign").cloned(),
        rep_id: params.get("rep").cloned(),
        source: Source::Twilio,
        source_ids,
        participants,
        layout: TwilioMedia::layout_for(&start.tracks),
        sample_rate: 8000,
        encoding: start.encoding,
        started_at: now,
    };
    Ok((info, rep))
}

impl Intake {
    pub fn twilio_media_settings(&self) -> TwilioMediaSettings {
        let m = &self.config.media;
        TwilioMediaSettings {
            reorder_window_frames: m.reorder_window_frames,
            max_skew_samples: (m.max_channel_skew.as_millis() as usize) * 8,
            max_gap_samples: m.max_gap.as_millis() as u64 * 8,
        }
    }
}
