//! `earshot serve`: load the config and the Whisper models, run the server until
//! SIGTERM/SIGINT, then drain.

use std::path::PathBuf;

#[cfg(feature = "asr")]
use anyhow::Context;
use earshot::config::Config;
use earshot::server::{ServeOptions, Server};

use super::tokio_main;

pub fn run(path: PathBuf, allow_demo_secrets: bool) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    crate::init_logging(&config.log.level);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    earshot::server::check_exposure(&config, allow_demo_secrets)?;
    let metrics = earshot::metrics::Metrics::new();
    let recogniser = asr_hub(&config, &metrics)?;
    tokio_main(async move {
        let server = Server::start(
            config,
            ServeOptions {
                allow_demo_secrets,
                recogniser,
                metrics: Some(metrics),
                config_path: Some(path.clone()),
                clock: None,
            },
        )
        .await?;
        wait_for_signal().await;
        server.drain(wait_for_signal()).await;
        Ok(())
    })
}

type Recogniser =
    Option<(std::sync::Arc<dyn earshot::media::recogniser::RecogniserHub>, earshot::media::recogniser::FeedSettings)>;

#[cfg(feature = "asr")]
fn asr_hub(config: &Config, metrics: &earshot::metrics::Metrics) -> anyhow::Result<Recogniser> {
    if !config.asr.enabled {
        return Ok(None);
    }
    use earshot::asr::engine::Model;
    use earshot::asr::hub::{AsrHub, AsrSettings, TenantAsr};
    let t0 = std::time::Instant::now();
    let load = |setting: &str, key: &str| -> anyhow::Result<Model> {
        let path = config.asr.model_path_for(Some(setting));
        let hint = if path.exists() {
            String::new()
        } else {
            format!(" (fetch it: `earshot model fetch {setting} --dir {}`)", config.asr.model_dir.display())
        };
        Model::load(&path).with_context(|| format!("{key} = {setting:?}: cannot load the Whisper model{hint}"))
    };
    let mut names = vec![config.asr.model.clone()];
    let mut models = vec![std::sync::Arc::new(load(&config.asr.model, "asr.model")?)];
    let mut tenants = std::collections::HashMap::new();
    for t in &config.tenants {
        let model = match &t.asr_model {
            Some(m) => match names.iter().position(|n| n == m) {
                Some(i) => i,
                None => {
                    models.push(std::sync::Arc::new(load(m, &format!("tenants.{}.asr_model", t.id))?));
                    names.push(m.clone());
                    models.len() - 1
                }
            },
            None => 0,
        };
        let language = t.asr_language.as_deref().unwrap_or(&config.asr.language);
        anyhow::ensure!(
            language == "en" || models[model].is_multilingual(),
            "tenant {}: language {language:?} needs a multilingual model, and {:?} is English-only (try `base`)",
            t.id,
            names[model]
        );
        if model != 0 || t.asr_language.is_some() || t.asr_refine.is_some() {
            tenants.insert(t.id.clone(), TenantAsr { model, language: t.asr_language.clone(), refine: t.asr_refine });
        }
    }
    anyhow::ensure!(
        config.asr.language == "en" || models[0].is_multilingual(),
        "asr.language = {:?} needs a multilingual model, and {:?} is English-only (try `base`)",
        config.asr.language,
        config.asr.model
    );
    let workers = if config.asr.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.asr.workers
    };
    metrics.asr_model_load_seconds.set(t0.elapsed().as_secs_f64());
    tracing::info!(models = ?names, workers, load_ms = t0.elapsed().as_millis() as u64, "whisper models loaded");
    let mut settings = AsrSettings::new(workers, &config.asr.language);
    settings.policy = earshot::asr::stream_policy::PolicySettings::with_step_and_endpoint(
        config.asr.step.as_millis() as u64,
        config.asr.endpoint.as_millis() as u64,
    );
    settings.overload.max_lag_ms = config.asr.max_lag.as_millis() as u64;
    settings.tenants = tenants;
    settings.refine = config.asr.refine;
    settings.refine_beam = config.asr.refine_beam;
    if let Some(m) = &config.asr.refine_model {
        settings.refine_model = Some(match names.iter().position(|n| n == m) {
            Some(i) => i,
            None => {
                models.push(std::sync::Arc::new(load(m, "asr.refine_model")?));
                names.push(m.clone());
                models.len() - 1
            }
        });
    }
    settings.model_names = names.clone();
    let hub = AsrHub::start(
        models,
        settings,
        earshot::store::spool::StoreLayout::new(config.storage.spool_dir()),
        metrics.clone(),
    )?;
    Ok(Some((std::sync::Arc::new(hub), Default::default())))
}

#[cfg(not(feature = "asr"))]
fn asr_hub(config: &Config, _metrics: &earshot::metrics::Metrics) -> anyhow::Result<Recogniser> {
    anyhow::ensure!(!config.asr.enabled, "asr.enabled = true, but this build has no `asr` feature");
    Ok(None)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
