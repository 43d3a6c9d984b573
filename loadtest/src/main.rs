//! `earshot-loadtest`: drive Earshot with synthetic calls.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use earshot_loadtest::{cli, load};

#[derive(Parser)]
#[command(name = "earshot-loadtest", version, about = "Load generator for Earshot")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N concurrent calls at real-time pace; prints progress, writes JSON + Markdown.
    Run(load::RunArgs),
    /// Stream one WAV as a fork (same as `earshot replay`).
    Replay(cli::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let res = rt.block_on(async {
        match cli.command {
            Command::Replay(a) => cli::replay(a).await.map(|_| true),
            Command::Run(a) => {
                let r = load::run(a).await?;
                println!("{}", load::summary(&r));
                if let Some(slo) = &r.slo {
                    for m in &slo.missed {
                        eprintln!("SLO missed: {m}");
                    }
                }
                Ok(r.slo.as_ref().is_none_or(|s| s.passed))
            }
        }
    });
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("earshot-loadtest: SLO missed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("earshot-loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
