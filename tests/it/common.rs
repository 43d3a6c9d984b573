//! Test harness: the real `earshot` binary on 127.0.0.1 with a random port and a
//! private storage directory, generated speech, and helpers to read results back
//! through the library's store reader (never by opening recordings directly).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use earshot::call::CallId;
use earshot::store::manifest::Manifest;
use earshot::store::spool::{Recording, StoreReader};
use earshot_loadtest::audio::Audio;

pub const SECRET: &str = "it-secret-0123456789abcdef";
pub const TENANT: &str = "acme";

/// Fails the test with a clear message when a real part is missing (never skips).
pub fn require_tool(tool: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success());
    assert!(
        matches!(found, Ok(true)),
        "`{tool}` is required for this test (install the test dependencies: scripts/install-test-deps.sh)"
    );
}

pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    env: Vec<(String, String)>,
    pub log: Arc<Mutex<String>>,
    /// Size of a private tmpfs mounted over the storage directory (disk-full tests).
    tmpfs: Option<String>,
}

fn base_config(data: &Path) -> String {
    format!(
        r#"
[http]
listen = "127.0.0.1:0"

[storage]
dir = "{}"

[recorder]
checkpoint_interval = "250ms"

[media]
idle_timeout = "3s"

[shutdown]
drain_timeout = "2s"

[[tenants]]
id = "{TENANT}"
name = "Acme Sales"
fork_secret = "{SECRET}"
rep_track = "inbound"

[[tenants]]
id = "norec"
fork_secret = "{SECRET}"
recording = false
"#,
        data.display()
    )
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with("", &[])
    }

    /// `extra` TOML is appended to the base config; `env` adds EARSHOT__ overrides.
    pub fn start_with(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("earshot.toml");
        std::fs::write(&config_path, format!("{}\n{extra}", base_config(&dir.path().join("data")))).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = TestServer {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            config_path,
            env,
            log: Arc::new(Mutex::new(String::new())),
            tmpfs: None,
        };
        s.spawn();
        s
    }

    /// The server runs in its own mount namespace with a `size` tmpfs (e.g. "1m") as its
    /// storage directory, so a test can fill the disk without touching the machine.
    /// Needs root (CI runs as root). Read its files through `data_dir()`.
    pub fn start_on_small_disk(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("earshot.toml");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(&config_path, base_config(&dir.path().join("data"))).unwrap();
        let mut s = TestServer {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            config_path,
            env: Vec::new(),
            log: Arc::new(Mutex::new(String::new())),
            tmpfs: Some(size.to_string()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.tmpfs {
            None => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_earshot"));
                c.arg("serve").arg("--config").arg(&self.config_path);
                c
            }
            Some(size) => {
                require_tool("unshare");
                let script = format!(
                    "mount --make-rprivate / && mount -t tmpfs -o size={size} earshot-test {} && exec {} serve --config {}",
                    self.data_dir_outside().display(),
                    env!("CARGO_BIN_EXE_earshot"),
                    self.config_path.display()
                );
                let mut c = Command::new("unshare");
                c.args(["-m", "sh", "-c", &script]);
                c
            }
        };
        cmd.env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn earshot");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http").nth(1) {
                    let addr = rest.trim_start_matches('s').trim_start_matches("://").trim().to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", self.log.lock().unwrap());
            }
        };
        self.addr = addr.parse().unwrap_or_else(|_| panic!("bad listen line {addr:?}"));
        self.child = Some(child);
    }

    pub fn ws(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn data_dir_outside(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The storage directory as the server sees it (through its mount namespace when
    /// it runs on a private tmpfs).
    pub fn data_dir(&self) -> PathBuf {
        match (&self.tmpfs, &self.child) {
            (Some(_), Some(c)) => {
                PathBuf::from(format!("/proc/{}/root", c.id())).join(self.data_dir_outside().strip_prefix("/").unwrap())
            }
            _ => self.data_dir_outside(),
        }
    }

    /// The server's store (local or S3, as its config says), through the library reader.
    pub fn store(&self) -> StoreReader {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let mut c = earshot::config::Config::from_toml_with_env(&text, &self.config_path, self.env.clone())
            .expect("test config");
        if self.tmpfs.is_some() {
            c.storage.dir = self.data_dir();
        }
        StoreReader::open(&c.storage).expect("store")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return (st, t0.elapsed());
            }
            assert!(t0.elapsed() < limit, "server did not exit within {limit:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log shows `needle` within `limit` (a reader thread copies the
    /// server's output, so a line can trail the response that followed it).
    pub fn log_shows(&self, needle: &str, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.http_get("/metrics");
        assert_eq!(code, 200);
        body
    }

    /// Every stored call of `tenant` with its manifest.
    pub fn manifests(&self, tenant: &str) -> Vec<Manifest> {
        let store = self.store();
        // A call whose directory exists but whose first manifest is not written yet is skipped.
        store.list_calls(tenant).into_iter().filter_map(|id| store.manifest(id).ok()).collect()
    }

    /// Waits until the call with this campaign has a final manifest.
    pub fn wait_call(&self, tenant: &str, campaign: &str, limit: Duration) -> Manifest {
        let t0 = Instant::now();
        loop {
            if let Some(m) = self.manifests(tenant).into_iter().find(|m| m.campaign.as_deref() == Some(campaign)) {
                if m.outcome.is_some() {
                    return m;
                }
            }
            assert!(t0.elapsed() < limit, "no finished call for campaign {campaign}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn audio(&self, id: CallId) -> Recording {
        self.store().audio(id).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Minimal HTTP/1.0 GET against loopback.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// Sum of a metric's series whose label text contains every `must`.
pub fn metric(text: &str, name: &str, must: &[&str]) -> f64 {
    earshot_loadtest::load::metric_sum(text, name, must)
}

/// Waits until the server at `addr` reports `name` (summed over series matching `must`)
/// at `at_least` or more: what a test waits for instead of a fixed sleep.
pub fn wait_metric(addr: SocketAddr, name: &str, must: &[&str], at_least: f64, limit: Duration) -> f64 {
    let t0 = Instant::now();
    loop {
        let (_, text) = http_get(addr, "/metrics");
        let v = metric(&text, name, must);
        if v >= at_least {
            return v;
        }
        assert!(t0.elapsed() < limit, "{name}{must:?} stayed at {v} < {at_least} for {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn speech_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("earshot-it-speech-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Synthesised speech (espeak-ng, resampled by sox) at `rate`, peak-normalised to -6 dBFS.
pub fn speech(voice: &str, text: &str, rate: u32) -> Vec<i16> {
    require_tool("espeak-ng");
    require_tool("sox");
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (voice, text, rate).hash(&mut h);
        format!("{:x}", h.finish())
    };
    let raw = speech_dir().join(format!("{key}-{}.raw.wav", voice.replace('+', "_")));
    let out = speech_dir().join(format!("{key}-{}-{rate}.wav", voice.replace('+', "_")));
    let st = Command::new("espeak-ng").args(["-v", voice, "-s", "170", "-w"]).arg(&raw).arg(text).status().unwrap();
    assert!(st.success(), "espeak-ng failed");
    let st = Command::new("sox")
        .arg(&raw)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["gain", "-n", "-6"])
        .status()
        .unwrap();
    assert!(st.success(), "sox failed");
    Audio::load_wav(&out).unwrap().channels.remove(0)
}

/// A two-party call at `rate`: rep speaks, then customer, with a full-scale 50 ms
/// marker burst at `marker_s` on both channels. Returns (audio, marker sample index).
pub fn two_party_call(rate: u32, marker_s: f64) -> (Audio, usize) {
    let rep = speech("en-us", "Hello, this is Alex from Acme. This call is recorded.", rate);
    let cust = speech("en-gb+f3", "Hi Alex, we already use Globex.", rate);
    let gap = rate as usize / 4;
    let total = rep.len() + cust.len() + 3 * gap;
    let mut left = vec![0i16; total];
    let mut right = vec![0i16; total];
    left[..rep.len()].copy_from_slice(&rep);
    right[rep.len() + gap..rep.len() + gap + cust.len()].copy_from_slice(&cust);
    let marker = (marker_s * rate as f64) as usize;
    for ch in [&mut left, &mut right] {
        for (i, s) in ch[marker..marker + rate as usize / 20].iter_mut().enumerate() {
            *s = if (i / 4) % 2 == 0 { 32000 } else { -32000 };
        }
    }
    (Audio { sample_rate: rate, channels: vec![left, right] }, marker)
}

/// First sample index at or after `from` whose magnitude exceeds `thresh`.
pub fn onset(samples: &[i16], from: usize, thresh: i16) -> Option<usize> {
    samples.iter().skip(from).position(|s| s.unsigned_abs() > thresh as u16).map(|p| p + from)
}

/// Lower-case words without punctuation (for comparing transcripts).
pub fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Word errors (substitutions, insertions, deletions) between two word lists.
pub fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut d: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut prev = d[0];
        d[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let cur = (d[j + 1] + 1).min(d[j] + 1).min(prev + usize::from(r != h));
            prev = d[j + 1];
            d[j + 1] = cur;
        }
    }
    d[hypothesis.len()]
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
