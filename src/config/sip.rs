//! `[sip]` (the SIP/SIPREC listener) and each tenant's `[tenants.sip]` (who may fork
//! calls to it and how their streams map to channels).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError};

/// A missing key takes its value from `SipConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address of the UDP and TCP listeners.
    pub listen: SocketAddr,
    /// Transports to listen on.
    pub transports: Vec<SipTransport>,
    /// Address put in SDP answers and Contact (default: the listen address; set it for 1:1 NAT).
    pub advertised_ip: Option<IpAddr>,
    /// Local RTP ports, `[first, last]`; each stream takes an even port (RTCP on +1).
    pub rtp_ports: [u16; 2],
    /// A call that gets no RTP on any stream for this long is ended (`timeout`).
    #[serde(with = "humantime_serde")]
    pub rtp_timeout: Duration,
    /// Playout delay of the jitter buffer: how long a missing packet is waited for.
    #[serde(with = "humantime_serde")]
    pub jitter_delay: Duration,
    /// Which RTP sources a stream accepts: `sdp` (only the address the SDP offered)
    /// or `latch` (the first source that sends, for SBCs behind NAT).
    pub rtp_source: RtpSource,
    /// Concurrent SIP calls (also bounded by `limits.max_calls`); beyond: `503`.
    pub max_calls: usize,
    /// A header naming the tenant (checked against that tenant's allow-list).
    pub tenant_header: String,
    /// SIP over TLS (`sips:`, RFC 3261 §26) on its own port, besides UDP/TCP.
    pub tls: Option<SipTls>,
}

/// `[sip.tls]`: a TLS listener with this certificate chain and key (PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTls {
    /// Default `127.0.0.1:5061`; port 0 picks a free one.
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
}

fn default_tls_listen() -> SocketAddr {
    "127.0.0.1:5061".parse().expect("literal")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtpSource {
    #[default]
    Sdp,
    Latch,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5060".parse().expect("literal"),
            transports: vec![SipTransport::Udp, SipTransport::Tcp],
            advertised_ip: None,
            rtp_ports: [20000, 29999],
            rtp_timeout: Duration::from_secs(30),
            jitter_delay: Duration::from_millis(80),
            rtp_source: RtpSource::default(),
            max_calls: 1000,
            tenant_header: "X-Earshot-Tenant".into(),
            tls: None,
        }
    }
}

impl SipConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let [lo, hi] = self.rtp_ports;
        if lo < 1024 || lo > hi || hi - lo < 3 {
            return Err(invalid(
                "sip.rtp_ports",
                "must be [first, last] with 1024 <= first and room for at least two streams",
            ));
        }
        if self.transports.is_empty() {
            return Err(invalid("sip.transports", "must name at least one of \"udp\", \"tcp\""));
        }
        if self.rtp_timeout < Duration::from_secs(1) {
            return Err(invalid("sip.rtp_timeout", "must be at least 1s"));
        }
        if self.jitter_delay < Duration::from_millis(20) || self.jitter_delay > Duration::from_secs(2) {
            return Err(invalid("sip.jitter_delay", "must be between 20ms and 2s"));
        }
        if self.max_calls == 0 {
            return Err(invalid("sip.max_calls", "must be at least 1"));
        }
        Ok(())
    }

    /// The address SDP answers and Contact headers carry.
    pub fn advertised(&self) -> IpAddr {
        self.advertised_ip.unwrap_or(self.listen.ip())
    }
}

/// A tenant's SIP admission and mapping rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSip {
    /// Source addresses or CIDRs that may fork calls for this tenant (empty: none).
    #[serde(default, deserialize_with = "nets")]
    pub allow: Vec<IpNet>,
    /// Request-URI user parts that name this tenant (besides its id).
    #[serde(default)]
    pub users: Vec<String>,
    /// Patterns (`*` wildcard, case-insensitive) of the AORs of reps, e.g.
    /// `"*@agents.example.com"`; a SIPREC participant matching one is the rep.
    #[serde(default)]
    pub rep_aors: Vec<String>,
    /// Which stream is the rep when nothing else says: `first` or `second`.
    #[serde(default)]
    pub rep_stream: RepStream,
    /// Digest authentication (RFC 3261 §22): when set, an INVITE for this tenant is
    /// challenged with `401` until it carries these credentials (on top of `allow`).
    #[serde(default)]
    pub digest: Option<SipDigest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipDigest {
    pub user: String,
    pub password: String,
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "earshot".into()
}

impl TenantSip {
    pub fn validate(&self, tenant: &str) -> Result<(), ConfigError> {
        if let Some(d) = &self.digest {
            if d.user.is_empty() || d.user.contains([':', '"']) || d.realm.is_empty() || d.realm.contains('"') {
                return Err(invalid(
                    format!("tenants.{tenant}.sip.digest"),
                    "user and realm must be non-empty, without ':' or '\"'",
                ));
            }
            if d.password.len() < 12 {
                return Err(invalid(format!("tenants.{tenant}.sip.digest.password"), "must be at least 12 characters"));
            }
        }
        Ok(())
    }
}

/// CIDRs, or plain addresses (a host).
fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                serde::de::Error::custom(format!("`{s}` is not an IP address or CIDR (10.0.0.0/8, 192.0.2.7, ::1)"))
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepStream {
    #[default]
    First,
    Second,
}

impl TenantSip {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip))
    }
}
