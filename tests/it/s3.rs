//! A real S3-compatible server for tests: `moto_server` on 127.0.0.1 (installed by
//! scripts/install-test-deps.sh into target/test-tools/motovenv).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "earshot-it";
pub const ACCESS_KEY: &str = "earshot-test-key";
pub const SECRET_KEY: &str = "earshot-test-secret-key";

fn moto_binary() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/motovenv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("sh").arg("-c").arg("command -v moto_server").output().ok().filter(|o| o.status.success());
    match found {
        Some(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        None => {
            panic!("moto_server is required for S3 tests (install the test dependencies: scripts/install-test-deps.sh)")
        }
    }
}

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free loopback port and creates the test bucket.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut m = Moto { child: None, port };
        m.restart();
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Env overrides that point an Earshot server at this store.
    pub fn server_env(&self) -> Vec<(String, String)> {
        [
            ("EARSHOT__STORAGE__BACKEND", "s3".to_string()),
            ("EARSHOT__STORAGE__S3__BUCKET", BUCKET.to_string()),
            ("EARSHOT__STORAGE__S3__ENDPOINT", self.endpoint()),
            ("EARSHOT__STORAGE__S3__ALLOW_HTTP", "true".to_string()),
            ("EARSHOT__STORAGE__S3__ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("EARSHOT__STORAGE__S3__SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("EARSHOT__STORAGE__UPLOAD_BACKOFF_MAX", "1s".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Stops the server (its data is gone with it: moto keeps everything in memory).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts on the same port and creates the bucket.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let t0 = Instant::now();
        loop {
            if let Ok(code) = request(
                addr,
                &format!(
                    "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.port
                ),
            ) {
                assert_eq!(code, 200, "create bucket");
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn request(addr: SocketAddr, req: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
}
