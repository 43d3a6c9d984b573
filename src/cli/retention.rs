//! `earshot retention`: what a sweep would delete, and running one.

use std::path::PathBuf;

use clap::Subcommand;
use earshot::config::Config;

use super::{default_config_path, parse_at, run_async};

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// What a sweep at a given time would delete (nothing is deleted).
    Plan {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// RFC 3339 time or a date (YYYY-MM-DD, midnight UTC); default now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Run a retention sweep now.
    Sweep {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub fn run(cmd: RetentionCommand) -> anyhow::Result<()> {
    let (config, at, dry_run) = match cmd {
        RetentionCommand::Plan { config, at } => (config, at.as_deref().map(parse_at).transpose()?, true),
        RetentionCommand::Sweep { config } => (config, None, false),
    };
    let c = Config::load(&default_config_path(config))?;
    let store = earshot::store::objects::Store::open(&c.storage)?;
    let policies = c.retention_policies();
    let now = at.unwrap_or_else(chrono::Utc::now);
    let opts = earshot::store::objects::SweepOptions { dry_run, ..Default::default() };
    let (plan, report) = run_async(async move {
        earshot::store::objects::sweep(&store, &policies, now, &opts, &mut Default::default()).await
    })?;
    for a in &plan.actions {
        let what = if a.whole_call { "whole call".to_string() } else { a.delete.join(", ") };
        println!(
            "{} {} {}: {what} ({} bytes, due since {})",
            if dry_run { "would delete" } else { "deleted" },
            a.tenant,
            a.call_id,
            a.bytes,
            a.due_since.to_rfc3339()
        );
    }
    for t in c.tenants.iter().filter(|t| t.retention_days.is_none()) {
        println!("tenant {}: no retention_days, nothing of it is deleted", t.id);
    }
    println!(
        "{} at {}: {} call(s) with something due, {} kept by legal hold, {} unreadable{}",
        if dry_run { "plan" } else { "sweep" },
        now.to_rfc3339(),
        plan.actions.len(),
        report.held,
        report.unreadable,
        if dry_run {
            String::new()
        } else {
            format!(
                "; deleted {} objects, {} bytes, {} errors",
                report.objects_deleted, report.bytes_deleted, report.errors
            )
        }
    );
    anyhow::ensure!(report.errors == 0, "{} deletion(s) failed", report.errors);
    Ok(())
}
