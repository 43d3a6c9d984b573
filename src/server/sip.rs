//! The SIP/SIPREC listener: `rsipstack` owns transports and transactions; this
//! module routes requests to calls. What to accept and how streams map to channels
//! is decided by the pure `crate::sip` cores; each accepted call runs in its own
//! task (`sip_call`) that owns its RTP sockets and jitter buffers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::sip::{Header, HeadersExt, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::connection::SipConnection;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::config::{SipConfig, SipTransport};

/// Messages from the listener to a call's task.
pub(crate) enum CallMsg {
    /// The far end hung up (the BYE is already answered).
    Bye,
    /// A re-INVITE (or UPDATE) in the call's dialog: the call answers it.
    Offer(Box<Transaction>),
}

pub(crate) struct SipState {
    pub app: Arc<AppState>,
    pub cfg: SipConfig,
    /// Live calls by SIP Call-ID.
    pub calls: Mutex<HashMap<String, mpsc::Sender<CallMsg>>>,
    pub active: AtomicUsize,
    next_port: Mutex<u16>,
    /// Our own SIP address, for Contact.
    pub contact: String,
    /// Signs digest-authentication nonces (fresh at each start).
    pub nonce_key: [u8; 32],
    /// Our SIP address as others reach it (advertised IP, bound port), for Via.
    pub local: SocketAddr,
}

/// A running listener; dropping it does not stop it: call [`SipListener::stop`].
pub struct SipListener {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    state: Arc<SipState>,
}

impl SipListener {
    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.state.active.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SipStartError {
    #[error("SIP listener on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("no random source for digest nonces: {0}")]
    Random(String),
}

/// Binds UDP and TCP on `cfg.listen` (port 0: one free port for both) and serves.
pub async fn start(app: Arc<AppState>, cfg: SipConfig) -> Result<SipListener, SipStartError> {
    let cancel = CancellationToken::new();
    let transport = TransportLayer::new(cancel.clone());
    let mut addr = cfg.listen;
    let bind_err = |message: String| SipStartError::Bind { addr: cfg.listen, message };
    if cfg.transports.contains(&SipTransport::Udp) {
        let udp = UdpConnection::create_connection(addr, None, Some(cancel.child_token()))
            .await
            .map_err(|e| bind_err(e.to_string()))?;
        let bound: SocketAddr =
            udp.get_addr().addr.clone().try_into().map_err(|_| bind_err("no local address".into()))?;
        addr = bound;
        transport.add_transport(udp.into());
    }
    if cfg.transports.contains(&SipTransport::Tcp) {
        if addr.port() == 0 {
            let probe = std::net::TcpListener::bind(addr).map_err(|e| bind_err(e.to_string()))?;
            addr = probe.local_addr().map_err(|e| bind_err(e.to_string()))?;
        }
        let tcp = TcpListenerConnection::new(addr, None).await.map_err(|e| bind_err(e.to_string()))?;
        transport.add_transport(tcp.into());
    }
    let mut tls_addr = None;
    if let Some(tls) = &cfg.tls {
        // rsipstack builds its rustls configs with the process default provider; the
        // tree has more than one, so name ours (ring) once. Already set: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_err = |message: String| SipStartError::Bind { addr: tls.listen, message };
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| tls_err(format!("{}: {e}", p.display())));
        let config = rsipstack::transport::tls::TlsConfig {
            cert: Some(read(&tls.cert_path)?),
            key: Some(read(&tls.key_path)?),
            ..Default::default()
        };
        let mut at = tls.listen;
        if at.port() == 0 {
            let probe = std::net::TcpListener::bind(at).map_err(|e| tls_err(e.to_string()))?;
            at = probe.local_addr().map_err(|e| tls_err(e.to_string()))?;
        }
        let listener = rsipstack::transport::tls::TlsListenerConnection::new(at, None, config)
            .await
            .map_err(|e| tls_err(e.to_string()))?;
        transport.add_transport(listener.into());
        tls_addr = Some(at);
    }
    let endpoint = EndpointBuilder::new()
        .with_transport_layer(transport)
        .with_cancel_token(cancel.clone())
        .with_user_agent(concat!("earshot/", env!("CARGO_PKG_VERSION")))
        .with_allows(vec![
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Options,
            Method::Update,
            Method::Info,
        ])
        .build();
    let mut incoming = endpoint.incoming_transactions().map_err(|e| bind_err(e.to_string()))?;
    let ip = cfg.advertised();
    let contact = match ip {
        IpAddr::V4(v4) => format!("<sip:earshot@{v4}:{}>", addr.port()),
        IpAddr::V6(v6) => format!("<sip:earshot@[{v6}]:{}>", addr.port()),
    };
    let state = Arc::new(SipState {
        app,
        next_port: Mutex::new(cfg.rtp_ports[0] & !1),
        cfg,
        calls: Mutex::new(HashMap::new()),
        active: AtomicUsize::new(0),
        nonce_key: {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| SipStartError::Random(e.to_string()))?;
            k
        },
        contact,
        local: SocketAddr::new(ip, addr.port()),
    });
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = endpoint.serve() => tracing::info!("SIP endpoint stopped"),
                _ = cancel.cancelled() => {}
            }
        });
    }
    {
        let state = state.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let tx = tokio::select! {
                    t = incoming.recv() => match t { Some(t) => t, None => break },
                    _ = cancel.cancelled() => break,
                };
                dispatch(&state, tx);
            }
        });
    }
    tracing::info!(%addr, "SIP listening (udp/tcp)");
    if let Some(t) = tls_addr {
        tracing::info!(addr = %t, "SIP listening (tls)");
    }
    Ok(SipListener { addr, cancel, state })
}

fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Options => "OPTIONS",
        Method::Update => "UPDATE",
        Method::Info => "INFO",
        _ => "other",
    }
}

fn call_id(tx: &Transaction) -> Option<String> {
    tx.original.call_id_header().ok().map(|c| c.value().to_string())
}

fn in_dialog(tx: &Transaction) -> bool {
    tx.original.to_header().ok().and_then(|t| t.tag().ok().flatten()).is_some()
}

/// Sends a final response and counts it. Never fails the caller: a response that
/// cannot be sent is logged (the peer retransmits or gives up).
pub(crate) async fn respond(
    state: &SipState,
    tx: &mut Transaction,
    code: u16,
    headers: Vec<Header>,
    body: Option<Vec<u8>>,
) {
    let label = code.to_string();
    state.app.metrics.sip_responses.with_label_values(&[&label]).inc();
    if let Err(e) = tx.reply_with(StatusCode::from(code), headers, body).await {
        tracing::debug!(code, error = %e, "SIP response not sent");
    }
}

fn warning(reason: &str) -> Header {
    Header::Other("Warning".into(), format!("399 earshot \"{reason}\""))
}

fn dispatch(state: &Arc<SipState>, mut tx: Transaction) {
    let method = tx.original.method;
    state.app.metrics.sip_requests.with_label_values(&[method_label(&method)]).inc();
    let state = state.clone();
    match method {
        Method::Invite if !in_dialog(&tx) => {
            let token = state.app.tracker.token();
            tokio::spawn(async move {
                super::sip_call::run(state, tx).await;
                drop(token);
            });
        }
        Method::Invite | Method::Update => {
            let sender =
                call_id(&tx).and_then(|id| state.calls.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned());
            tokio::spawn(async move {
                match sender {
                    Some(s) => {
                        if let Err(mpsc::error::SendError(CallMsg::Offer(mut tx))) =
                            s.send(CallMsg::Offer(Box::new(tx))).await
                        {
                            respond(&state, &mut tx, 481, vec![], None).await;
                        }
                    }
                    None => {
                        // Several nodes: a dialog another node owns is refused naming it
                        // (the SBC/dispatcher must keep a dialog on one node).
                        let owner = match (&state.app.cluster, call_id(&tx)) {
                            (Some(c), Some(id)) => c.owner_of_source("sip_call_id", &id).await,
                            _ => None,
                        };
                        let reason = match owner {
                            Some(e) => {
                                tracing::warn!(owner = %e.node, "SIP: in-dialog request for a call another node owns; refused");
                                format!("dialog owned by node {} ({})", e.node, e.url)
                            }
                            None => "no such call here".into(),
                        };
                        respond(&state, &mut tx, 481, vec![warning(&reason)], None).await
                    }
                }
            });
        }
        Method::Bye | Method::Cancel => {
            let sender =
                call_id(&tx).and_then(|id| state.calls.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned());
            tokio::spawn(async move {
                match sender {
                    Some(s) => {
                        respond(&state, &mut tx, 200, vec![], None).await;
                        if method == Method::Bye {
                            let _ = s.send(CallMsg::Bye).await;
                        }
                    }
                    None => respond(&state, &mut tx, 481, vec![], None).await,
                }
            });
        }
        Method::Options => {
            tokio::spawn(async move {
                let headers = vec![
                    Header::Other(
                        "Accept".into(),
                        "application/sdp, multipart/mixed, application/rs-metadata+xml".into(),
                    ),
                    Header::Other("Supported".into(), "timer, siprec".into()),
                ];
                let code = if state.app.is_draining() { 503 } else { 200 };
                respond(&state, &mut tx, code, headers, None).await;
            });
        }
        Method::Info => {
            tokio::spawn(async move { respond(&state, &mut tx, 200, vec![], None).await });
        }
        Method::Ack => {}
        _ => {
            tokio::spawn(async move { respond(&state, &mut tx, 405, vec![], None).await });
        }
    }
}

/// One stream's local RTP and RTCP sockets.
pub(crate) struct RtpPorts {
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
pub(crate) fn drive_until_ack(mut tx: Transaction) {
    tokio::spawn(async move {
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
pub(crate) struct Dialog {
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
        use crate::sip::request::header_in;
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
pub(crate) async fn send_bye(state: &SipState, dialog: Dialog) -> Option<u16> {
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
