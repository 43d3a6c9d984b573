//! WHIP (RFC 9725): `POST /whip` with an SDP offer and a publisher token answers
//! `201 Created` with the SDP answer and a session `Location`; `DELETE` on it ends the
//! session; `PATCH` is `405` (no trickle ICE: the answer carries every candidate);
//! `OPTIONS` answers CORS preflights.
//!
//! Each session owns one `webrtc` peer connection (ICE, DTLS-SRTP) on its own UDP
//! port. Its track readers decode Opus at 16 kHz and queue frames (never waiting) for
//! the call task (`whip_call`), which two sessions with the same call key share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateType, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

use crate::admin::problem::Problem;
use crate::app::AppState;
use crate::call::session::CallSlot;
use crate::config::WhipConfig;
use crate::ingest::whip::registry::{CallEntry, SessionEntry, RATE};
use crate::ingest::whip::registry::{CallMsg, LegEnd};
use crate::ingest::whip::request as core;
use crate::ingest::whip::request::{SessionPlan, TimestampScaler, WhipParams};
use crate::live::token;
use crate::live::token::TokenRole;
use crate::media::rtp::RtpHeader;

/// Frames queued from a session's track readers to the call task (about 2.5 s of
/// 20 ms frames per channel); beyond, frames are dropped and counted.
const CALL_QUEUE: usize = 256;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/whip", post(create).options(preflight))
        .route("/whip/{id}", delete(remove).patch(patch).options(preflight))
        .route("/whip/publisher.js", axum::routing::get(publisher_js))
}

fn cors(app: &AppState, mut r: Response) -> Response {
    let origin = app.config.whip.as_ref().map_or("*", |w| w.allow_origin.as_str());
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Link, ETag, Accept-Patch"));
    r
}

async fn preflight(State(app): State<Arc<AppState>>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, If-Match, X-Earshot-Call, X-Earshot-Campaign, X-Earshot-Rep, X-Earshot-Party",
        ),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    cors(&app, r)
}

async fn publisher_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("publisher.js")).into_response()
}

/// `PATCH`: trickle ICE and ICE restarts are not supported; the answer to the `POST`
/// already carries every server candidate (RFC 9725 §4.3.1 allows this `405`).
async fn patch(State(app): State<Arc<AppState>>) -> Response {
    let p = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "this WHIP server gathers all its candidates before answering: no trickle ICE or ICE restart (PATCH); end the session with DELETE and POST again");
    let mut r = p.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    cors(&app, r)
}

fn refuse(app: &AppState, result: &'static str, p: Problem) -> Response {
    app.metrics.whip_sessions.with_label_values(&[result]).inc();
    tracing::info!(result, detail = %p.detail, "WHIP session refused");
    let retry = p.status == StatusCode::SERVICE_UNAVAILABLE;
    let mut r = p.into_response();
    if retry {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    cors(app, r)
}

/// `307` to the node that owns the call. Browsers drop `Authorization` on a
/// cross-origin redirect, so the URL carries a fresh publisher token for this call
/// only, valid for a minute (`access_token`, as RFC 6750 allows).
fn redirect(
    app: &Arc<AppState>,
    to: &str,
    query: Option<&str>,
    principal: &token::Principal,
    call_key: &str,
) -> Response {
    let kept: Vec<&str> =
        query.unwrap_or("").split('&').filter(|kv| !kv.is_empty() && !kv.starts_with("access_token=")).collect();
    let mut url = format!("{}/whip?{}", to.trim_end_matches('/'), kept.join("&"));
    if let Ok(t) = token::issue(
        &app.config,
        &principal.tenant,
        &principal.claims.sub,
        TokenRole::Publisher,
        std::time::Duration::from_secs(60),
        Some(call_key.to_string()),
    ) {
        if !kept.is_empty() {
            url.push('&');
        }
        url.push_str("access_token=");
        url.push_str(&t);
    }
    app.metrics.cluster_redirects.inc();
    app.metrics.whip_sessions.with_label_values(&["redirected"]).inc();
    tracing::info!(to = %to, "WHIP: call owned by another node; redirecting");
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    cors(app, r)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

fn params(query: Option<&str>, headers: &HeaderMap) -> WhipParams {
    let mut p = WhipParams::default();
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    p.call = h("x-earshot-call");
    p.campaign = h("x-earshot-campaign");
    p.rep = h("x-earshot-rep");
    p.party = h("x-earshot-party");
    for (k, v) in url_pairs(query.unwrap_or("")) {
        match k.as_str() {
            "call" => p.call = Some(v),
            "campaign" => p.campaign = Some(v),
            "rep" => p.rep = Some(v),
            "party" => p.party = Some(v),
            _ => {}
        }
    }
    p
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /whip`.
async fn create(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(cfg) = app.config.whip.clone() else {
        return cors(
            &app,
            Problem::new(StatusCode::NOT_FOUND, "Not found", "WebRTC ingest is not enabled ([whip] in the config)")
                .into_response(),
        );
    };
    // Who: a publisher token of a tenant that may send calls.
    let from_query =
        url_pairs(query.as_deref().unwrap_or("")).into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v);
    let Some(tok) = bearer(&headers).map(str::to_string).or(from_query) else {
        return refuse(
            &app,
            "unauthorized",
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a publisher token is required (Authorization: Bearer, from `earshot token issue --role publisher`)",
            ),
        );
    };
    let principal = match token::verify(&app.config, &tok) {
        Ok(p) => p,
        Err(e) => {
            return refuse(&app, "unauthorized", Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()))
        }
    };
    if principal.claims.role != TokenRole::Publisher {
        return refuse(
            &app,
            "forbidden",
            Problem::new(StatusCode::FORBIDDEN, "Forbidden", "only a publisher token may push media"),
        );
    }
    let Some(tenant) = app.ingest_tenant(&principal.tenant) else {
        return refuse(
            &app,
            "unauthorized",
            Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "unknown or deleted tenant"),
        );
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with("application/sdp") {
        return refuse(
            &app,
            "unsupported_media_type",
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "the body must be an SDP offer (Content-Type: application/sdp)",
            ),
        );
    }
    // What: the call it belongs to, and which tracks fill which channel.
    let p = match params(query.as_deref(), &headers).validated() {
        Ok(p) => p,
        Err(e) => return refuse(&app, e.code(), Problem::new(StatusCode::BAD_REQUEST, "Bad request", e.to_string())),
    };
    let call_key = match (&p.call, &principal.claims.call) {
        (Some(k), Some(scope)) if k != scope => {
            return refuse(
                &app,
                "forbidden",
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("this token is scoped to call {scope:?}, not {k:?}"),
                ),
            );
        }
        (Some(k), _) => k.clone(),
        (None, Some(scope)) => scope.clone(),
        (None, None) => {
            return refuse(
                &app,
                "bad_param",
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "no call key: pass ?call=… (or X-Earshot-Call), or scope the token to one call (--call)",
                ),
            );
        }
    };
    let offer = match std::str::from_utf8(&body) {
        Ok(s) => s.to_string(),
        Err(_) => {
            return refuse(
                &app,
                "bad_sdp",
                Problem::new(StatusCode::BAD_REQUEST, "Bad request", "the SDP offer is not UTF-8"),
            )
        }
    };
    let plan = match core::plan(&offer, p.party.as_deref()) {
        Ok(plan) => plan,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let title = if status == StatusCode::BAD_REQUEST { "Bad request" } else { "Unprocessable offer" };
            return refuse(&app, e.code(), Problem::new(status, title, e.to_string()));
        }
    };
    // Several nodes: a call lives on one node; a leg that reaches another is sent there.
    let mut claimed = false;
    if let Some(cluster) = &app.cluster {
        let local = app
            .whip
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(tenant.id.clone(), call_key.clone()));
        if !local {
            match cluster.claim(&tenant.id, &format!("whip:{call_key}")).await {
                crate::cluster::node::Claim::Owned(owner) => {
                    return redirect(&app, &owner.url, query.as_deref(), &principal, &call_key)
                }
                crate::cluster::node::Claim::Mine => claimed = true,
                crate::cluster::node::Claim::Unavailable => {}
            }
        }
    }
    let release = |app: &Arc<AppState>| {
        if let (true, Some(c)) = (claimed, &app.cluster) {
            c.release(&tenant.id, &format!("whip:{call_key}"));
        }
    };
    // Room: the WHIP session limit, then the call (a new one takes a call slot).
    let active = app.whip.active.fetch_add(1, Ordering::AcqRel);
    let guard = ActiveGuard(app.clone());
    if active >= cfg.max_sessions || app.is_draining() {
        release(&app);
        return refuse(
            &app,
            "over_limit",
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "too many WebRTC sessions (whip.max_sessions) or draining; retry later",
            ),
        );
    }
    let channels: Vec<usize> = plan.tracks.iter().map(|(_, c)| *c).collect();
    let joined = match join_call(&app, &tenant.id, &call_key, &channels, &p, principal.claims.sub.as_str()) {
        Ok(j) => j,
        Err(resp) => {
            release(&app);
            return resp;
        }
    };
    let stop = joined.stop.child_token();
    let leg = Arc::new(Leg::new(app.clone(), joined.tx.clone(), &plan));
    let pc = match build_peer(&app, &cfg, leg.clone()).await {
        Ok(pc) => pc,
        Err(e) => {
            leave(&joined.tx, &channels, LegEnd::Failed);
            tracing::error!(error = %e, "WHIP: could not open a peer connection");
            return refuse(
                &app,
                "internal",
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    format!("no media port could be opened ({e}); retry later"),
                ),
            );
        }
    };
    let answer = match negotiate(&pc, offer, &leg).await {
        Ok(a) => a,
        Err(e) => {
            let _ = pc.close().await;
            leave(&joined.tx, &channels, LegEnd::Failed);
            return refuse(
                &app,
                "bad_sdp",
                Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("the offer could not be answered: {e}")),
            );
        }
    };
    let id = random_id();
    app.whip
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), SessionEntry { tenant: tenant.id.clone(), stop: stop.clone() });
    app.metrics.whip_sessions.with_label_values(&["created"]).inc();
    app.metrics.whip_sessions_active.inc();
    tracing::info!(session = %id, tenant = %tenant.id, call_key = %call_key, party = ?plan.party, "WHIP session created");
    let task_app = app.clone();
    let sid = id.clone();
    let tx = joined.tx.clone();
    app.tracker.spawn(async move {
        let reason = run_session(&task_app, &cfg, pc, leg, stop).await;
        task_app.whip.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&sid);
        task_app.metrics.whip_session_ends.with_label_values(&[reason.label()]).inc();
        task_app.metrics.whip_sessions_active.dec();
        tracing::info!(session = %sid, reason = reason.label(), "WHIP session ended");
        leave(&tx, &channels, reason);
        drop(guard);
    });
    let mut r = (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/whip/{id}")) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
        h.insert(header::ETAG, v);
    }
    cors(&app, r)
}

struct ActiveGuard(Arc<AppState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.whip.active.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Joined {
    tx: mpsc::Sender<CallMsg>,
    stop: CancellationToken,
}

/// Joins the live call with this key, or starts one (which takes a call slot).
#[allow(clippy::result_large_err)]
fn join_call(
    app: &Arc<AppState>,
    tenant: &str,
    key: &str,
    channels: &[usize],
    p: &WhipParams,
    sub: &str,
) -> Result<Joined, Response> {
    let mut calls = app.whip.calls.lock().unwrap_or_else(|e| e.into_inner());
    let k = (tenant.to_string(), key.to_string());
    if let Some(c) = calls.get_mut(&k) {
        if channels.iter().any(|&ch| c.taken[ch]) {
            drop(calls);
            return Err(refuse(
                app,
                "conflict",
                Problem::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("call {key:?} already has a live session for that party"),
                ),
            ));
        }
        for &ch in channels {
            c.taken[ch] = true;
        }
        c.legs += 1;
        return Ok(Joined { tx: c.tx.clone(), stop: c.stop.clone() });
    }
    let Some(slot) = CallSlot::try_acquire(app) else {
        drop(calls);
        return Err(refuse(
            app,
            "over_limit",
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "at the call limit (limits.max_calls) or draining; retry later",
            ),
        ));
    };
    let (tx, rx) = mpsc::channel(CALL_QUEUE);
    let stop = CancellationToken::new();
    let mut taken = [false; 2];
    for &ch in channels {
        taken[ch] = true;
    }
    calls.insert(k.clone(), CallEntry { tx: tx.clone(), taken, legs: 1, stop: stop.clone() });
    drop(calls);
    let facts = crate::ingest::whip::call::CallFacts {
        tenant: tenant.to_string(),
        key: key.to_string(),
        campaign: p.campaign.clone(),
        rep: p.rep.clone().or_else(|| Some(sub.to_string())),
    };
    let app2 = app.clone();
    app.tracker.spawn(crate::ingest::whip::call::run(app2, slot, facts, rx, stop.clone()));
    Ok(Joined { tx, stop })
}

fn leave(tx: &mpsc::Sender<CallMsg>, channels: &[usize], end: LegEnd) {
    // Control messages must arrive: wait for room off the caller's path.
    let tx = tx.clone();
    let msg = CallMsg::Left { channels: channels.to_vec(), end };
    tokio::spawn(async move {
        let _ = tx.send(msg).await;
    });
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One session's side of the peer connection: which track feeds which channel, and
/// when media last arrived.
pub struct Leg {
    app: Arc<AppState>,
    tx: mpsc::Sender<CallMsg>,
    /// `(msid track id, channel)` from the offer.
    by_track: Vec<(Option<String>, usize)>,
    /// Channels not yet given to a track (for tracks without a matching msid).
    unassigned: Mutex<Vec<usize>>,
    state: mpsc::Sender<PeerEvent>,
    state_rx: Mutex<Option<mpsc::Receiver<PeerEvent>>>,
    /// Milliseconds since `epoch` of the last packet, plus one (0: none yet).
    last_packet_ms: Arc<AtomicU64>,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerEvent {
    GatheringComplete,
    IceConnected,
    Connected,
    IceFailed,
    Failed,
    Closed,
}

impl Leg {
    fn new(app: Arc<AppState>, tx: mpsc::Sender<CallMsg>, plan: &SessionPlan) -> Leg {
        let (state, state_rx) = mpsc::channel(16);
        Leg {
            app,
            tx,
            by_track: plan.tracks.iter().map(|(t, c)| (t.track_id.clone(), *c)).collect(),
            unassigned: Mutex::new(plan.tracks.iter().map(|(_, c)| *c).collect()),
            state,
            state_rx: Mutex::new(Some(state_rx)),
            last_packet_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    fn channel_for(&self, track_id: &str) -> Option<usize> {
        let mut free = self.unassigned.lock().unwrap_or_else(|e| e.into_inner());
        let ch = self
            .by_track
            .iter()
            .find(|(t, _)| t.as_deref() == Some(track_id))
            .map(|(_, c)| *c)
            .filter(|c| free.contains(c))
            .or_else(|| free.first().copied())?;
        free.retain(|&c| c != ch);
        Some(ch)
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Leg {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.state.try_send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        match state {
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                let _ = self.state.try_send(PeerEvent::IceConnected);
            }
            RTCIceConnectionState::Failed => {
                let _ = self.state.try_send(PeerEvent::IceFailed);
            }
            _ => {}
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let ev = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected,
            RTCPeerConnectionState::Failed => PeerEvent::Failed,
            RTCPeerConnectionState::Closed => PeerEvent::Closed,
            _ => return,
        };
        let _ = self.state.try_send(ev);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let track_id = track.track_id().await.to_string();
        let Some(ch) = self.channel_for(&track_id) else {
            tracing::warn!(track = %track_id, "WHIP: a track beyond the offer's plan is ignored");
            return;
        };
        let mut reader = TrackReader {
            ch,
            tx: self.tx.clone(),
            metrics: self.app.metrics.clone(),
            dec: None,
            scaler: TimestampScaler::default(),
            pcm: vec![0; RATE as usize * 120 / 1000],
        };
        let last = self.last_packet_ms.clone();
        let epoch = self.epoch;
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    last.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                    reader.packet(&p);
                }
            }
        });
    }
}

/// Decodes one track's Opus packets and queues them for the call task.
struct TrackReader {
    ch: usize,
    tx: mpsc::Sender<CallMsg>,
    metrics: crate::metrics::Metrics,
    /// Made at the first packet (most sessions' decoders live as long as they do).
    dec: Option<opus::Decoder>,
    scaler: TimestampScaler,
    pcm: Vec<i16>,
}

impl TrackReader {
    fn packet(&mut self, p: &rtc::rtp::Packet) {
        let at = Instant::now();
        if self.dec.is_none() {
            self.dec = opus::Decoder::new(RATE, opus::Channels::Mono).ok();
        }
        let Some(dec) = self.dec.as_mut() else { return };
        let n = match dec.decode(&p.payload, &mut self.pcm, false) {
            Ok(n) => n,
            Err(_) => {
                self.metrics.whip_packets.with_label_values(&["decode_error"]).inc();
                return;
            }
        };
        let h = RtpHeader {
            marker: p.header.marker,
            payload_type: p.header.payload_type,
            seq: p.header.sequence_number,
            timestamp: self.scaler.scale(p.header.timestamp, RATE),
            ssrc: p.header.ssrc,
        };
        let msg = CallMsg::Frame { ch: self.ch, header: h, samples: self.pcm[..n].to_vec(), at };
        if self.tx.try_send(msg).is_err() {
            self.metrics.whip_packets.with_label_values(&["queue_full"]).inc();
        }
    }
}

/// A peer connection for one session: Opus only, on a port from `whip.ice_ports`.
async fn build_peer(app: &AppState, cfg: &WhipConfig, leg: Arc<Leg>) -> Result<Arc<dyn PeerConnection>, String> {
    let [lo, hi] = cfg.ice_ports;
    let span = u32::from(hi - lo) + 1;
    let attempts = if lo == 0 { 1 } else { span.min(32) };
    let mut last_err = String::new();
    for _ in 0..attempts {
        let port = if lo == 0 { 0 } else { lo + (app.whip.next_port.fetch_add(1, Ordering::Relaxed) % span) as u16 };
        let mut media = MediaEngine::default();
        let opus = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        };
        media.register_codec(opus, RtpCodecKind::Audio).map_err(|e| e.to_string())?;
        // No mDNS: a server has no use for it, and it would open a multicast socket per session.
        let mut settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(cfg.ice_ip.is_loopback())
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
        if !cfg.advertised_ips.is_empty() {
            settings = settings.with_nat_1to1_ips(
                cfg.advertised_ips.iter().map(|ip| ip.to_string()).collect(),
                RTCIceCandidateType::Host,
            );
        }
        let built = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_handler(leg.clone() as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![SocketAddr::new(cfg.ice_ip, port)])
            .build()
            .await;
        match built {
            Ok(pc) => return Ok(Arc::new(pc)),
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(last_err)
}

/// Offer in, answer (with every candidate: no trickle) out.
async fn negotiate(pc: &Arc<dyn PeerConnection>, offer: String, leg: &Leg) -> Result<String, String> {
    let offer = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
    pc.set_remote_description(offer).await.map_err(|e| e.to_string())?;
    let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
    pc.set_local_description(answer).await.map_err(|e| e.to_string())?;
    // Host candidates only (no STUN/TURN): gathering takes milliseconds.
    let mut rx = leg.state_rx.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or("negotiated twice")?;
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = rx.recv().await {
            if ev == PeerEvent::GatheringComplete {
                break;
            }
        }
    })
    .await;
    *leg.state_rx.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    if waited.is_err() {
        return Err("ICE candidate gathering did not complete".into());
    }
    pc.local_description().await.map(|d| d.sdp).ok_or_else(|| "no local description".to_string())
}

/// Drives one session until DELETE, failure, media timeout or shutdown.
async fn run_session(
    app: &AppState,
    cfg: &WhipConfig,
    pc: Arc<dyn PeerConnection>,
    leg: Arc<Leg>,
    stop: CancellationToken,
) -> LegEnd {
    let mut events = leg.state_rx.lock().unwrap_or_else(|e| e.into_inner()).take().expect("negotiated");
    let started = Instant::now();
    let mut ice_up = false;
    let mut connected = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            _ = stop.cancelled() => break LegEnd::Deleted,
            _ = app.force_close.cancelled() => break LegEnd::Shutdown,
            ev = events.recv() => match ev {
                Some(PeerEvent::IceConnected) => ice_up = true,
                Some(PeerEvent::Connected) => {
                    if !connected {
                        connected = true;
                        let _ = leg.tx.send(CallMsg::Connected).await;
                    }
                }
                Some(PeerEvent::IceFailed) => break if connected { LegEnd::Closed } else { LegEnd::IceFailed },
                Some(PeerEvent::Failed) => break if connected { LegEnd::Closed } else if ice_up { LegEnd::DtlsFailed } else { LegEnd::IceFailed },
                Some(PeerEvent::Closed) | None => break LegEnd::Closed,
                Some(PeerEvent::GatheringComplete) => {}
            },
            _ = tick.tick() => {
                if !connected {
                    if started.elapsed() >= cfg.connect_timeout {
                        break LegEnd::IceTimeout;
                    }
                    continue;
                }
                let last = leg.last_packet_ms.load(Ordering::Relaxed);
                let since = if last == 0 { started.elapsed() } else { leg.epoch.elapsed().saturating_sub(Duration::from_millis(last - 1)) };
                if since >= cfg.media_timeout {
                    break LegEnd::MediaTimeout;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
    end
}

/// `DELETE /whip/{id}`: ends the session (its call ends when its last session does).
async fn remove(State(app): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let principal = match bearer(&headers).map(|t| token::verify(&app.config, t)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return cors(&app, Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()).into_response())
        }
        None => {
            return cors(
                &app,
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "the session's token is required (Authorization: Bearer)",
                )
                .into_response(),
            )
        }
    };
    let stop = {
        let sessions = app.whip.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&id).filter(|s| s.tenant == principal.tenant).map(|s| s.stop.clone())
    };
    match stop {
        Some(stop) if matches!(principal.claims.role, TokenRole::Publisher | TokenRole::Admin) => {
            stop.cancel();
            cors(&app, StatusCode::OK.into_response())
        }
        Some(_) => cors(
            &app,
            Problem::new(StatusCode::FORBIDDEN, "Forbidden", "only a publisher or admin token may end a session")
                .into_response(),
        ),
        None => cors(
            &app,
            Problem::new(StatusCode::NOT_FOUND, "Not found", "no such WHIP session (ended already?)").into_response(),
        ),
    }
}
