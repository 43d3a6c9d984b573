//! `earshot replay` (also `earshot-loadtest replay`): stream one WAV as a fork.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use base64::Engine;
use clap::{Args, ValueEnum};

use crate::audio::Audio;
use crate::{pcm, twilio, ws};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Twilio,
    Pcm,
    /// A SIPREC client (UDP) with two PCMU streams; `--to` is the SIP address.
    Siprec,
    /// A WHIP (WebRTC) publisher: one Opus track as the rep; `--token` is a publisher token.
    Whip,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Mono or stereo WAV (stereo: left = rep, right = customer).
    pub file: PathBuf,
    /// Server base URL (ws://host:port or wss://…); the fork path is appended.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub to: String,
    #[arg(long, value_enum, default_value = "twilio")]
    pub format: Format,
    /// Playback speed: 1 = real time.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// The tenant's fork secret.
    #[arg(long, default_value = "demo")]
    pub token: String,
    #[arg(long)]
    pub campaign: Option<String>,
    #[arg(long)]
    pub rep: Option<String>,
    /// PCM: resample to this rate before sending (default: the file's rate).
    #[arg(long)]
    pub rate: Option<u32>,
}

fn fork_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.contains("/fork/") {
        base.to_string()
    } else {
        format!("{base}{path}")
    }
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let audio = Audio::load_wav(&args.file)?;
    eprintln!(
        "replaying {} ({:.1} s, {} ch, {} Hz) as {:?} at {}x",
        args.file.display(),
        audio.duration_secs(),
        audio.channels.len(),
        audio.sample_rate,
        args.format,
        args.speed
    );
    let report = match args.format {
        Format::Twilio => {
            let mut params = BTreeMap::new();
            params.insert("token".to_string(), args.token.clone());
            if let Some(c) = &args.campaign {
                params.insert("campaign".into(), c.clone());
            }
            if let Some(r) = &args.rep {
                params.insert("rep".into(), r.clone());
            }
            let script =
                twilio::render(&audio, &twilio::TwilioOptions { custom_parameters: params, ..Default::default() })?;
            let url = fork_url(&args.to, &format!("/fork/twilio/{}", args.tenant));
            let mut conn = ws::connect(&url, &[], None).await?;
            twilio::send(&mut conn, &script, args.speed).await?
        }
        Format::Siprec => {
            let to = args.to.trim_start_matches("sip:").trim_start_matches("udp://");
            let server: std::net::SocketAddr = to
                .parse()
                .map_err(|_| anyhow::anyhow!("--to must be the SIP address (host:port) for siprec, not {to:?}"))?;
            let o = crate::siprec::SiprecOptions {
                server,
                user: args.tenant.clone(),
                tenant_header: None,
                campaign: args.campaign.clone(),
                rep_aor: format!("sip:{}@agents.example.com", args.rep.as_deref().unwrap_or("rep")),
                customer_aor: "sip:customer@pstn.example.com".into(),
                speed: args.speed,
            };
            let r = crate::siprec::call(&o, std::sync::Arc::new(crate::siprec::render(&audio)?)).await?;
            eprintln!(
                "sent {} RTP packets in two streams (set up in {:?}); {}",
                r.packets_sent,
                r.setup,
                match r.bye_status {
                    Some(c) => format!("BYE answered {c}"),
                    None => "the server hung up".into(),
                }
            );
            return Ok(());
        }
        Format::Whip => {
            let o = crate::whip::WhipOptions {
                base: args.to.replace("ws://", "http://"),
                token: args.token.clone(),
                call: format!("replay-{}", std::process::id()),
                party: "rep".into(),
                campaign: args.campaign.clone(),
            };
            let secs = audio.duration_secs() / args.speed.max(0.01);
            let r = crate::whip::publish(
                &o,
                std::sync::Arc::new(crate::whip::render(&audio)?),
                std::time::Duration::from_secs_f64(secs),
                || {},
            )
            .await?;
            eprintln!("sent {} Opus packets over WebRTC; DELETE answered {:?}", r.packets_sent, r.delete_status);
            return Ok(());
        }
        Format::Pcm => {
            let audio = match args.rate {
                Some(r) => audio.resampled(r)?,
                None => audio,
            };
            let meta = serde_json::json!({
                "tenant": args.tenant,
                "call_id": format!("replay-{}", std::process::id()),
                "campaign": args.campaign,
                "rep": args.rep,
                "encoding": "L16",
            });
            let script = pcm::render(&audio, meta);
            let url = fork_url(&args.to, "/fork/pcm");
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", args.tenant, args.token));
            let mut conn = ws::connect(&url, &[("authorization".into(), format!("Basic {basic}"))], None).await?;
            pcm::send(&mut conn, &script, args.speed).await?
        }
    };
    eprintln!(
        "sent {} media frames; server closed with {:?} {}",
        report.media_sent, report.closing.code, report.closing.reason
    );
    if report.closed_early || !matches!(report.closing.code, Some(1000)) {
        bail!("server ended the stream: {:?} {}", report.closing.code, report.closing.reason);
    }
    Ok(())
}
