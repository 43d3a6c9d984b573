//! `earshot calls`: read stored calls back (manifest, coaching, transcript, audio) and
//! set or release their legal hold; reads of content are audited.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use earshot::config::Config;

use super::{default_config_path, operator_audit, run_async};

#[derive(Subcommand)]
pub enum CallsCommand {
    /// List a tenant's calls.
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
    },
    /// Print a call's manifest.
    Show {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
    },
    /// Print a call's coaching: the hints raised live and the scorecard.
    Coaching {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
        /// The raw JSON (scorecard.json) instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print a call's transcript (text, or the JSON with --json).
    GetTranscript {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a call under legal hold: retention deletes nothing of it until released.
    Hold {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a call's legal hold.
    Release {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
    },
    /// Write a call's recording to a WAV file.
    GetAudio {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Logs an operator's read of a call in the tenant's audit log.
fn audit_read(
    r: &earshot::store::spool::StoreReader,
    id: earshot::call::CallId,
    action: &'static str,
) -> anyhow::Result<()> {
    let store = r.store().clone();
    run_async(async move {
        let call = store.find_call(id).await?;
        let target = earshot::store::privacy::call_ref(&store, &call.tenant, id).ok();
        operator_audit(&store, &call.tenant, action, target, serde_json::Value::Null).await
    })
}

pub fn run(cmd: CallsCommand) -> anyhow::Result<()> {
    let storage = |config: Option<PathBuf>| -> anyhow::Result<earshot::store::spool::StoreReader> {
        let c = Config::load(&default_config_path(config))?;
        Ok(earshot::store::spool::StoreReader::open(&c.storage)?)
    };
    let parse_id =
        |s: &str| earshot::call::CallId::parse(s).with_context(|| format!("{s:?} is not a call id (UUIDv7)"));
    match cmd {
        CallsCommand::List { config, tenant } => {
            for id in storage(config)?.list_calls(&tenant) {
                println!("{id}");
            }
        }
        CallsCommand::Show { config, call_id } => {
            let m = storage(config)?.manifest(parse_id(&call_id)?)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        CallsCommand::Coaching { config, call_id, json } => {
            let bytes = storage(config)?
                .file(parse_id(&call_id)?, "scorecard.json")
                .with_context(|| format!("call {call_id}: no scorecard (the call may still be running)"))?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if json {
                println!("{text}");
                return Ok(());
            }
            let card: serde_json::Value = serde_json::from_str(&text)?;
            let ms = |v: &serde_json::Value| {
                v.as_u64().map_or("-".to_string(), |ms| format!("{}:{:02}", ms / 60_000, ms / 1000 % 60))
            };
            println!("hints:");
            for h in card["hints"].as_array().into_iter().flatten() {
                println!(
                    "  [{}] {:>9} {}: {}",
                    ms(&h["created_ms"]),
                    h["severity"].as_str().unwrap_or(""),
                    h["title"].as_str().unwrap_or(""),
                    h["body"].as_str().unwrap_or("")
                );
                println!("                    why: {}", h["reason"].as_str().unwrap_or(""));
            }
            println!("checklist:");
            for i in card["checklist"].as_array().into_iter().flatten() {
                println!("  {:>7}  {}", i["status"].as_str().unwrap_or(""), i["label"].as_str().unwrap_or(""));
            }
            let m = &card["metrics"];
            let ratio = m["talk_ratio"].as_f64().map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
            println!("metrics: rep talk {ratio}, longest monologue {}, longest customer story {}, questions {}, interruptions {}",
                ms(&m["longest_rep_monologue_ms"]), ms(&m["longest_customer_story_ms"]), m["rep_questions"], m["interruptions"]);
            println!("score: {} / 100", card["score"]);
            for p in card["parts"].as_array().into_iter().flatten() {
                println!(
                    "  {:<11} {:>4.0}%  {}",
                    p["name"].as_str().unwrap_or(""),
                    p["value"].as_f64().unwrap_or(0.0) * 100.0,
                    p["reason"].as_str().unwrap_or("")
                );
            }
        }
        CallsCommand::GetTranscript { config, call_id, json } => {
            let name = if json { "transcript.json" } else { "transcript.txt" };
            let r = storage(config)?;
            let id = parse_id(&call_id)?;
            let bytes = r.file(id, name).with_context(|| format!("call {call_id}: no transcript"))?;
            audit_read(&r, id, "transcript.read")?;
            print!("{}", String::from_utf8_lossy(&bytes));
        }
        CallsCommand::Hold { config, call_id, reason } => {
            let r = storage(config)?;
            let id = parse_id(&call_id)?;
            let s = r.store().clone();
            run_async(async move { s.hold(&s.find_call(id).await?, &reason, chrono::Utc::now()).await })?;
            println!(
                "call {call_id}: on legal hold (nothing of it is deleted until `earshot calls release {call_id}`)"
            );
        }
        CallsCommand::Release { config, call_id } => {
            let r = storage(config)?;
            let id = parse_id(&call_id)?;
            let s = r.store().clone();
            let was = run_async(async move { s.release(&s.find_call(id).await?).await })?;
            println!(
                "call {call_id}: {}",
                if was { "hold released; retention applies again from the next sweep" } else { "was not on hold" }
            );
        }
        CallsCommand::GetAudio { config, call_id, out } => {
            let r = storage(config)?;
            let id = parse_id(&call_id)?;
            let rec = r.audio(id)?;
            audit_read(&r, id, "recording.read")?;
            let spec = hound::WavSpec {
                channels: rec.channels,
                sample_rate: rec.sample_rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(&out, spec)?;
            for s in &rec.samples {
                w.write_sample(*s)?;
            }
            w.finalize()?;
            println!("{} ({} ms, {} ch, {} Hz)", out.display(), rec.duration_ms(), rec.channels, rec.sample_rate);
        }
    }
    Ok(())
}
