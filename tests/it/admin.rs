//! The admin API against the real server in process (injected clock) and real stores:
//! erasure by subject, holds, exports with signed 24-hour links, the audit log, tenant
//! deletion with grace and crypto-shredding, and every route refusing other tenants and
//! wrong roles (table-driven over the OpenAPI document).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot::call::CallId;
use earshot::config::Config;
use earshot::live::token;
use earshot::live::token::TokenRole;
use earshot::server::{ServeOptions, Server};
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, ws};
use serde_json::Value;

use crate::common::*;
use crate::s3::Moto;

const SIGNING: &str = "admin-test-signing-secret-0123456789abcdef";
const OTHER_SIGNING: &str = "admin-test-other-signing-secret-0123456789";

struct Env {
    rt: tokio::runtime::Runtime,
    server: Option<Server>,
    addr: SocketAddr,
    config: Config,
    /// Seconds added to the real clock.
    offset: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    _moto: Option<Moto>,
}

fn start(s3: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let moto = s3.then(Moto::start);
    let storage = match &moto {
        None => String::new(),
        Some(m) => format!(
            "backend = \"s3\"\n[storage.s3]\nbucket = \"{}\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            crate::s3::BUCKET,
            m.endpoint(),
            crate::s3::ACCESS_KEY,
            crate::s3::SECRET_KEY
        ),
    };
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\nkeyring = \"{}\"\nsweep_interval = \"1s\"\n{storage}\n\
         [[tenants]]\nid = \"{TENANT}\"\nfork_secret = \"{SECRET}\"\nsigning_secret = \"{SIGNING}\"\nretention_days = 30\n\
         [[tenants]]\nid = \"other\"\nfork_secret = \"{SECRET}\"\nsigning_secret = \"{OTHER_SIGNING}\"\n",
        data.display(),
        dir.path().join("keys/keyring.toml").display()
    );
    let config = Config::from_toml_with_env(&text, &dir.path().join("c.toml"), std::iter::empty()).unwrap();
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let clock: earshot::clock::Clock =
        Arc::new(move || chrono::Utc::now() + chrono::Duration::seconds(o.load(Ordering::Relaxed)));
    let rt = rt();
    let server =
        rt.block_on(Server::start(config.clone(), ServeOptions { clock: Some(clock), ..Default::default() })).unwrap();
    let addr = server.local_addr;
    Env { rt, server: Some(server), addr, config, offset, _dir: dir, data, _moto: moto }
}

impl Env {
    fn tok(&self, tenant: &str, sub: &str, role: TokenRole) -> String {
        token::issue(&self.config, tenant, sub, role, Duration::from_secs(3 * 86_400 * 10), None).unwrap()
    }

    fn admin(&self) -> String {
        self.tok(TENANT, "root", TokenRole::Admin)
    }

    /// (status, headers, body) of a request.
    fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("http://{}{path}", self.addr);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let resp = match body {
            Some(v) => agent.run(b.header("content-type", "application/json").body(v.to_string()).unwrap()),
            None => agent.run(b.body(()).unwrap()),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let headers =
            resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
        let mut out = Vec::new();
        resp.into_body().into_reader().read_to_end(&mut out).unwrap();
        (status, headers, out)
    }

    fn json(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let (s, _, b) = self.req(method, path, Some(token), body, &[]);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// A two-channel call from `phone` handled by `rep`; waits until it is in the store.
    fn call(&self, tenant: &str, phone: &str, rep: &str, campaign: &str) -> CallId {
        let t: Vec<i16> = (0..16000).map(|i| ((i as f64 * 0.3).sin() * 9000.0) as i16).collect();
        let audio = Audio { sample_rate: 16000, channels: vec![t.clone(), t] };
        let script = pcm::render(&audio, serde_json::json!({"campaign": campaign, "rep": rep, "from": phone}));
        let addr = self.addr;
        let tenant2 = tenant.to_string();
        self.rt.block_on(async move {
            let url = format!("ws://{addr}/fork/pcm/{tenant2}");
            let mut conn =
                ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
            pcm::send(&mut conn, &script, 8.0).await.unwrap()
        });
        let server = self.server.as_ref().unwrap();
        let t0 = Instant::now();
        loop {
            let store = server.app.records.store.clone();
            let (t, c) = (tenant.to_string(), campaign.to_string());
            let found = self.rt.block_on(async move {
                for id in store.list_calls(&t).await.unwrap_or_default() {
                    let call = earshot::store::objects::CallRef { tenant: t.clone(), call_id: id };
                    let uploaded = !store.spool().call_dir(&t, id).exists();
                    if uploaded && store.manifest(&call).await.is_ok_and(|m| m.campaign.as_deref() == Some(c.as_str()))
                    {
                        return Some(id);
                    }
                }
                None
            });
            if let Some(id) = found {
                return id;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "call {campaign} not stored");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every stored object's path and raw bytes, plus every local file under the data dir.
    fn everything(&self) -> Vec<(String, Vec<u8>)> {
        let store = self.server.as_ref().unwrap().app.records.store.clone();
        let mut out: Vec<(String, Vec<u8>)> = self.rt.block_on(async move {
            let mut v = Vec::new();
            for (p, _) in store.list_all().await.unwrap() {
                v.push((p.to_string(), store.raw(&p).await.unwrap()));
            }
            v
        });
        let mut stack = vec![self.data.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.drain(async {}));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn erasure_holds_exports_and_audit_over_s3() {
    let env = start(true);
    let admin = env.admin();
    let a = env.call(TENANT, "+15550001111", "alice", "a");
    let b = env.call(TENANT, "+15550001111", "bob", "b");
    let c = env.call(TENANT, "+15559998888", "alice", "c");
    // Listing and filters; a rep sees its own calls only.
    let (s, v) = env.json("GET", "/v1/calls", &admin, None);
    assert_eq!((s, v["calls"].as_array().unwrap().len()), (200, 3), "{v}");
    let (_, v) = env.json("GET", "/v1/calls?participant=%2B1%20555%20000%201111", &admin, None);
    assert_eq!(v["calls"].as_array().unwrap().len(), 2, "{v}");
    let alice = env.tok(TENANT, "alice", TokenRole::Rep);
    let (_, v) = env.json("GET", "/v1/calls", &alice, None);
    let ids: Vec<&str> = v["calls"].as_array().unwrap().iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&b.to_string().as_str()));
    let (_, v) = env.json("GET", "/v1/calls?limit=2", &admin, None);
    let (_, v2) =
        env.json("GET", &format!("/v1/calls?limit=2&cursor={}", v["next_cursor"].as_str().unwrap()), &admin, None);
    assert_eq!(v2["calls"].as_array().unwrap().len(), 1);
    // The recording, decrypted, whole and by range.
    let (s, _, whole) = env.req("GET", &format!("/v1/calls/{c}/recording"), Some(&admin), None, &[]);
    assert_eq!(s, 200);
    assert!(whole.starts_with(b"RIFF"));
    let (s, h, part) =
        env.req("GET", &format!("/v1/calls/{c}/recording"), Some(&admin), None, &[("range", "bytes=1000-1999")]);
    assert_eq!(s, 206);
    assert_eq!(part, whole[1000..2000]);
    assert!(h.iter().any(|(k, v)| k == "content-range" && v == &format!("bytes 1000-1999/{}", whole.len())), "{h:?}");
    let (s, _, _) =
        env.req("GET", &format!("/v1/calls/{c}/recording"), Some(&admin), None, &[("range", "bytes=999999999-")]);
    assert_eq!(s, 416);
    // Erasure by subject: B is held, so it waits; A goes now.
    let (s, _) =
        env.json("PUT", &format!("/v1/calls/{b}/hold"), &admin, Some(serde_json::json!({"reason": "dispute 17"})));
    assert_eq!(s, 200);
    let (s, _) = env.json("DELETE", &format!("/v1/calls/{b}"), &admin, None);
    assert_eq!(s, 409, "a held call cannot be deleted");
    let (s, receipt) =
        env.json("POST", "/v1/erasure", &admin, Some(serde_json::json!({"subject": "+1 (555) 000-1111"})));
    assert_eq!(s, 200, "{receipt}");
    assert_eq!(
        receipt["erased"].as_array().unwrap().iter().map(|e| e["call_id"].as_str().unwrap()).collect::<Vec<_>>(),
        vec![a.to_string()]
    );
    assert!(receipt["erased"][0]["objects"].as_u64().unwrap() >= 3, "{receipt}");
    assert_eq!(receipt["held"], serde_json::json!([b.to_string()]));
    assert_eq!(env.json("GET", &format!("/v1/calls/{a}"), &admin, None).0, 404);
    assert_eq!(env.json("GET", &format!("/v1/calls/{b}"), &admin, None).0, 200, "held: kept for now");
    // Released: the pending erasure runs.
    let (s, v) = env.json("DELETE", &format!("/v1/calls/{b}/hold"), &admin, None);
    assert_eq!(s, 200);
    assert_eq!(v["erased"]["call_id"], b.to_string(), "{v}");
    assert_eq!(env.json("GET", &format!("/v1/calls/{b}"), &admin, None).0, 404);
    // No trace of A or B anywhere: not their ids, not the subject's number.
    for (path, bytes) in env.everything() {
        for needle in [a.to_string(), b.to_string(), "5550001111".into(), "555 000 1111".into()] {
            assert!(!path.contains(&needle) && !contains(&bytes, needle.as_bytes()), "{path} holds {needle}");
        }
    }
    // Export of the other subject: exactly C, decrypted, with a README.
    let (s, v) = env.json("POST", "/v1/exports", &admin, Some(serde_json::json!({"subject": "+15559998888"})));
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let mut url = String::new();
    wait_for(Duration::from_secs(20), || {
        let (_, v) = env.json("GET", &format!("/v1/exports/{id}"), &admin, None);
        if v["state"] == "done" {
            url = v["download_url"].as_str().unwrap().to_string();
        }
        !url.is_empty()
    });
    let (s, h, zip_bytes) = env.req("GET", &url, None, None, &[]);
    assert_eq!(s, 200);
    assert!(h.iter().any(|(k, v)| k == "content-type" && v == "application/zip"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    assert!(
        names.contains(&"README.txt".to_string())
            && names.contains(&format!("{c}/audio.wav"))
            && names.contains(&format!("{c}/manifest.json")),
        "{names:?}"
    );
    assert!(names.iter().filter(|n| n.contains('/')).all(|n| n.starts_with(&c.to_string())), "only C: {names:?}");
    let mut wav = Vec::new();
    zip.by_name(&format!("{c}/audio.wav")).unwrap().read_to_end(&mut wav).unwrap();
    assert_eq!(wav, whole, "decrypted recording");
    // A tampered link is refused; after 24 hours the link is gone.
    let tampered = url.replace("expires=", "expires=9");
    assert_eq!(env.req("GET", &tampered, None, None, &[]).0, 403);
    env.offset.store(24 * 3600 + 5, Ordering::Relaxed);
    assert_eq!(env.req("GET", &url, None, None, &[]).0, 410);
    assert_eq!(env.json("GET", &format!("/v1/exports/{id}"), &admin, None).0, 410);
    // …and the sweeper removes the expired archive from the store.
    let store = env.server.as_ref().unwrap().app.records.store.clone();
    wait_for(Duration::from_secs(15), || {
        let (s, id) = (store.clone(), id.clone());
        !env.rt.block_on(async move { s.exists_meta(&format!("exports/{TENANT}/{id}.zip")).await.unwrap() })
    });
    env.offset.store(0, Ordering::Relaxed);
    // The audit log: who did what from where, without erased ids or the subject.
    let auditor = env.tok(TENANT, "ida", TokenRole::Auditor);
    let (s, log) = env.json("GET", "/v1/audit", &auditor, None);
    assert_eq!(s, 200);
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in [
        "calls.list",
        "recording.read",
        "hold.set",
        "erasure",
        "hold.release",
        "call.erase",
        "export.start",
        "export.download",
    ] {
        assert!(actions.contains(&want), "{want} missing: {actions:?}");
    }
    let read = entries.iter().find(|e| e["action"] == "recording.read").unwrap();
    assert_eq!((read["actor"].as_str(), read["addr"].as_str()), (Some("admin:root"), Some("127.0.0.1")));
    assert!(read["target"].as_str().unwrap().starts_with("call:"));
    let text = log.to_string();
    for needle in [a.to_string(), b.to_string(), c.to_string(), "5550001111".into()] {
        assert!(!text.contains(&needle), "the audit log names {needle}");
    }
    let (_, only) = env.json("GET", "/v1/audit?action=erasure", &auditor, None);
    assert_eq!(only["entries"].as_array().unwrap().len(), 1);
}

#[test]
fn tenant_deletion_has_a_grace_period_then_shreds_everything() {
    let env = start(false);
    let admin = env.admin();
    let id = env.call(TENANT, "+15551112222", "alice", "kept");
    let other = env.call("other", "+15551112222", "zed", "theirs");
    // A copy of the data volume, as a backup would have it (the keyring lives elsewhere).
    let backup = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp").arg("-a").arg(&env.data).arg(backup.path()).status().unwrap();
    assert!(st.success());
    let (s, d) = env.json("POST", "/v1/tenant/deletion", &admin, None);
    assert_eq!(s, 202, "{d}");
    assert_eq!(env.json("DELETE", "/v1/tenant/deletion", &admin, None).0, 200, "cancellable");
    assert_eq!(env.json("GET", "/v1/tenant/deletion", &admin, None).0, 404);
    let (s, d) = env.json("POST", "/v1/tenant/deletion", &admin, None);
    assert_eq!(s, 202);
    let due = chrono::DateTime::parse_from_rfc3339(d["due_at"].as_str().unwrap()).unwrap();
    let requested = chrono::DateTime::parse_from_rfc3339(d["requested_at"].as_str().unwrap()).unwrap();
    assert_eq!((due - requested).num_days(), 7);
    // Six days on: nothing happened. Proven after two whole sweep rounds ran at that time
    // (sweeps run every second; the counter moves at the end of each round).
    env.offset.store(6 * 86_400, Ordering::Relaxed);
    let app = env.server.as_ref().unwrap().app.records.clone();
    let sweeps = || app.metrics.retention_sweeps.with_label_values(&["ok"]).get();
    let before = sweeps();
    wait_for(Duration::from_secs(20), || sweeps() >= before + 2);
    assert!(!app.deleted_tenants.read().unwrap().contains(TENANT));
    assert_eq!(env.json("GET", &format!("/v1/calls/{id}"), &admin, None).0, 200);
    // Past the grace period: gone, keys destroyed, ingest refused.
    env.offset.store(7 * 86_400 + 60, Ordering::Relaxed);
    wait_for(Duration::from_secs(20), || app.deleted_tenants.read().unwrap().contains(TENANT));
    assert_eq!(env.json("GET", "/v1/calls", &admin, None).0, 401);
    let store = app.store.clone();
    let left = env.rt.block_on(async move { store.list_objects(TENANT).await.unwrap() });
    assert!(left.is_empty(), "{left:?}");
    assert!(!env.data.join(".spool").join(TENANT).exists());
    // The backup copy is unreadable: the tenant's keys are gone.
    let cfg = earshot::config::StorageConfig {
        dir: backup.path().join("data"),
        keyring: env.config.storage.keyring.clone(),
        ..Default::default()
    };
    let reader = earshot::store::objects::StoreReader::open(&cfg).unwrap();
    let err = reader.audio(id).unwrap_err().to_string();
    assert!(err.contains("destroyed"), "{err}");
    assert!(reader.audio(other).is_ok(), "other tenants are untouched");
    // New forks for the deleted tenant are refused.
    let addr = env.addr;
    let refused = env.rt.block_on(async move {
        let url = format!("ws://{addr}/fork/pcm/{TENANT}");
        let mut conn = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        let script = pcm::render(
            &Audio { sample_rate: 8000, channels: vec![vec![0; 800]] },
            serde_json::json!({"campaign": "after"}),
        );
        pcm::send(&mut conn, &script, 8.0).await.unwrap()
    });
    assert_ne!(refused.closing.code, Some(1000), "{:?}", refused.closing);
    let auditor_log = env
        .rt
        .block_on(earshot::store::privacy::read_audit(
            &app.store,
            TENANT,
            chrono::Utc::now() - chrono::Duration::days(1),
            chrono::Utc::now() + chrono::Duration::days(30),
            None,
        ))
        .unwrap();
    assert!(auditor_log.is_empty(), "the tenant's audit log went with it");
}

#[test]
fn every_route_refuses_other_tenants_and_wrong_roles() {
    let env = start(false);
    let admin = env.admin();
    let id = env.call(TENANT, "+15553334444", "alice", "x").to_string();
    let (_, exp) = env.json("POST", "/v1/exports", &admin, Some(serde_json::json!({"subject": "+15553334444"})));
    let export = exp["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(20), || {
        env.json("GET", &format!("/v1/exports/{export}"), &admin, None).1["state"] == "done"
    });
    let (s, _, doc) = env.req("GET", "/v1/openapi.json", None, None, &[]);
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    // The document is well formed: version, every operation has responses and declares
    // its path parameters.
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    let other_admin = env.tok("other", "root", TokenRole::Admin);
    let mallory = env.tok(TENANT, "mallory", TokenRole::Rep);
    let all_roles = [TokenRole::Admin, TokenRole::Manager, TokenRole::Rep, TokenRole::Auditor, TokenRole::Publisher];
    let mut checked = 0;
    for (path, ops) in paths {
        let params: Vec<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|a| a.iter().map(|p| p["name"].as_str().unwrap()).collect())
                .unwrap_or_default();
            assert_eq!(declared, params, "{method} {path}");
            let method = method.to_uppercase();
            let concrete = path.replace("{id}", if path.starts_with("/v1/exports") { &export } else { &id });
            let roles: Vec<String> =
                op["x-roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            if roles.is_empty() {
                continue; // signed link or the document itself
            }
            // Served: without a token, our handler answers 401 with a problem.
            let (s, h, _) = env.req(&method, &concrete, None, None, &[]);
            assert_eq!(s, 401, "{method} {concrete}");
            assert!(
                h.iter().any(|(k, v)| k == "content-type" && v == "application/problem+json"),
                "{method} {concrete}: {h:?}"
            );
            // Roles the operation does not allow: 403.
            for role in all_roles {
                let name = serde_json::to_value(role).unwrap().as_str().unwrap().to_string();
                if !roles.contains(&name) {
                    let t = env.tok(TENANT, "someone", role);
                    assert_eq!(
                        env.req(&method, &concrete, Some(&t), None, &[]).0,
                        403,
                        "{name} on {method} {concrete}"
                    );
                }
            }
            // Another tenant's resources do not exist for it.
            if !params.is_empty() && roles.contains(&"admin".to_string()) {
                assert_eq!(
                    env.req(&method, &concrete, Some(&other_admin), None, &[]).0,
                    404,
                    "other tenant on {method} {concrete}"
                );
            }
            // Nor another rep's call for a rep.
            if path.starts_with("/v1/calls/{id}") && roles.contains(&"rep".to_string()) {
                assert_eq!(
                    env.req(&method, &concrete, Some(&mallory), None, &[]).0,
                    404,
                    "another rep on {method} {concrete}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 18, "{checked}");
    // The other tenant's list shows none of this tenant's calls.
    let (_, v) = env.json("GET", "/v1/calls", &other_admin, None);
    assert!(v["calls"].as_array().unwrap().is_empty());
    // The signed-link route without a valid link: refused.
    assert_eq!(env.req("GET", &format!("/v1/exports/{export}/download"), None, None, &[]).0, 403);
}

#[test]
fn operators_have_the_same_rights_on_the_command_line() {
    let server = TestServer::start();
    let (audio, _) = two_party_call(8000, 1.0);
    let send = |campaign: &str, phone: &str| {
        let script = pcm::render(&audio, serde_json::json!({"campaign": campaign, "from": phone}));
        rt().block_on(async {
            let url = format!("{}/fork/pcm/{TENANT}", server.ws());
            let mut conn =
                ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
            pcm::send(&mut conn, &script, 8.0).await.unwrap()
        });
        server.wait_call(TENANT, campaign, Duration::from_secs(15)).call_id
    };
    let keep = send("keep", "+15557770000");
    let gone = send("gone", "+15556660000");
    let held = send("held", "+15556660000");
    let store = server.store();
    wait_for(Duration::from_secs(20), || [keep, gone, held].iter().all(|id| store.is_uploaded(*id)));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(args)
            .arg("-c")
            .arg(&server.config_path)
            .env("USER", "olga")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    run(&["hold", &held.to_string(), "--reason", "court order"]);
    let receipt: Value =
        serde_json::from_str(&run(&["erase", "--tenant", TENANT, "--subject", "+1 555 666 0000"])).unwrap();
    assert_eq!(receipt["erased"][0]["call_id"], gone.to_string(), "{receipt}");
    assert_eq!(receipt["held"], serde_json::json!([held.to_string()]));
    assert!(store.manifest(gone).is_err());
    let released = run(&["hold", &held.to_string(), "--release"]);
    assert!(released.contains("pending erasure ran"), "{released}");
    assert!(store.manifest(held).is_err());
    let zip_path = server.dir.path().join("export.zip");
    let printed =
        run(&["export", "--tenant", TENANT, "--subject", "+15557770000", "--out", zip_path.to_str().unwrap()]);
    assert!(printed.contains("1 calls"), "{printed}");
    let zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    assert!(zip.file_names().any(|n| n == format!("{keep}/audio.wav")));
    run(&["calls", "get-audio", &keep.to_string(), "--out", server.dir.path().join("k.wav").to_str().unwrap()]);
    let log = run(&["audit", "--tenant", TENANT]);
    for action in ["hold.set", "erasure", "hold.release", "export.cli", "recording.read"] {
        assert!(log.contains(&format!("\"action\":\"{action}\"")), "{action}: {log}");
    }
    assert!(log.contains("operator:olga"));
    assert!(
        !log.contains(&gone.to_string()) && !log.contains(&held.to_string()) && !log.contains("5556660000"),
        "{log}"
    );
}
