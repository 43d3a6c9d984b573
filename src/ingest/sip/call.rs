//! One SIP/SIPREC call: admission, the SDP answer, then the call's task owns its
//! RTP sockets, jitter buffers and the recorder handle until BYE, RTP timeout,
//! session expiry or shutdown. Network reads never wait on the recorder or the
//! recogniser (`CallSession::write_audio` only queues).
//!
//! This file is the signalling: the INVITE through to the answer, and re-INVITEs and
//! UPDATEs during the call. The media loop is `media`, the packet path `rtp_receiver`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use rsipstack::sip::Header;
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc;

use crate::call::session::{CallSession, CallSlot};
use crate::call::{CallId, CallInfo, Outcome, SampleEncoding, Source};
use crate::config::RtpSource;
use crate::ingest::sip::decoders::SrtpIn;
use crate::ingest::sip::dialog::{drive_until_ack, respond, send_bye, Dialog, SipState, RATE};
use crate::ingest::sip::invite::{CallPlan, Offer, Refusal};
use crate::ingest::sip::media::{MediaLoop, PacketCounters, Stream};
use crate::ingest::sip::sdp::AnswerStream;
use crate::ingest::sip::{digest, invite, request, sdp};
use crate::media::jitter::{JitterBuffer, JitterConfig};

/// Shortest session interval accepted (RFC 4028 Min-SE default).
const MIN_SE: u64 = 90;

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
        Ok(t) if app.active_tenant(&t.id).is_some() => t,
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
    drive_until_ack(&state.app.tasks, tx);
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
            let token = state.app.lifecycle.tracker.token();
            state.app.tasks.clone().spawn(async move {
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

impl MediaLoop {
    /// A re-INVITE or UPDATE: new remote addresses and codecs (hold, resume, port
    /// change), new metadata merged; our ports stay. No body: a session refresh.
    pub(super) async fn reoffer(&mut self, mut tx: Transaction) {
        let ct = header(&tx, "Content-Type");
        let body = tx.original.body().clone();
        if body.is_empty() {
            let answer = answer_for(&self.offer, &self.streams, &self.state, self.sdp_session, self.sdp_version);
            let headers = vec![
                Header::Other("Contact".into(), self.state.contact.clone()),
                Header::Other("Content-Type".into(), "application/sdp".into()),
            ];
            respond(&self.state, &mut tx, 200, headers, Some(answer.into_bytes())).await;
            drive_until_ack(&self.state.app.tasks, tx);
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
        drive_until_ack(&self.state.app.tasks, tx);
        tracing::info!(call_id = %self.session.info().call_id, version = self.sdp_version, "SIP call re-offered");
    }
}
