//! `earshot token`: mint and verify tokens for the live overlay, WHIP publishers and
//! admins.

use std::path::PathBuf;

use clap::Subcommand;
use earshot::config::Config;

use super::default_config_path;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token (JWT HS256 signed with the tenant's signing_secret); prints it.
    Issue {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// Who: a rep's id (must equal the rep id calls carry), a manager, a system.
        #[arg(long)]
        sub: String,
        /// rep, manager, admin, auditor or publisher.
        #[arg(long)]
        role: earshot::live::token::TokenRole,
        /// Lifetime, e.g. 8h, 30m, 7d.
        #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Scope the token to one call id.
        #[arg(long)]
        call: Option<String>,
    },
    /// Check a token against the config; prints its tenant and claims.
    Verify {
        #[arg(long, short)]
        config: Option<PathBuf>,
        token: String,
    },
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    use earshot::live::token;
    match command {
        TokenCommand::Issue { config, tenant, sub, role, ttl, call } => {
            let config = Config::load(&default_config_path(config))?;
            println!("{}", token::issue(&config, &tenant, &sub, role, ttl, call)?);
        }
        TokenCommand::Verify { config, token: t } => {
            let config = Config::load(&default_config_path(config))?;
            let p = token::verify(&config, &t)?;
            println!("tenant {} {}", p.tenant, serde_json::to_string(&p.claims)?);
        }
    }
    Ok(())
}
