//! A SIP dialog as the listener and a call's task share it: the listener's state
//! (live calls, RTP ports, nonce key), the messages it sends a call, responses, the
//! dialog's identity and the BYE Earshot sends when it ends a call itself.

use crate::app::Intake;
use crate::config::SipConfig;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::connection::SipConnection;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A SIP call's fixed sample rate: G.711's, and what Opus is decoded to.
pub const RATE: u32 = 8000;

/// Messages from the listener to a call's task.
pub enum CallMsg {
    /// The far end hung up (the BYE is already answered).
    Bye,
    /// A re-INVITE (or UPDATE) in the call's dialog: the call answers it.
    Offer(Box<Transaction>),
}

pub struct SipState {
    pub app: Arc<Intake>,
    pub cfg: SipConfig,
    /// Live calls by SIP Call-ID.
    pub calls: Mutex<HashMap<String, mpsc::Sender<CallMsg>>>,
    pub active: AtomicUsize,
    pub next_port: Mutex<u16>,
    /// Our own SIP address, for Contact.
    pub contact: String,
    /// Signs digest-authentication nonces (fresh at each start).
    pub nonce_key: [u8; 32],
    /// Our SIP address as others reach it (advertised IP, bound port), for Via.
    pub local: SocketAddr,
}

/// Sends a final response and counts it. Never fails the caller: a response that
/// cannot be sent is logged (the peer retransmits or gives up).
pub async fn respond(state: &SipState, tx: &mut Transaction, code: u16, headers: Vec<Header>, body: Option<Vec<u8>>) {
    let label = code.to_string();
    state.app.metrics.sip_responses.with_label_values(&[&label]).inc();
    if let Err(e) = tx.reply_with(StatusCode::from(code), headers, body).await {
        tracing::debug!(code, error = %e, "SIP response not sent");
    }
}

pub fn warning(reason: &str) -> Header {
    Header::Other("Warning".into(), format!("399 earshot \"{reason}\""))
}

/// One stream's local RTP and RTCP sockets.
pub struct RtpPorts {
    pub rtp: tokio::net::UdpSocket,
    pub rtcp: tokio::net::UdpSocket,
    pub port: u16,
}

impl SipState {
    /// Binds an even RTP port and the RTCP port above it from the configured range.
    pub fn bind_rtp(&self) -> Option<RtpPorts> {
        let [lo, hi] = self.cfg.rtp_ports;
        let lo = (lo + 1) & !1;
        let slots = (hi.saturating_sub(lo) / 2).max(1);
        let ip = self.cfg.listen.ip();
        for _ in 0..slots.min(512) {
            let port = {
                let mut next = self.next_port.lock().unwrap_or_else(|e| e.into_inner());
                let p = *next;
                *next = if p + 2 > hi - 1 { lo } else { p + 2 };
                p.max(lo)
            };
            let Ok(rtp) = std::net::UdpSocket::bind((ip, port)) else { continue };
            let Ok(rtcp) = std::net::UdpSocket::bind((ip, port + 1)) else { continue };
            if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                continue;
            }
            let (Ok(rtp), Ok(rtcp)) = (tokio::net::UdpSocket::from_std(rtp), tokio::net::UdpSocket::from_std(rtcp))
            else {
                continue;
            };
            return Some(RtpPorts { rtp, rtcp, port });
        }
        None
    }

    pub fn register(&self, call_id: &str, tx: mpsc::Sender<CallMsg>) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).insert(call_id.to_string(), tx);
    }

    pub fn unregister(&self, call_id: &str) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).remove(call_id);
    }
}

/// Keeps a server INVITE transaction alive after its 2xx: retransmits the 2xx over
/// unreliable transports until the ACK comes (RFC 3261 §13.3.1.4), then ends.
pub fn drive_until_ack(tasks: &crate::shutdown::Tasks, mut tx: Transaction) {
    tasks.spawn(async move {
        let reliable = tx.connection.as_ref().is_some_and(|c| c.is_reliable());
        let mut wait = Duration::from_millis(500);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(32);
        loop {
            tokio::select! {
                m = tx.receive() => match m {
                    Some(rsipstack::sip::SipMessage::Request(r)) if r.method == Method::Ack => break,
                    Some(_) => continue,
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::debug!("no ACK for a 2xx within 32 s");
                        break;
                    }
                    if !reliable {
                        if let Some(resp) = tx.last_response.clone() {
                            let _ = tx.respond(resp).await;
                        }
                    }
                    wait = (wait * 2).min(Duration::from_secs(4));
                }
            }
        }
    });
}

/// What sending our own request in a dialog needs: we hang up (BYE) when the RTP
/// timeout or the session timer ends a call, so the SBC stops forking to us.
pub struct Dialog {
    pub invite: rsipstack::sip::Request,
    /// Our 2xx to the INVITE (its To carries our tag).
    pub ok: rsipstack::sip::Response,
    pub endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    pub connection: Option<SipConnection>,
    pub peer: SocketAddr,
}

impl Dialog {
    pub fn new(tx: &Transaction, peer: SocketAddr) -> Option<Dialog> {
        Some(Dialog {
            invite: tx.original.clone(),
            ok: tx.last_response.clone()?,
            endpoint: tx.endpoint_inner.clone(),
            connection: tx.connection.clone(),
            peer,
        })
    }

    /// The BYE for this dialog (RFC 3261 §15.1.1): to the peer's Contact, From our
    /// side of the dialog, To theirs.
    pub fn bye(&self, local: SocketAddr, cseq: u32) -> Option<rsipstack::sip::Request> {
        use crate::ingest::sip::request::header_in;
        use rsipstack::sip::HasHeaders;
        let from = header_in(self.ok.headers(), "To")?;
        let to = header_in(self.invite.headers(), "From")?;
        let call_id = header_in(self.invite.headers(), "Call-ID")?;
        let target = header_in(self.invite.headers(), "Contact")
            .and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_string()))
            .unwrap_or_else(|| self.invite.uri.to_string());
        let transport = match self.connection.as_ref().map(|c| (c.is_reliable(), c.get_addr().r#type)) {
            Some((_, Some(rsipstack::sip::Transport::Tls))) => "TLS",
            Some((true, _)) => "TCP",
            _ => "UDP",
        };
        let mut branch = [0u8; 8];
        let _ = getrandom::fill(&mut branch);
        let branch: String = branch.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} BYE\r\nReason: SIP;cause=408;text=\"no media\"\r\nUser-Agent: earshot/{}\r\nContent-Length: 0\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        match rsipstack::sip::SipMessage::try_from(text.as_bytes()) {
            Ok(rsipstack::sip::SipMessage::Request(r)) => Some(r),
            _ => None,
        }
    }
}

/// Sends a BYE in `dialog` and waits (32 s at most) for the final answer; its code.
pub async fn send_bye(state: &SipState, dialog: Dialog) -> Option<u16> {
    use rsipstack::transaction::key::{TransactionKey, TransactionRole};
    let req = dialog.bye(state.local, 1)?;
    let key = TransactionKey::from_request(&req, TransactionRole::Client).ok()?;
    let mut tx = Transaction::new_client(key, req, dialog.endpoint, dialog.connection);
    tx.destination = Some(rsipstack::transport::SipAddr::from(dialog.peer));
    if let Err(e) = tx.send().await {
        tracing::debug!(error = %e, "BYE not sent");
        return None;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(32);
    loop {
        match tokio::time::timeout_at(deadline, tx.receive()).await {
            Ok(Some(rsipstack::sip::SipMessage::Response(r))) if u16::from(r.status_code.clone()) >= 200 => {
                return Some(r.status_code.into())
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}
