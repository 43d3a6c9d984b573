//! One SIP/SIPREC call: admission, the SDP answer, then the call's task owns its
//! RTP sockets, jitter buffers and the recorder handle until BYE, RTP timeout,
//! session expiry or shutdown. Network reads never wait on the recorder or the
//! recogniser (`CallSession::write_audio` only queues).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prometheus::IntCounter;
use rsipstack::sip::Header;
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc;

use crate::call::session::{CallSession, CallSlot};
use crate::call::{CallId, CallInfo, Outcome, Role, SampleEncoding, Source};
use crate::config::RtpSource;
use crate::ingest::sip::dialog::{drive_until_ack, respond, send_bye, CallMsg, Dialog, RtpPorts, SipState};
use crate::ingest::sip::invite::{CallPlan, Offer, Refusal, StreamPlan};
use crate::ingest::sip::sdp::{AnswerStream, Codec};
use crate::ingest::sip::{digest, invite, request, sdp};
use crate::media::jitter::{JitterBuffer, JitterConfig, JitterStats, Pushed};
use crate::media::{g711, rtp};
use crate::store::manifest::MediaStats;

const RATE: u32 = 8000;
/// Shortest session interval accepted (RFC 4028 Min-SE default).
const MIN_SE: u64 = 90;

struct Stream {
    plan: StreamPlan,
    ports: RtpPorts,
    jitter: JitterBuffer,
    /// Where RTP is accepted from (`sdp`), or the latched source.
    source: Option<SocketAddr>,
    last_dtmf_ts: Option<u32>,
    decoded: Vec<i16>,
    out: Vec<i16>,
    /// SRTP: the decryption context for the offered key, and our own key for answers.
    srtp: Option<Box<SrtpIn>>,
    /// Opus: the decoder (made at the first Opus packet) and its timestamp scaler.
    opus: Option<Box<OpusIn>>,
}

/// Opus decoded at the call's 8 kHz (libopus resamples internally), its 48 kHz RTP
/// timestamps scaled to 8 kHz sample positions for the jitter buffer.
struct OpusIn {
    /// In a mutex only to be `Sync` (see `SrtpIn`); never contended.
    dec: std::sync::Mutex<opus::Decoder>,
    /// Extended (unwrapped) 48 kHz timestamp of the last packet.
    ext: i64,
    last: Option<u32>,
}

impl OpusIn {
    fn new() -> Option<Box<OpusIn>> {
        let dec = opus::Decoder::new(RATE, opus::Channels::Mono).ok()?;
        Some(Box::new(OpusIn { dec: std::sync::Mutex::new(dec), ext: 0, last: None }))
    }

    /// The 8 kHz timestamp for a 48 kHz one: continuous across the 32-bit wrap
    /// (dividing the raw value would jump there).
    fn scale(&mut self, ts: u32) -> u32 {
        match self.last {
            None => self.ext = i64::from(ts),
            Some(l) => self.ext += i64::from(ts.wrapping_sub(l) as i32),
        }
        self.last = Some(ts);
        self.ext.div_euclid(i64::from(48_000 / RATE)) as u32
    }
}

struct SrtpIn {
    /// In a mutex only to be `Sync` (the context is `Send` but not `Sync`, and the call
    /// task holds its streams across awaits); never contended.
    ctx: std::sync::Mutex<webrtc_srtp::context::Context>,
    offered: sdp::SdesKey,
    ours: sdp::SdesKey,
}

impl SrtpIn {
    fn new(offered: &sdp::SdesKey) -> Option<Box<SrtpIn>> {
        use webrtc_srtp::protection_profile::ProtectionProfile;
        let profile = match offered.suite {
            sdp::SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            sdp::SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        };
        let ctx = webrtc_srtp::context::Context::new(&offered.key, &offered.salt, profile, None, None).ok()?;
        let mut material = [0u8; 30];
        getrandom::fill(&mut material).ok()?;
        let mut ours = offered.clone();
        ours.key.copy_from_slice(&material[..16]);
        ours.salt.copy_from_slice(&material[16..]);
        Some(Box::new(SrtpIn { ctx: std::sync::Mutex::new(ctx), offered: offered.clone(), ours }))
    }
}

fn header(tx: &Transaction, name: &str) -> Option<String> {
    request::header(&tx.original, name)
}

fn refuse_headers(r: &Refusal) -> Vec<Header> {
    vec![Header::Other("Warning".into(), format!("399 earshot \"{}\"", r.reason()))]
}

/// Handles a new INVITE through to the call's end.
pub(crate) async fn run(state: Arc<SipState>, mut tx: Transaction) {
    let app = state.app.clone();
    let started = Instant::now();
    let now = app.now();
    let facts = request::invite_facts(&tx.original, &state.cfg.tenant_header);
    let Some(source) = facts.source else {
        respond(&state, &mut tx, 400, vec![], None).await;
        return;
    };
    let Some(sip_call_id) = facts.call_id.clone() else {
        respond(&state, &mut tx, 400, vec![], None).await;
        return;
    };
    if app.is_draining() {
        respond(&state, &mut tx, 503, vec![Header::Other("Retry-After".into(), "30".into())], None).await;
        return;
    }
    // Who is it for, and may this source fork for them?
    let tenant = match invite::resolve_tenant(
        &app.config.tenants,
        source.ip(),
        facts.user.as_deref(),
        facts.tenant.as_deref(),
    ) {
        Ok(t) if app.ingest_tenant(&t.id).is_some() => t,
        Ok(_) => {
            respond(
                &state,
                &mut tx,
                403,
                vec![Header::Other("Warning".into(), "399 earshot \"tenant deleted\"".into())],
                None,
            )
            .await;
            return;
        }
        Err(r) => {
            tracing::warn!(%source, reason = %r, "SIP INVITE refused");
            app.metrics.errors.with_label_values(&["sip", r.code()]).inc();
            respond(&state, &mut tx, r.status(), refuse_headers(&r), None).await;
            return;
        }
    };
    // Digest authentication, when the tenant asks for it.
    if let Some(d) = &tenant.sip.digest {
        let creds = digest::Credentials { realm: &d.realm, user: &d.user, password: &d.password };
        let now = now.timestamp().max(0) as u64;
        if let Err(e) = digest::verify(header(&tx, "Authorization").as_deref(), "INVITE", &creds, &state.nonce_key, now)
        {
            if e != digest::DigestError::Missing {
                tracing::warn!(%source, tenant = %tenant.id, reason = %e, "SIP INVITE failed digest authentication");
                app.metrics.errors.with_label_values(&["sip", "digest_failed"]).inc();
            }
            let www = digest::challenge(&d.realm, &state.nonce_key, now, e == digest::DigestError::Stale);
            respond(&state, &mut tx, 401, vec![Header::Other("WWW-Authenticate".into(), www)], None).await;
            return;
        }
    }
    // Session timer (RFC 4028): too short an interval is refused with 422.
    let session_expires = facts.session_expires;
    if let Some(se) = session_expires {
        if se < MIN_SE {
            respond(&state, &mut tx, 422, vec![Header::Other("Min-SE".into(), MIN_SE.to_string())], None).await;
            return;
        }
    }
    let content_type = facts.content_type.clone();
    let offer = match invite::read_body(content_type.as_deref(), tx.original.body()) {
        Ok(o) => o,
        Err(r) => {
            tracing::warn!(%source, reason = %r, "SIP INVITE refused");
            app.metrics.errors.with_label_values(&["sip", r.code()]).inc();
            respond(&state, &mut tx, r.status(), refuse_headers(&r), None).await;
            return;
        }
    };
    let plan = match invite::plan(&offer, &tenant.sip, facts.rep.as_deref()) {
        Ok(p) => p,
        Err(r) => {
            app.metrics.errors.with_label_values(&["sip", r.code()]).inc();
            respond(&state, &mut tx, r.status(), refuse_headers(&r), None).await;
            return;
        }
    };
    // Capacity: SIP's own limit and the server's.
    let over = state.active.fetch_add(1, Ordering::AcqRel) >= state.cfg.max_calls;
    let _active = ActiveGuard(state.clone());
    let slot = if over { None } else { CallSlot::try_acquire(&app) };
    let Some(slot) = slot else {
        respond(&state, &mut tx, 503, vec![Header::Other("Retry-After".into(), "5".into())], None).await;
        return;
    };
    // Our RTP ports, one pair per stream.
    let mut streams = Vec::new();
    for sp in &plan.streams {
        let Some(ports) = state.bind_rtp() else {
            tracing::error!("no free RTP port in sip.rtp_ports");
            respond(&state, &mut tx, 503, vec![Header::Other("Retry-After".into(), "5".into())], None).await;
            return;
        };
        streams.push(Stream {
            source: if state.cfg.rtp_source == RtpSource::Sdp { sp.remote } else { None },
            plan: sp.clone(),
            ports,
            jitter: JitterBuffer::new(JitterConfig::for_rate(RATE, state.cfg.jitter_delay.as_millis() as u32)),
            last_dtmf_ts: None,
            decoded: Vec::with_capacity(320),
            out: Vec::with_capacity(1600),
            opus: None,
            srtp: match &sp.srtp {
                Some(k) => match SrtpIn::new(k) {
                    Some(c) => Some(c),
                    None => {
                        respond(
                            &state,
                            &mut tx,
                            488,
                            vec![Header::Other("Warning".into(), "399 earshot \"unusable SRTP key\"".into())],
                            None,
                        )
                        .await;
                        return;
                    }
                },
                None => None,
            },
        });
    }
    let siprec = offer.metadata.is_some()
        || content_type.as_deref().is_some_and(|c| c.to_ascii_lowercase().starts_with("multipart/"))
        || facts.requires_siprec;
    let mut source_ids = BTreeMap::new();
    source_ids.insert("sip_call_id".to_string(), sip_call_id.clone());
    if let Some(sid) = offer.metadata.as_ref().and_then(|m| m.session_id.clone()) {
        source_ids.insert("siprec_session_id".to_string(), sid);
    }
    if let Some(key) = facts.external_call_id.clone() {
        source_ids.insert("external_call_id".to_string(), key);
    }
    let info = CallInfo {
        call_id: CallId::new_at(now),
        tenant: tenant.id.clone(),
        campaign: facts.campaign.clone(),
        rep_id: plan.rep_id.clone(),
        source: if siprec { Source::Siprec } else { Source::Sip },
        source_ids,
        participants: plan.participants.clone(),
        layout: plan.layout,
        sample_rate: RATE,
        encoding: SampleEncoding::L16,
        started_at: now,
    };
    let recording = tenant.recording_for(info.campaign.as_deref());
    let session = match CallSession::start(app.clone(), slot, info, recording).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "SIP call refused: storage");
            respond(&state, &mut tx, 500, vec![], None).await;
            return;
        }
    };
    // The answer: our ports for the streams we take, port 0 for the rest.
    let sdp_session = rand_u64();
    let answer = answer_for(&offer, &streams, &state, sdp_session, 1);
    let mut headers = vec![
        Header::Other("Contact".into(), state.contact.clone()),
        Header::Other("Content-Type".into(), "application/sdp".into()),
    ];
    if let Some(se) = session_expires {
        headers.push(Header::Other("Session-Expires".into(), format!("{se};refresher=uac")));
        if facts.supports_timer {
            headers.push(Header::Other("Require".into(), "timer".into()));
        }
    }
    respond(&state, &mut tx, 200, headers, Some(answer.into_bytes())).await;
    let dialog = Dialog::new(&tx, source);
    drive_until_ack(tx);
    let (msg_tx, msg_rx) = mpsc::channel(8);
    state.register(&sip_call_id, msg_tx);
    tracing::info!(call_id = %session.info().call_id, sip_call_id = %sip_call_id, %source, streams = streams.len(), siprec, "SIP call answered");
    let counters = PacketCounters::new(&app.metrics, session.info().source);
    let media = MediaLoop {
        counters,
        state: state.clone(),
        session,
        streams,
        started,
        offer,
        sdp_session,
        sdp_version: 1,
        session_expires,
    };
    let outcome = media.run(msg_rx).await;
    state.unregister(&sip_call_id);
    if outcome == Outcome::Timeout {
        // We ended it (no RTP, or no session refresh): tell the SBC, off the call path.
        if let Some(d) = dialog {
            let state = state.clone();
            let token = state.app.tracker.token();
            tokio::spawn(async move {
                let answer = send_bye(&state, d).await;
                tracing::info!(sip_call_id = %sip_call_id, ?answer, "sent BYE");
                drop(token);
            });
        }
    }
}

struct ActiveGuard(Arc<SipState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) >> 1
}

fn answer_for(offer: &Offer, streams: &[Stream], state: &SipState, session: u64, version: u64) -> String {
    let answers: Vec<AnswerStream> = (0..offer.sdp.media.len())
        .map(|i| match streams.iter().find(|s| s.plan.section == i) {
            Some(s) => AnswerStream::Accept {
                port: s.ports.port,
                codec: s.plan.codec,
                pt: s.plan.pt,
                dtmf_pt: s.plan.dtmf_pt,
                crypto: s.srtp.as_ref().map(|c| c.ours.clone()),
            },
            None => AnswerStream::Reject,
        })
        .collect();
    sdp::answer(&offer.sdp, &answers, state.cfg.advertised(), session, version)
}

/// The counters every packet touches, resolved once per call: a label lookup hashes
/// the labels each time, and it showed in profiles at 50,000 packets/s.
struct PacketCounters {
    received: IntCounter,
    reordered: IntCounter,
    duplicate: IntCounter,
    late: IntCounter,
    frames_received: IntCounter,
    frames_reordered: IntCounter,
    dropped_late: IntCounter,
    dropped_duplicate: IntCounter,
}

impl PacketCounters {
    fn new(m: &crate::metrics::Metrics, source: Source) -> Self {
        let s = source.as_str();
        let rtp = |l: &str| m.rtp_packets.with_label_values(&[l]);
        PacketCounters {
            received: rtp("received"),
            reordered: rtp("reordered"),
            duplicate: rtp("duplicate"),
            late: rtp("late"),
            frames_received: m.frames_received.with_label_values(&[s]),
            frames_reordered: m.frames_reordered.with_label_values(&[s]),
            dropped_late: m.frames_dropped.with_label_values(&[s, "late"]),
            dropped_duplicate: m.frames_dropped.with_label_values(&[s, "duplicate"]),
        }
    }
}

struct MediaLoop {
    counters: PacketCounters,
    state: Arc<SipState>,
    session: CallSession,
    streams: Vec<Stream>,
    started: Instant,
    offer: Offer,
    sdp_session: u64,
    sdp_version: u64,
    session_expires: Option<u64>,
}

async fn recv_on(s: Option<&Stream>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.ports.rtp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_rtcp(s: Option<&Stream>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.ports.rtcp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl MediaLoop {
    fn now_samples(&self) -> i64 {
        (self.started.elapsed().as_micros() as i64) * i64::from(RATE) / 1_000_000
    }

    /// Runs the call to its end; how it ended.
    async fn run(mut self, mut msgs: mpsc::Receiver<CallMsg>) -> Outcome {
        let app = self.state.app.clone();
        let rtp_timeout = self.state.cfg.rtp_timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_packet = Instant::now();
        let mut refreshed = Instant::now();
        let (mut buf0, mut buf1) = (vec![0u8; 2048], vec![0u8; 2048]);
        let (mut rtcp0, mut rtcp1) = (vec![0u8; 1500], vec![0u8; 1500]);
        let source = self.session.info().source;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = app.force_close.cancelled() => break Outcome::Shutdown,
                m = msgs.recv() => match m {
                    Some(CallMsg::Bye) | None => break Outcome::Completed,
                    Some(CallMsg::Offer(tx)) => {
                        refreshed = Instant::now();
                        self.reoffer(*tx).await;
                    }
                },
                r = recv_on(self.streams.first(), &mut buf0) => if let Ok((n, from)) = r {
                    last_packet = Instant::now();
                    self.on_packet(0, &buf0[..n], from);
                },
                r = recv_on(self.streams.get(1), &mut buf1) => if let Ok((n, from)) = r {
                    last_packet = Instant::now();
                    self.on_packet(1, &buf1[..n], from);
                },
                r = recv_rtcp(self.streams.first(), &mut rtcp0) => if r.is_ok() {
                    app.metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                },
                r = recv_rtcp(self.streams.get(1), &mut rtcp1) => if r.is_ok() {
                    app.metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                },
                _ = tick.tick() => {
                    if self.release(None).is_err() {
                        break Outcome::StorageError;
                    }
                    if last_packet.elapsed() > rtp_timeout {
                        app.metrics.rtp_timeouts.inc();
                        tracing::warn!(call_id = %self.session.info().call_id, "no RTP for {rtp_timeout:?}: ending the call");
                        break Outcome::Timeout;
                    }
                    if let Some(se) = self.session_expires {
                        if refreshed.elapsed() > Duration::from_secs(se) {
                            tracing::warn!(call_id = %self.session.info().call_id, "session timer expired without a refresh: ending the call");
                            break Outcome::Timeout;
                        }
                    }
                }
            }
        };
        // A BYE can overtake the last packets (they sit in the sockets while the select
        // takes the BYE first): read what is already queued before the end. Not with
        // `try_recv_from`: it trusts the reactor's readiness, which can lag the kernel.
        if outcome == Outcome::Completed {
            for i in 0..self.streams.len() {
                for _ in 0..512 {
                    let r =
                        tokio::time::timeout(Duration::from_millis(20), self.streams[i].ports.rtp.recv_from(&mut buf0))
                            .await;
                    let Ok(Ok((n, from))) = r else { break };
                    self.on_packet(i, &buf0[..n], from);
                }
            }
        }
        // Everything received is played out (no delay at the end).
        let end = self.now_samples();
        let _ = self.release(Some(end));
        let mut stats = MediaStats::default();
        for s in &self.streams {
            let j: JitterStats = s.jitter.stats();
            stats.frames_received += j.received + j.late;
            stats.frames_reordered += j.reordered;
            stats.frames_gap_filled += j.lost;
            stats.frames_dropped += j.late + j.duplicates + j.overflow;
            stats.samples_gap_filled = stats.samples_gap_filled.max(j.concealed_samples);
            app.metrics.rtp_packets.with_label_values(&["lost"]).inc_by(j.lost);
            app.metrics.frames_gap_filled.with_label_values(&[source.as_str()]).inc_by(j.lost);
            app.metrics.rtp_jitter_seconds.observe(f64::from(j.jitter) / f64::from(RATE));
            tracing::info!(call_id = %self.session.info().call_id, channel = s.plan.channel, received = j.received, lost = j.lost, late = j.late, duplicates = j.duplicates, reordered = j.reordered, resyncs = j.resyncs, jitter_ms = j.jitter / 8, "RTP stream ended");
        }
        self.session.end(outcome.clone(), stats).await;
        outcome
    }

    fn on_packet(&mut self, i: usize, data: &[u8], from: SocketAddr) {
        let now = self.now_samples();
        let metrics = &self.state.app.metrics;
        let s = &mut self.streams[i];
        match s.source {
            Some(expected) if expected != from => {
                metrics.rtp_packets.with_label_values(&["wrong_source"]).inc();
                return;
            }
            // `latch`, or the offer gave no address (0.0.0.0): the first sender.
            None => s.source = Some(from),
            _ => {}
        }
        let plain;
        let data = match s.srtp.as_mut() {
            // RTCP muxed on the RTP port (SRTCP): counted, not decrypted.
            Some(_) if data.len() > 1 && (192..=223).contains(&data[1]) => {
                metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                return;
            }
            Some(c) => match c.ctx.get_mut().unwrap_or_else(|e| e.into_inner()).decrypt_rtp(data) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(_) => {
                    metrics.rtp_packets.with_label_values(&["srtp_failed"]).inc();
                    return;
                }
            },
            None => data,
        };
        let (h, payload) = match rtp::parse(data) {
            Ok(p) => p,
            Err(rtp::RtpError::Rtcp) => {
                metrics.rtp_packets.with_label_values(&["rtcp"]).inc();
                return;
            }
            Err(_) => {
                metrics.rtp_packets.with_label_values(&["malformed"]).inc();
                return;
            }
        };
        if Some(h.payload_type) == s.plan.dtmf_pt {
            if let Some((digit, true)) = rtp::telephone_event(payload) {
                // The end packet is sent three times (RFC 4733 §2.5.1.4): once per event.
                if s.last_dtmf_ts != Some(h.timestamp) {
                    s.last_dtmf_ts = Some(h.timestamp);
                    let track = match s.plan.role {
                        Role::Rep => "rep",
                        Role::Customer => "customer",
                        Role::Other => "mixed",
                    };
                    self.session.record_dtmf(digit.to_string(), Some(track));
                }
            }
            return;
        }
        if h.payload_type != s.plan.pt {
            metrics.rtp_packets.with_label_values(&["other_payload"]).inc();
            return;
        }
        s.decoded.clear();
        let mut h = h;
        match s.plan.codec {
            Codec::Pcmu => g711::decode_ulaw_into(payload, &mut s.decoded),
            Codec::Pcma => g711::decode_alaw_into(payload, &mut s.decoded),
            Codec::Opus => {
                if s.opus.is_none() {
                    s.opus = OpusIn::new();
                }
                let Some(o) = s.opus.as_mut() else { return };
                // Up to 120 ms per packet (RFC 6716).
                s.decoded.resize(RATE as usize * 120 / 1000, 0);
                match o.dec.get_mut().unwrap_or_else(|e| e.into_inner()).decode(payload, &mut s.decoded, false) {
                    Ok(n) => s.decoded.truncate(n),
                    Err(_) => {
                        metrics.rtp_packets.with_label_values(&["malformed"]).inc();
                        return;
                    }
                }
                h.timestamp = o.scale(h.timestamp);
            }
        }
        let c = &self.counters;
        c.frames_received.inc();
        let before = s.jitter.stats().reordered;
        match s.jitter.push(now, &h, &s.decoded) {
            Pushed::Accepted if s.jitter.stats().reordered > before => {
                c.reordered.inc();
                c.frames_reordered.inc();
            }
            Pushed::Accepted => c.received.inc(),
            Pushed::Duplicate => {
                c.duplicate.inc();
                c.dropped_duplicate.inc();
            }
            Pushed::Late => {
                c.late.inc();
                c.dropped_late.inc();
            }
        }
    }

    /// Releases every stream's audio up to now minus the playout delay (or `to`),
    /// interleaves it by channel and queues it for the recorder.
    fn release(&mut self, to: Option<i64>) -> Result<(), ()> {
        let now = self.now_samples();
        for s in &mut self.streams {
            s.out.clear();
            match to {
                Some(t) => s.jitter.pull_to(t, &mut s.out),
                None => s.jitter.pull(now, &mut s.out),
            }
        }
        let n = self.streams.iter().map(|s| s.out.len()).min().unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        let channels = self.streams.len();
        let mut bytes = Vec::with_capacity(n * channels * 2);
        // `streams` is in channel order (the plan sorts by channel).
        for k in 0..n {
            for s in &self.streams {
                bytes.extend_from_slice(&s.out[k].to_le_bytes());
            }
        }
        self.session.write_audio(&bytes).map_err(|_| ())
    }

    /// A re-INVITE or UPDATE: new remote addresses and codecs (hold, resume, port
    /// change), new metadata merged; our ports stay. No body: a session refresh.
    async fn reoffer(&mut self, mut tx: Transaction) {
        let ct = header(&tx, "Content-Type");
        let body = tx.original.body().clone();
        if body.is_empty() {
            let answer = answer_for(&self.offer, &self.streams, &self.state, self.sdp_session, self.sdp_version);
            let headers = vec![
                Header::Other("Contact".into(), self.state.contact.clone()),
                Header::Other("Content-Type".into(), "application/sdp".into()),
            ];
            respond(&self.state, &mut tx, 200, headers, Some(answer.into_bytes())).await;
            drive_until_ack(tx);
            return;
        }
        let offer = match invite::read_body(ct.as_deref(), &body) {
            Ok(o) => o,
            Err(r) => {
                respond(&self.state, &mut tx, r.status(), refuse_headers(&r), None).await;
                return;
            }
        };
        let tenant = self.state.app.config.tenant(&self.session.info().tenant).cloned();
        let rules = tenant.map(|t| t.sip).unwrap_or_default();
        let plan: CallPlan = match invite::plan(&offer, &rules, None) {
            Ok(p) => p,
            Err(r) => {
                respond(&self.state, &mut tx, r.status(), refuse_headers(&r), None).await;
                return;
            }
        };
        // Streams keep their channels; match new sections by label, else by order.
        for (k, s) in self.streams.iter_mut().enumerate() {
            let new = plan.streams.iter().find(|p| p.label.is_some() && p.label == s.plan.label).or_else(|| {
                plan.streams
                    .iter()
                    .filter(|p| p.label.is_none() || s.plan.label.is_none())
                    .nth(k)
                    .or(plan.streams.get(k))
            });
            if let Some(p) = new {
                if self.state.cfg.rtp_source == RtpSource::Sdp {
                    s.source = p.remote;
                }
                s.plan.section = p.section;
                s.plan.codec = p.codec;
                s.plan.pt = p.pt;
                s.plan.dtmf_pt = p.dtmf_pt;
                // New keys (a re-key, or SRTP switched on or off) take effect now.
                if p.srtp.as_ref() != s.srtp.as_ref().map(|c| &c.offered) {
                    s.srtp = p.srtp.as_ref().and_then(SrtpIn::new);
                }
            }
        }
        let mut merged = self.offer.metadata.take();
        match (merged.as_mut(), offer.metadata) {
            (Some(m), Some(u)) => m.merge(u),
            (None, Some(u)) => merged = Some(u),
            _ => {}
        }
        self.offer = Offer { sdp: offer.sdp, metadata: merged };
        self.sdp_version += 1;
        let answer = answer_for(&self.offer, &self.streams, &self.state, self.sdp_session, self.sdp_version);
        let headers = vec![
            Header::Other("Contact".into(), self.state.contact.clone()),
            Header::Other("Content-Type".into(), "application/sdp".into()),
        ];
        respond(&self.state, &mut tx, 200, headers, Some(answer.into_bytes())).await;
        drive_until_ack(tx);
        tracing::info!(call_id = %self.session.info().call_id, version = self.sdp_version, "SIP call re-offered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_timestamps_scale_to_8khz_across_the_wrap() {
        let mut o = OpusIn::new().expect("decoder");
        let start = u32::MAX - 960 * 2 + 1; // two packets before the wrap
        let mut out = Vec::new();
        for k in 0..5u32 {
            out.push(o.scale(start.wrapping_add(k * 960)));
        }
        for w in out.windows(2) {
            assert_eq!(w[1].wrapping_sub(w[0]), 160, "{out:?}");
        }
        // A reordered (older) packet maps back by the same step.
        assert_eq!(out[4].wrapping_sub(o.scale(start.wrapping_add(3 * 960))), 160);
    }
}
