//! One WHIP session's media side: joining (or starting) the call its call key names,
//! the `webrtc` peer connection (ICE, DTLS-SRTP) on its own UDP port, the track
//! readers that decode Opus at 16 kHz and queue frames (never waiting) for the call
//! task (`call`), and the task that drives the session until it ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
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
use crate::app::Intake;
use crate::call::session::CallSlot;
use crate::config::WhipConfig;
use crate::ingest::whip::registry::{CallEntry, RATE};
use crate::ingest::whip::registry::{CallMsg, LegEnd};
use crate::ingest::whip::request::{SessionPlan, TimestampScaler, WhipParams};
use crate::media::rtp::RtpHeader;

/// Frames queued from a session's track readers to the call task (about 2.5 s of
/// 20 ms frames per channel); beyond, frames are dropped and counted.
const CALL_QUEUE: usize = 256;

pub(super) struct Joined {
    pub(super) tx: mpsc::Sender<CallMsg>,
    pub(super) stop: CancellationToken,
}

/// Why a session could not join or start its call: the metric result and the answer.
pub(super) struct JoinRefused {
    pub result: &'static str,
    pub problem: Problem,
}

/// Joins the live call with this key, or starts one (which takes a call slot).
pub(super) fn join_call(
    app: &Arc<Intake>,
    tenant: &str,
    key: &str,
    channels: &[usize],
    p: &WhipParams,
    sub: &str,
) -> Result<Joined, JoinRefused> {
    let mut calls = app.whip.calls.lock().unwrap_or_else(|e| e.into_inner());
    let k = (tenant.to_string(), key.to_string());
    if let Some(c) = calls.get_mut(&k) {
        if channels.iter().any(|&ch| c.taken[ch]) {
            drop(calls);
            return Err(JoinRefused {
                result: "conflict",
                problem: Problem::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("call {key:?} already has a live session for that party"),
                ),
            });
        }
        for &ch in channels {
            c.taken[ch] = true;
        }
        c.legs += 1;
        return Ok(Joined { tx: c.tx.clone(), stop: c.stop.clone() });
    }
    let Some(slot) = CallSlot::try_acquire(app) else {
        drop(calls);
        return Err(JoinRefused {
            result: "over_limit",
            problem: Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "at the call limit (limits.max_calls) or draining; retry later",
            ),
        });
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
    app.lifecycle.tracker.spawn(crate::ingest::whip::call::run(app2, slot, facts, rx, stop.clone()));
    Ok(Joined { tx, stop })
}

pub(super) fn leave(app: &Intake, tx: &mpsc::Sender<CallMsg>, channels: &[usize], end: LegEnd) {
    // Control messages must arrive: wait for room off the caller's path.
    let tx = tx.clone();
    let msg = CallMsg::Left { channels: channels.to_vec(), end };
    app.tasks.spawn(async move {
        let _ = tx.send(msg).await;
    });
}

/// One session's side of the peer connection: which track feeds which channel, and
/// when media last arrived.
pub(super) struct Leg {
    app: Arc<Intake>,
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
    pub(super) fn new(app: Arc<Intake>, tx: mpsc::Sender<CallMsg>, plan: &SessionPlan) -> Leg {
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
        self.app.tasks.spawn(async move {
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
pub(super) struct TrackReader {
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

/// Why a peer connection could not be built or an offer answered.
#[derive(Debug, thiserror::Error)]
pub(super) enum PeerError {
    #[error(transparent)]
    Webrtc(#[from] rtc::shared::error::Error),
    #[error("no attempt to open a media port was made")]
    NoPort,
    #[error("the session was negotiated twice")]
    NegotiatedTwice,
    #[error("ICE candidate gathering did not complete")]
    Gathering,
    #[error("no local description")]
    NoLocalDescription,
}

/// A peer connection for one session: Opus only, on a port from `whip.ice_ports`.
pub(super) async fn build_peer(
    app: &Intake,
    cfg: &WhipConfig,
    leg: Arc<Leg>,
) -> Result<Arc<dyn PeerConnection>, PeerError> {
    let [lo, hi] = cfg.ice_ports;
    let span = u32::from(hi - lo) + 1;
    let attempts = if lo == 0 { 1 } else { span.min(32) };
    let mut last_err = PeerError::NoPort;
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
        media.register_codec(opus, RtpCodecKind::Audio)?;
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
            Err(e) => last_err = PeerError::Webrtc(e),
        }
    }
    Err(last_err)
}

/// Offer in, answer (with every candidate: no trickle) out.
pub(super) async fn negotiate(pc: &Arc<dyn PeerConnection>, offer: String, leg: &Leg) -> Result<String, PeerError> {
    let offer = RTCSessionDescription::offer(offer)?;
    pc.set_remote_description(offer).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    // Host candidates only (no STUN/TURN): gathering takes milliseconds.
    let mut rx = leg.state_rx.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or(PeerError::NegotiatedTwice)?;
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
        return Err(PeerError::Gathering);
    }
    pc.local_description().await.map(|d| d.sdp).ok_or(PeerError::NoLocalDescription)
}

/// Drives one session until DELETE, failure, media timeout or shutdown.
pub(super) async fn run_session(
    app: &Intake,
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
            _ = app.lifecycle.force_close.cancelled() => break LegEnd::Shutdown,
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
