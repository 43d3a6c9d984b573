//! `earshot transcribe`: a WAV file through the live transcription path (streamed, in
//! real time through an in-process server, or one offline decode).

use std::path::PathBuf;

use super::tokio_main;

// No doc comment on the struct: the `Transcribe` variant's comment is the command's
// help, and a struct comment would replace it.
#[derive(clap::Args)]
pub struct TranscribeArgs {
    file: PathBuf,
    /// Model name in --model-dir (tiny.en, base-q8_0, …) or a ggml file.
    #[arg(long, default_value = "tiny.en-q8_0")]
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
}

pub fn run(args: TranscribeArgs) -> anyhow::Result<()> {
    let TranscribeArgs {
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
    } = args;
    let model = earshot::config::model_path(&model, &model_dir);
    if realtime {
        use super::realtime::{Format, RealtimeOptions};
        let workers = if workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { workers };
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

fn transcribe_realtime(opts: super::realtime::RealtimeOptions, summary_only: bool) -> anyhow::Result<()> {
    use super::realtime;
    crate::init_logging("warn");
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

fn transcribe(file: PathBuf, model: PathBuf, language: String, offline: bool) -> anyhow::Result<()> {
    crate::init_logging("warn");
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
