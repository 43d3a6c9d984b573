//! Storage benchmarks (BENCHMARKS.md):
//!
//! * `encrypt`: the object encryptor alone, MB/s on one core.
//! * `upload`: a one-hour two-channel 8 kHz recording (115 MB, what a Twilio call-hour
//!   records) encrypted and uploaded by the same code the uploader runs; MB/s, and CPU
//!   seconds per call-hour (process user+system time). `--endpoint URL` uploads to an
//!   S3-compatible server (bucket `earshot-bench` must exist), else the local backend.
//! * `sweep`: a retention sweep over N stored calls (manifest + audio objects each), a
//!   tenth of them due: the first sweep (every candidate's manifest decrypted) and a
//!   dry-run plan afterwards (campaigns cached, as a server's periodic sweeps are).
//!
//! * `privacy`: N stored calls (default 100,000), one subject on 1,000 of them with
//!   `--seconds` of 8 kHz stereo audio each (default 20): time and size of that subject's
//!   export (ZIP, decrypted), and erasure time for a subject of 10 calls and for the
//!   1,000-call subject — found through the keyed subject index, not by scanning.
//!
//! cargo run --release --example bench_storage -- encrypt
//! cargo run --release --example bench_storage -- upload [--endpoint http://127.0.0.1:9000]
//! cargo run --release --example bench_storage -- sweep --calls 100000

use std::time::Instant;

use chrono::{Duration, Utc};
use earshot::call::CallId;
use earshot::config::{S3Config, StorageBackend, StorageConfig};
use earshot::store::crypt::{Encryptor, Key, DEFAULT_CHUNK};
use earshot::store::objects::{sweep, CallRef, Store, SweepCache, SweepOptions};
use earshot::store::retention::{Policies, TenantPolicy};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc/self/stat (fields 14 and 15, in ticks).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn store(dir: &std::path::Path) -> Store {
    let mut cfg = StorageConfig { dir: dir.join("data"), ..StorageConfig::default() };
    if let Some(endpoint) = arg("--endpoint") {
        cfg.backend = StorageBackend::S3;
        cfg.s3 = Some(S3Config {
            bucket: "earshot-bench".into(),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            access_key_id: Some("bench".into()),
            secret_access_key: Some("bench-secret".into()),
            virtual_hosted: false,
            allow_http: true,
        });
    }
    let s = Store::open(&cfg).unwrap();
    s.keys().ensure_tenants(["bench"]).unwrap();
    s
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    match mode.as_str() {
        "encrypt" => {
            let data = vec![0x5au8; 256 << 20];
            let kek = Key::random();
            let t0 = Instant::now();
            let (mut e, mut out) = Encryptor::new(&kek, 1, "bench/x", DEFAULT_CHUNK);
            out.reserve(data.len() + data.len() / 4096);
            for piece in data.chunks(1 << 20) {
                e.push(piece, &mut out);
            }
            e.finish(&mut out);
            let s = t0.elapsed().as_secs_f64();
            println!("encrypt: {} MB in {:.3} s = {:.0} MB/s (one core)", data.len() >> 20, s, data.len() as f64 / 1e6 / s);
        }
        "upload" => {
            let s = store(dir.path());
            // One call-hour: 8 kHz, 2 channels, 16-bit = 115.2 MB of samples.
            let path = dir.path().join("hour.wav");
            let spec = hound::WavSpec { channels: 2, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            let mut x: u32 = 1;
            for _ in 0..(8000 * 3600 * 2) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                w.write_sample((x >> 20) as i16 - 2048).unwrap();
            }
            w.finalize().unwrap();
            let bytes = std::fs::metadata(&path).unwrap().len();
            for round in 0..3 {
                let call = CallRef { tenant: "bench".into(), call_id: CallId::new_at(Utc::now()) };
                let (c0, t0) = (cpu_seconds(), Instant::now());
                let stored = rt.block_on(s.put_encrypted_file("bench", &call.object("audio.wav"), &path)).unwrap();
                let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
                println!(
                    "upload round {round} ({}): {:.1} MB in {:.2} s = {:.0} MB/s; CPU {:.2} s per call-hour ({:.3} % of one core over the hour); stored {:.1} MB",
                    s.describe(),
                    bytes as f64 / 1e6,
                    secs,
                    bytes as f64 / 1e6 / secs,
                    cpu,
                    cpu / 3600.0 * 100.0,
                    stored as f64 / 1e6
                );
                let t1 = Instant::now();
                let back = rt.block_on(s.get(&call, "audio.wav")).unwrap();
                assert_eq!(back.len() as u64, bytes);
                println!("  read back + decrypt: {:.0} MB/s", bytes as f64 / 1e6 / t1.elapsed().as_secs_f64());
            }
        }
        "sweep" => {
            let n: usize = arg("--calls").and_then(|v| v.parse().ok()).unwrap_or(100_000);
            let s = store(dir.path());
            let now = Utc::now();
            let t0 = Instant::now();
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..n {
                    // 10 % older than the 30-day plan, the rest spread over the last 29 days.
                    let age = if i % 10 == 0 { Duration::days(31) } else { Duration::minutes((i % (29 * 24 * 60)) as i64) };
                    let call = CallRef { tenant: "bench".into(), call_id: CallId::new_at(now - age) };
                    let s = s.clone();
                    tasks.spawn(async move {
                        s.put_encrypted("bench", &call.object("manifest.json"), br#"{"campaign":"outbound"}"#).await.unwrap();
                        s.put_encrypted("bench", &call.object("audio.wav"), b"audio").await.unwrap();
                    });
                    while tasks.len() > 64 {
                        tasks.join_next().await;
                    }
                }
                while tasks.join_next().await.is_some() {}
            });
            println!("sweep: stored {n} calls ({} objects) in {:.1} s", 2 * n, t0.elapsed().as_secs_f64());
            let policies = Policies::from([("bench".to_string(), TenantPolicy::days(30))]);
            let mut cache = SweepCache::default();
            let dry = SweepOptions { dry_run: true, ..SweepOptions::default() };
            let t1 = Instant::now();
            let (plan, _) = rt.block_on(sweep(&s, &policies, now, &dry, &mut cache)).unwrap();
            println!("sweep: first plan over {n} calls: {} due, {:.2} s (lists all, decrypts the due calls' manifests)", plan.actions.len(), t1.elapsed().as_secs_f64());
            let t2 = Instant::now();
            let (_, report) = rt.block_on(sweep(&s, &policies, now, &SweepOptions::default(), &mut cache)).unwrap();
            println!(
                "sweep: deleting {} calls ({} objects): {:.2} s",
                report.calls_deleted,
                report.objects_deleted,
                t2.elapsed().as_secs_f64()
            );
            let t3 = Instant::now();
            let (plan, _) = rt.block_on(sweep(&s, &policies, now, &dry, &mut cache)).unwrap();
            println!("sweep: steady-state sweep over {} calls, nothing due: {:.2} s", n - report.calls_deleted, t3.elapsed().as_secs_f64());
            assert!(plan.actions.is_empty());
        }
        "privacy" => {
            let n: usize = arg("--calls").and_then(|v| v.parse().ok()).unwrap_or(100_000);
            let secs: usize = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(20);
            let s = store(dir.path());
            let mut wav = Vec::new();
            {
                let spec = hound::WavSpec { channels: 2, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
                let mut w = hound::WavWriter::new(std::io::Cursor::new(&mut wav), spec).unwrap();
                let mut x: u32 = 7;
                for i in 0..(8000 * secs * 2) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // Speech-like: a tone plus noise (compresses like real audio, not like zeros).
                    let v = ((i as f64 * 0.05).sin() * 6000.0) as i32 + ((x >> 22) as i32 - 512);
                    w.write_sample(v as i16).unwrap();
                }
                w.finalize().unwrap();
            }
            let wav = std::sync::Arc::new(wav);
            let now = Utc::now();
            let t0 = Instant::now();
            let big = "+15550001000";
            let small = "+15550002000";
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..n {
                    let call = CallRef { tenant: "bench".into(), call_id: CallId::new_at(now - Duration::minutes(i as i64)) };
                    let subject = if i % (n / 1000).max(1) == 0 { Some(big) } else if i % 10_007 == 1 { Some(small) } else { None };
                    let (s, wav) = (s.clone(), wav.clone());
                    tasks.spawn(async move {
                        let manifest = format!(r#"{{"version":1,"tenant":"bench","call_id":"{}","campaign":"outbound","source":"pcm","participants":[{{"role":"customer","phone_e164":"{}"}}],"source_ids":{{}},"started_at":"{}","layout":"stereo","channels":["rep","customer"],"sample_rate":8000,"recording":true,"stats":{{"frames_received":0,"frames_reordered":0,"frames_gap_filled":0,"frames_dropped":0,"samples_gap_filled":0,"dtmf_events":0}},"dtmf":[]}}"#,
                            call.call_id, subject.unwrap_or("+15559990000"), now.to_rfc3339());
                        s.put_encrypted("bench", &call.object("manifest.json"), manifest.as_bytes()).await.unwrap();
                        if let Some(subj) = subject {
                            earshot::store::privacy::index_subject(&s, "bench", subj, call.call_id).await.unwrap();
                            if subj == big {
                                s.put_encrypted("bench", &call.object("audio.wav"), &wav).await.unwrap();
                                s.put_encrypted("bench", &call.object("transcript.json"), br#"{"segments":[{"text":"hello"}]}"#).await.unwrap();
                            }
                        }
                    });
                    while tasks.len() > 64 {
                        tasks.join_next().await;
                    }
                }
                while tasks.join_next().await.is_some() {}
            });
            let big_calls = rt.block_on(earshot::store::privacy::subject_calls(&s, "bench", big)).unwrap();
            println!("privacy: stored {n} calls ({} of the subject, {} s of audio each) in {:.1} s", big_calls.len(), secs, t0.elapsed().as_secs_f64());
            let zip = dir.path().join("export.zip");
            let t1 = Instant::now();
            let summary = rt.block_on(earshot::store::privacy::build_export(&s, "bench", &big_calls, &zip, |_, _| {})).unwrap();
            let el = t1.elapsed().as_secs_f64();
            let size = std::fs::metadata(&zip).unwrap().len();
            println!(
                "privacy: export of {} calls: {:.1} s, {} files, {:.0} MB decrypted -> ZIP {:.0} MB ({:.0} MB/s)",
                summary.calls, el, summary.files, summary.bytes as f64 / 1e6, size as f64 / 1e6, summary.bytes as f64 / 1e6 / el
            );
            let t2 = Instant::now();
            let r = rt.block_on(earshot::store::privacy::erase_subject(&s, "bench", small, Utc::now())).unwrap();
            println!("privacy: erasure of a subject with {} calls among {n}: {:.3} s", r.erased.len(), t2.elapsed().as_secs_f64());
            let t3 = Instant::now();
            let r = rt.block_on(earshot::store::privacy::erase_subject(&s, "bench", big, Utc::now())).unwrap();
            println!(
                "privacy: erasure of the subject with {} calls ({} objects, {:.0} MB): {:.2} s",
                r.erased.len(),
                r.erased.iter().map(|e| e.objects).sum::<usize>(),
                r.erased.iter().map(|e| e.bytes).sum::<u64>() as f64 / 1e6,
                t3.elapsed().as_secs_f64()
            );
        }
        _ => eprintln!("usage: bench_storage encrypt | upload [--endpoint URL] | sweep [--calls N] | privacy [--calls N] [--seconds S]"),
    }
}
