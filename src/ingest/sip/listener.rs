//! The SIP/SIPREC listener: `rsipstack` owns transports and transactions; this
//! module routes requests to calls. What to accept and how streams map to channels
//! is decided by the pure `crate::ingest::sip` cores; each accepted call runs in its own
//! task (`call`); what they share is in `dialog` that owns its RTP sockets and jitter buffers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rsipstack::sip::{Header, HeadersExt, Method};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::Intake;
use crate::config::{SipConfig, SipTransport};
use crate::ingest::sip::dialog::{respond, warning, CallMsg, SipState};

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
pub async fn start(app: Arc<Intake>, cfg: SipConfig) -> Result<SipListener, SipStartError> {
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
        state.app.tasks.clone().spawn(async move {
            tokio::select! {
                _ = endpoint.serve() => tracing::info!("SIP endpoint stopped"),
                _ = cancel.cancelled() => {}
            }
        });
    }
    {
        let state = state.clone();
        let cancel = cancel.clone();
        state.app.tasks.clone().spawn(async move {
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

fn dispatch(state: &Arc<SipState>, mut tx: Transaction) {
    let method = tx.original.method;
    state.app.metrics.sip_requests.with_label_values(&[method_label(&method)]).inc();
    let state = state.clone();
    match method {
        Method::Invite if !in_dialog(&tx) => {
            let token = state.app.lifecycle.tracker.token();
            state.app.tasks.clone().spawn(async move {
                crate::ingest::sip::call::run(state, tx).await;
                drop(token);
            });
        }
        Method::Invite | Method::Update => {
            let sender =
                call_id(&tx).and_then(|id| state.calls.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned());
            state.app.tasks.clone().spawn(async move {
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
            state.app.tasks.clone().spawn(async move {
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
            state.app.tasks.clone().spawn(async move {
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
            state.app.tasks.clone().spawn(async move { respond(&state, &mut tx, 200, vec![], None).await });
        }
        Method::Ack => {}
        _ => {
            state.app.tasks.clone().spawn(async move { respond(&state, &mut tx, 405, vec![], None).await });
        }
    }
}
