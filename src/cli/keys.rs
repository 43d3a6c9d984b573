//! `earshot keys`: the tenants' encryption keys (list versions, rotate, destroy for
//! crypto-shredding).

use std::path::PathBuf;

use clap::Subcommand;
use earshot::config::Config;

use super::{default_config_path, open_store, operator_audit, run_async};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Tenants, their active key version and the versions kept (never the keys).
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// A new key version for a tenant: new objects use it, old ones stay readable.
    /// A running server picks it up at its next upload.
    Rotate {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
    },
    /// Destroys every key of a tenant: all of its stored data, wherever copies of it
    /// are (backups included), becomes unreadable. Cannot be undone.
    Destroy {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// The tenant id again, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let open = |config: Option<PathBuf>| -> anyhow::Result<earshot::store::objects::KeyringHandle> {
        let c = Config::load(&default_config_path(config))?;
        Ok(earshot::store::objects::KeyringHandle::open(&c.storage.keyring_path(), true)?)
    };
    match cmd {
        KeysCommand::List { config } => {
            let k = open(config)?;
            let ring = k.current()?;
            println!("keyring {}", k.path().display());
            for (tenant, tk) in &ring.tenants {
                let versions: Vec<&str> = tk.keys.keys().map(String::as_str).collect();
                println!(
                    "  {tenant}: active {}, versions [{}], destroyed {:?}",
                    tk.active,
                    versions.join(", "),
                    tk.destroyed
                );
            }
        }
        KeysCommand::Rotate { config, tenant } => {
            let config_for_audit = config.clone();
            let k = open(config)?;
            let v = k.update(|r| r.rotate(&tenant))?;
            if let Ok((_, store)) = open_store(config_for_audit.clone()) {
                let t = tenant.clone();
                let _ = run_async(async move {
                    operator_audit(&store, &t, "keys.rotate", None, serde_json::json!({ "version": v })).await
                });
            }
            println!("tenant {tenant}: key version {v} is now active (older versions stay for reading)");
        }
        KeysCommand::Destroy { config, tenant, confirm } => {
            anyhow::ensure!(confirm == tenant, "--confirm must repeat the tenant id");
            let k = open(config)?;
            let n = k.update(|r| r.destroy_tenant(&tenant))?;
            println!("tenant {tenant}: {n} key version(s) destroyed; its stored data is unreadable from now on");
        }
    }
    Ok(())
}
