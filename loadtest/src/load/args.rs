//! What a load run is: the command line (`RunArgs`), a scenario file that overrides
//! it, and the ingest-path mix calls are dealt from.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::slo::parse_slo;
use crate::cli::Format;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server base URL, e.g. ws://127.0.0.1:8080 (forks connect here; metrics are read
    /// from it for every format).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// SIPREC: the server's SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub sip: std::net::SocketAddr,
    #[arg(long, value_enum, default_value = "twilio")]
    pub format: Format,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Seconds over which calls are started.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Seconds each call streams (the WAV is looped to fill it).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Mono or stereo WAV (or the scenario's).
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// A scenario file (`loadtest/scenarios/*.toml`): calls, ramp, duration, wav, mix,
    /// live, slo; what it sets overrides the command line.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    #[arg(long, default_value = "demo")]
    pub token: String,
    /// PID of the server, to sample its CPU and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Where to write the JSON result (a .md summary is written beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A mix of ingest paths instead of `--format`: `twilio=2,pcm=1,siprec=1,whip=1`
    /// (calls are dealt round-robin by weight).
    #[arg(long)]
    pub mix: Option<String>,
    /// Publisher token for the WHIP calls of a mix (default: `--token`).
    #[arg(long)]
    pub publisher_token: Option<String>,
    /// Overlay clients to attach to `/live` for the whole run (needs `--live-token`).
    #[arg(long, default_value_t = 0)]
    pub live: usize,
    /// A manager (or admin) token of the tenant for the overlay clients.
    #[arg(long)]
    pub live_token: Option<String>,
    /// Fail (exit 1) if any call saw an error or the server dropped recording audio, and
    /// if a threshold is missed: `--slo "live_hint_p95_ms=2000,rss_per_call_kb=512"`.
    /// Maxima: connect_errors, media_errors, closed_early, sender_max_lag_ms,
    /// frames_dropped, rss_per_call_kb, cpu_cores, live_connect_errors,
    /// live_delivery_p95_ms, live_final_p95_ms, live_hint_p95_ms; minima: completed_min,
    /// live_messages_min.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub slo: Option<String>,
}

pub(super) fn format_name(f: Format) -> &'static str {
    match f {
        Format::Twilio => "twilio",
        Format::Pcm => "pcm",
        Format::Siprec => "siprec",
        Format::Whip => "whip",
    }
}

/// `twilio=2,pcm=1` → the order calls are dealt in (weights expanded).
pub fn parse_mix(spec: &str) -> anyhow::Result<Vec<Format>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').unwrap_or((part, "1"));
        let f = match name.trim() {
            "twilio" => Format::Twilio,
            "pcm" => Format::Pcm,
            "siprec" => Format::Siprec,
            "whip" => Format::Whip,
            other => anyhow::bail!("--mix: unknown ingest path {other:?} (twilio, pcm, siprec, whip)"),
        };
        let w: usize = w.trim().parse().with_context(|| format!("--mix {part:?}: the weight is not a whole number"))?;
        anyhow::ensure!(w <= 100, "--mix {part:?}: weights up to 100");
        out.extend(std::iter::repeat_n(f, w));
    }
    anyhow::ensure!(!out.is_empty(), "--mix: no ingest path with a weight above 0");
    Ok(out)
}

/// A scenario file (`loadtest/scenarios/*.toml`): what a run is, kept with the repository.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub calls: Option<usize>,
    pub ramp: Option<f64>,
    pub duration: Option<f64>,
    /// Relative to the scenario file.
    pub wav: Option<PathBuf>,
    pub mix: Option<String>,
    pub live: Option<usize>,
    pub slo: Option<String>,
}

impl RunArgs {
    /// Fills what a scenario file sets (the command line's `--scenario`).
    pub fn apply_scenario(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Scenario = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if let Some(v) = s.calls {
            self.calls = v;
        }
        if let Some(v) = s.ramp {
            self.ramp = v;
        }
        if let Some(v) = s.duration {
            self.duration = v;
        }
        if let Some(v) = s.wav {
            self.wav = Some(path.parent().unwrap_or(std::path::Path::new(".")).join(v));
        }
        if let Some(m) = s.mix {
            parse_mix(&m)?;
            self.mix = Some(m);
        }
        if let Some(v) = s.live {
            self.live = v;
        }
        if let Some(v) = s.slo {
            parse_slo(&v)?;
            self.slo = Some(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_slos_and_the_shipped_scenarios_parse() {
        let m = parse_mix("twilio=2, pcm=1,whip").unwrap();
        assert_eq!(m.iter().map(|f| format_name(*f)).collect::<Vec<_>>(), ["twilio", "twilio", "pcm", "whip"]);
        assert!(parse_mix("fax=1").unwrap_err().to_string().contains("unknown ingest path"));
        assert!(parse_mix("pcm=0").is_err());
        assert!(parse_slo("completed_min=3, live_hint_p95_ms=2000").unwrap().len() == 2);
        assert!(parse_slo("live_hint_p95_ms=fast").is_err());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            #[derive(clap::Parser)]
            struct W {
                #[command(flatten)]
                a: RunArgs,
            }
            let mut args = <W as clap::Parser>::parse_from(["run"]).a;
            args.apply_scenario(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(args.calls > 0 && args.duration > 0.0, "{}", path.display());
            n += 1;
        }
        assert!(n >= 3);
    }
}
