//! The recogniser seam: a registered hub gets 16 kHz per-channel rings that carry the
//! call's audio; a slow consumer loses the oldest audio (counted), never the recording.
//! The consumer here is a test reader of the rings, standing beside the real fork tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use earshot::call::CallInfo;
use earshot::config::Config;
use earshot::media::recogniser::{FeedSettings, RecogniserHub};
use earshot::media::recogniser_feed::{FeedDrops, RecogniserTap};
use earshot::server::{ServeOptions, Server};
use earshot_loadtest::{twilio, ws};

use crate::common::*;

/// Reads every tap on its own thread, every `poll`; collects what it got per channel.
struct CollectingHub {
    poll: Duration,
    got: Arc<Mutex<Vec<Vec<f32>>>>,
    /// Told when every tap has finished and been read to its end.
    done: std::sync::mpsc::SyncSender<()>,
}

impl RecogniserHub for CollectingHub {
    fn attach(
        &self,
        _call: &CallInfo,
        taps: Vec<RecogniserTap>,
        _drops: Arc<FeedDrops>,
        _owner: earshot::call::owner::CallHandle,
    ) {
        let poll = self.poll;
        let got = self.got.clone();
        let done = self.done.clone();
        got.lock().unwrap().resize(taps.len(), Vec::new());
        std::thread::spawn(move || {
            let mut taps = taps;
            loop {
                std::thread::sleep(poll);
                for (ch, tap) in taps.iter_mut().enumerate() {
                    let mut buf = Vec::new();
                    tap.read(&mut buf);
                    got.lock().unwrap()[ch].extend(buf);
                }
                if taps.iter().all(|t| t.is_finished()) {
                    let _ = done.send(());
                    return;
                }
            }
        });
    }
}

fn run(
    poll: Duration,
    settings: FeedSettings,
) -> (Vec<Vec<f32>>, String, usize, earshot_loadtest::audio::Audio, usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[[tenants]]\nid = \"{TENANT}\"\nfork_secret = \"{SECRET}\"\n",
        dir.path().join("data").display()
    );
    let config = Config::from_toml_with_env(&text, &dir.path().join("c.toml"), std::iter::empty()).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (done, finished) = std::sync::mpsc::sync_channel(1);
    let hub: Arc<dyn RecogniserHub> = Arc::new(CollectingHub { poll, got: got.clone(), done });
    let (audio, marker) = two_party_call(8000, 2.0);
    let mut params = std::collections::BTreeMap::new();
    params.insert("token".to_string(), SECRET.to_string());
    params.insert("campaign".to_string(), "asr".to_string());
    let script =
        twilio::render(&audio, &twilio::TwilioOptions { custom_parameters: params, ..Default::default() }).unwrap();
    let (metrics, frames) = rt().block_on(async {
        let server = Server::start(config, ServeOptions { recogniser: Some((hub, settings)), ..Default::default() })
            .await
            .unwrap();
        let mut c = ws::connect(&format!("ws://{}/fork/twilio/{TENANT}", server.local_addr), &[], None).await.unwrap();
        twilio::send(&mut c, &script, 4.0).await.unwrap();
        // The call's end closes the taps; the collector says when it has read them out, and
        // the recording is final once the call counts as ended.
        tokio::task::spawn_blocking(move || finished.recv_timeout(Duration::from_secs(30)).expect("taps finished"))
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        while crate::common::metric(&server.app.health.metrics.render(), "earshot_calls_ended_total", &[]) < 1.0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the call never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = server.app.health.metrics.render();
        let store = earshot::store::spool::StoreReader::new(dir.path().join("data"));
        let id = store.list_calls(TENANT)[0];
        let frames = store.audio(id).unwrap().frames();
        server.drain(std::future::pending()).await;
        (metrics, frames)
    });
    let got = got.lock().unwrap().clone();
    (got, metrics, frames, audio, marker)
}

#[test]
fn recogniser_gets_each_channel_at_16khz_in_step_with_the_call() {
    let (got, metrics, frames, audio, marker) = run(Duration::from_millis(50), FeedSettings::default());
    assert_eq!(got.len(), 2);
    let sent_16k = audio.frames() * 2;
    for (ch, samples) in got.iter().enumerate() {
        // The resampler holds back a few ms at the end.
        assert!(
            samples.len() + 400 >= sent_16k && samples.len() <= sent_16k + 320,
            "ch {ch}: {} vs {sent_16k}",
            samples.len()
        );
        // The marker burst is where it was sent, at twice the sample index.
        let at = samples.iter().skip(marker * 2 - 200).position(|s| s.abs() > 0.8).unwrap() + marker * 2 - 200;
        assert!(at.abs_diff(marker * 2) <= 40, "ch {ch}: marker at {at}, sent at {}", marker * 2);
    }
    assert_eq!(metric(&metrics, "earshot_recogniser_dropped_seconds_total", &[]), 0.0);
    assert_eq!(frames, audio.frames().div_ceil(160) * 160);
}

#[test]
fn slow_recogniser_loses_oldest_audio_counted_and_the_recording_is_complete() {
    // Reads only every 2 s while the ring keeps 1 s: it must skip, and say so.
    let settings = FeedSettings { ring_seconds: 3.0, max_lag_seconds: 1.0 };
    let (got, metrics, frames, audio, _) = run(Duration::from_millis(2000), settings);
    let dropped = metric(&metrics, "earshot_recogniser_dropped_seconds_total", &["reason=\"behind\""]);
    assert!(dropped > 0.5, "dropped {dropped} s");
    let received: usize = got.iter().map(Vec::len).sum();
    let sent_16k = audio.frames() * 2 * 2;
    let accounted = received as f64 / 16000.0
        + dropped
        + metric(&metrics, "earshot_recogniser_dropped_seconds_total", &["reason=\"ring_full\""]);
    assert!(
        (accounted - sent_16k as f64 / 16000.0).abs() < 0.2,
        "received {received} + dropped {dropped}s vs sent {sent_16k}"
    );
    assert_eq!(frames, audio.frames().div_ceil(160) * 160, "the recording never loses audio");
}
