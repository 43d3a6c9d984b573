//! A WHIP publisher (RFC 9725) on the same `webrtc` crate as the server: offers one
//! Opus track, POSTs the offer with every candidate, then sends pre-encoded 20 ms
//! Opus frames at real-time pace over DTLS-SRTP, and DELETEs the session at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::audio::Audio;

/// The audio as 20 ms Opus frames (encoded once, shared by every session).
pub struct WhipScript {
    pub frames: Vec<Vec<u8>>,
}

/// Encodes the first channel (mono) at 16 kHz, 20 ms frames.
pub fn render(audio: &Audio) -> anyhow::Result<WhipScript> {
    let a = if audio.sample_rate == 16_000 { audio.clone() } else { audio.resampled(16_000)? };
    let mut enc = opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip)?;
    let mut frames = Vec::new();
    let mut out = vec![0u8; 1500];
    for chunk in a.channels[0].chunks(320) {
        let mut pcm = chunk.to_vec();
        pcm.resize(320, 0);
        let n = enc.encode(&pcm, &mut out)?;
        frames.push(out[..n].to_vec());
    }
    Ok(WhipScript { frames })
}

#[derive(Debug, Clone)]
pub struct WhipOptions {
    /// `http://host:port` of the server.
    pub base: String,
    pub token: String,
    pub call: String,
    pub party: String,
    pub campaign: Option<String>,
}

#[derive(Debug, Error)]
pub enum WhipError {
    #[error("WHIP refused: {0}")]
    Refused(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("ICE/DTLS did not connect")]
    NotConnected,
}

#[derive(Debug, Default)]
pub struct WhipReport {
    pub packets_sent: u64,
    pub max_lag_ms: u64,
    pub delete_status: Option<u16>,
    /// 307/308 redirects followed to reach the node that owns the call.
    pub redirects: u32,
    /// The peer connection failed or closed before the end.
    pub ended_early: bool,
}

struct Handler {
    events: mpsc::Sender<Ev>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Gathered,
    Connected,
    Down,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.try_send(Ev::Gathered);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let ev = match state {
            RTCPeerConnectionState::Connected => Ev::Connected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => Ev::Down,
            _ => return,
        };
        let _ = self.events.try_send(ev);
    }
}

/// A minimal HTTP/1.1 exchange (loopback benchmarks and tests): status, headers, body.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, Vec<(String, String)>, String), WhipError> {
    let hostport = base.trim_start_matches("http://").trim_start_matches("ws://").trim_end_matches('/').to_string();
    let mut s = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&hostport))
        .await
        .map_err(|_| WhipError::Http("connect timeout".into()))?
        .map_err(|e| WhipError::Http(e.to_string()))?;
    let body = body.unwrap_or("");
    let ct = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".into() };
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.map_err(|e| WhipError::Http(e.to_string()))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .map_err(|_| WhipError::Http("response timeout".into()))?
        .map_err(|e| WhipError::Http(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| WhipError::Http("no response head".into()))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| WhipError::Http("bad status line".into()))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body.to_string()))
}

/// `http://host:port/path?q` → (`http://host:port`, `/path?q`); `None` for a relative URL.
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, String::from("/")), |(h, p)| (h, format!("/{p}")));
    Some((format!("http://{host}"), path))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Publishes `script` (looped) for `duration`; `connected` is called once DTLS is up.
pub async fn publish(
    o: &WhipOptions,
    script: Arc<WhipScript>,
    duration: Duration,
    connected: impl FnOnce(),
) -> Result<WhipReport, WhipError> {
    let rtc_err = |e: rtc::shared::error::Error| WhipError::Rtc(e.to_string());
    let mut media = MediaEngine::default();
    let codec = RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    };
    media
        .register_codec(RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: 111 }, RtpCodecKind::Audio)
        .map_err(rtc_err)?;
    let (tx, mut events) = mpsc::channel(16);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .build(),
        )
        .with_handler(Arc::new(Handler { events: tx }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .map_err(rtc_err)?;
    let ssrc: u32 = rand::random();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("loadtest-{}", o.call),
        format!("{}-{}", o.party, o.call),
        "loadtest".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            ..Default::default()
        }],
    )));
    pc.add_track(track.clone() as Arc<dyn TrackLocal>).await.map_err(rtc_err)?;
    let offer = pc.create_offer(None).await.map_err(rtc_err)?;
    pc.set_local_description(offer).await.map_err(rtc_err)?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = events.recv().await {
            if ev == Ev::Gathered {
                break;
            }
        }
    })
    .await;
    let offer = pc.local_description().await.ok_or_else(|| WhipError::Rtc("no local description".into()))?.sdp;
    let mut path = format!("/whip?call={}&party={}", enc(&o.call), enc(&o.party));
    if let Some(c) = &o.campaign {
        path.push_str(&format!("&campaign={}", enc(c)));
    }
    // A node that does not own the call redirects (307) to the one that does.
    let mut base = o.base.clone();
    let (mut status, mut headers, mut body) = http(&base, "POST", &path, &o.token, Some(&offer)).await?;
    let mut hops = 0;
    while (status == 307 || status == 308) && hops < 3 {
        hops += 1;
        let to = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| WhipError::Http("redirect without Location".into()))?;
        let (b, p) = split_url(&to).unwrap_or((base.clone(), to.clone()));
        base = b;
        (status, headers, body) = http(&base, "POST", &p, &o.token, Some(&offer)).await?;
    }
    if status != 201 {
        let _ = pc.close().await;
        return Err(WhipError::Refused(format!("{status} {}", body.chars().take(200).collect::<String>())));
    }
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| WhipError::Http("201 without Location".into()))?;
    pc.set_remote_description(RTCSessionDescription::answer(body).map_err(rtc_err)?).await.map_err(rtc_err)?;
    let up = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = events.recv().await {
            match ev {
                Ev::Connected => return true,
                Ev::Down => return false,
                Ev::Gathered => {}
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !up {
        let _ = pc.close().await;
        let _ = http(&base, "DELETE", &location, &o.token, None).await;
        return Err(WhipError::NotConnected);
    }
    connected();
    let mut report = WhipReport { redirects: hops, ..Default::default() };
    let start = Instant::now();
    let frames = (duration.as_millis() / 20) as u64;
    let mut seq: u16 = rand::random();
    let ts0: u32 = rand::random();
    for i in 0..frames {
        let due = start + Duration::from_millis(20 * i);
        tokio::time::sleep_until(due.into()).await;
        report.max_lag_ms = report.max_lag_ms.max(Instant::now().saturating_duration_since(due).as_millis() as u64);
        if let Ok(ev) = events.try_recv() {
            if ev == Ev::Down {
                report.ended_early = true;
                break;
            }
        }
        let payload = &script.frames[(i as usize) % script.frames.len()];
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: i == 0,
                payload_type: 111,
                sequence_number: seq,
                timestamp: ts0.wrapping_add((i as u32).wrapping_mul(960)),
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        seq = seq.wrapping_add(1);
        if track.write_rtp(packet).await.is_err() {
            report.ended_early = true;
            break;
        }
        report.packets_sent += 1;
    }
    // Let the last packets leave before tearing down DTLS.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = pc.close().await;
    report.delete_status = http(&base, "DELETE", &location, &o.token, None).await.ok().map(|r| r.0);
    Ok(report)
}
