//! `earshot`: the server and its operator commands. This file parses the command
//! line, sets up logging and dispatches; each command group lives in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{config::ConfigCommand, default_config_path, Cli, Command};

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // rsipstack logs every SIP message whole at info, SIPREC metadata (phone
        // numbers) included: only its warnings, unless the level names it.
        let directives =
            if level.contains("rsipstack") { level.to_string() } else { format!("{level},rsipstack=warn") };
        tracing_subscriber::EnvFilter::new(directives)
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, allow_demo_secrets } => {
            cli::serve::run(default_config_path(config), allow_demo_secrets)
        }
        Command::Config { command: ConfigCommand::Check { file } } => cli::config::check(default_config_path(file)),
        Command::Replay(args) => {
            init_logging("info");
            cli::tokio_main(async move { earshot_loadtest::cli::replay(args).await })
        }
        Command::Calls { command } => cli::calls::run(command),
        Command::Token { command } => cli::token::run(command),
        Command::Keys { command } => cli::keys::run(command),
        Command::Retention { command } => cli::retention::run(command),
        Command::Erase { config, tenant, subject } => cli::privacy::erase(config, tenant, subject),
        Command::Export { config, tenant, subject, out } => cli::privacy::export(config, tenant, subject, out),
        Command::Hold { config, call_id, reason, release } => cli::privacy::hold(config, call_id, reason, release),
        Command::Audit { config, tenant, since, action } => cli::privacy::audit_log(config, tenant, since, action),
        Command::Model { command } => cli::model::run(command),
        #[cfg(feature = "asr")]
        Command::Transcribe(args) => cli::transcribe::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("earshot: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: many errors already show their cause's text
/// (`path: No such file or directory`), so a cause already in the message is skipped.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
