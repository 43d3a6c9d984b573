//! `earshot config`: validate a config file without starting the server.

use std::path::PathBuf;

use clap::Subcommand;
use earshot::config::Config;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (and EARSHOT__* overrides) without starting.
    Check { file: Option<PathBuf> },
}

pub fn check(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    for t in &config.tenants {
        if let Some(p) = &t.playbook {
            earshot::coach::playbooks::load_playbook(p)?;
        }
    }
    println!(
        "{}: OK ({} tenant(s), listen {}, storage {})",
        path.display(),
        config.tenants.len(),
        config.http.listen,
        config.storage.dir.display()
    );
    for t in config.demo_secret_tenants() {
        println!("warning: tenant {t:?} uses the demo fork secret");
    }
    Ok(())
}
