//! The SRE kit's static parts against the real tools: alert rules checked and unit-tested
//! with promtool, and every metric the rules and dashboards name exists in Earshot's
//! registry (so no alert or panel silently watches a metric that is never exported).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `earshot_…` names in `text` (histogram series suffixes folded into their family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("earshot_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let name = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        out.insert(name.to_string());
        i = end;
    }
    out
}

fn exported() -> BTreeSet<String> {
    let text = earshot::metrics::Metrics::new().render();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    require_tool("promtool");
    let dir = root().join("deploy/prometheus");
    for args in [&["check", "rules", "earshot-alerts.yml"][..], &["test", "rules", "earshot-alerts.test.yml"][..]] {
        let out = Command::new("promtool").args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_metric_named_by_alerts_and_dashboards_is_exported() {
    let have = exported();
    assert!(have.contains("earshot_calls_active"), "{have:?}");
    let mut sources = vec![root().join("deploy/prometheus/earshot-alerts.yml")];
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        sources.push(entry.unwrap().path());
    }
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        let missing: Vec<String> = metric_names(&text).into_iter().filter(|m| !have.contains(m)).collect();
        assert!(missing.is_empty(), "{} names metrics Earshot does not export: {missing:?}", path.display());
    }
}

#[test]
fn systemd_unit_verifies() {
    require_tool("systemd-analyze");
    let unit = std::fs::read_to_string(root().join("deploy/systemd/earshot.service")).unwrap();
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = unit.replace("/usr/local/bin/earshot", env!("CARGO_BIN_EXE_earshot"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("earshot.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("earshot.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn kubernetes_manifests_validate_and_their_config_checks() {
    let kv = root().join("target/test-tools/kvenv/bin/kubernetes-validate");
    assert!(kv.exists(), "kubernetes-validate missing: run scripts/install-test-deps.sh");
    let manifest = root().join("deploy/kubernetes/earshot-sidecar.yaml");
    let out = Command::new(&kv).arg("--strict").arg(&manifest).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The ConfigMap's earshot.toml and playbook, with the Secret's files, pass `config check`.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let block = |key: &str| -> String {
        let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |")).skip(1);
        let mut out = String::new();
        for l in lines.by_ref() {
            if !l.starts_with("    ") && !l.trim().is_empty() {
                break;
            }
            out.push_str(l.get(4..).unwrap_or(""));
            out.push('\n');
        }
        out
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("fork_secret"), "replace-me-with-32-random-characters").unwrap();
    std::fs::write(secrets.join("signing_secret"), "replace-me-with-at-least-32-random-characters-too").unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/acme.toml"), block("acme.toml")).unwrap();
    let config = block("earshot.toml").replace("/etc/earshot/secrets", &secrets.display().to_string());
    assert!(config.contains("[[tenants]]"), "{config}");
    std::fs::write(dir.path().join("earshot.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["config", "check"])
        .arg(dir.path().join("earshot.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The compose stack: its Earshot config passes `config check` (both nodes' environment),
/// its Prometheus config passes `promtool check config`, and the compose file's structure
/// holds together (parsed by PyYAML from the test tools: every bind-mounted path exists,
/// the nodes wait for the keyring, Redis and the bucket, Prometheus scrapes both nodes,
/// nothing is published beyond 127.0.0.1). There is no Docker engine here to run it.
#[test]
fn the_compose_stack_files_check() {
    let dir = root().join("deploy/compose");
    // Earshot's config, with the secrets directory where the test has it.
    let tmp = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(dir.join("earshot.toml"))
        .unwrap()
        .replace("/etc/earshot/secrets", &dir.join("secrets").display().to_string());
    std::fs::write(tmp.path().join("earshot.toml"), config).unwrap();
    std::fs::create_dir_all(tmp.path().join("playbooks")).unwrap();
    std::fs::copy(dir.join("playbooks/acme.toml"), tmp.path().join("playbooks/acme.toml")).unwrap();
    for (node, ports) in [("earshot-1", "[40000, 40049]"), ("earshot-2", "[40050, 40099]")] {
        let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(["config", "check"])
            .arg(tmp.path().join("earshot.toml"))
            .env("EARSHOT__REDIS__NODE_ID", node)
            .env("EARSHOT__WHIP__ICE_PORTS", ports)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{node}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Prometheus's config, with the rules file beside it as the stack mounts it.
    require_tool("promtool");
    std::fs::copy(dir.join("prometheus.yml"), tmp.path().join("prometheus.yml")).unwrap();
    std::fs::copy(root().join("deploy/prometheus/earshot-alerts.yml"), tmp.path().join("earshot-alerts.yml")).unwrap();
    let out =
        Command::new("promtool").args(["check", "config"]).arg(tmp.path().join("prometheus.yml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The compose file.
    let py = root().join("target/test-tools/kvenv/bin/python");
    assert!(py.exists(), "the test tools' Python (PyYAML) is missing: run scripts/install-test-deps.sh");
    let out = Command::new(&py)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(dir.join("compose.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = doc["services"].as_object().unwrap();
    for name in ["redis", "minio", "minio-bucket", "init", "earshot-1", "earshot-2", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name}");
    }
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with('.') {
                assert!(dir.join(host).exists(), "{name}: {host} does not exist");
            }
        }
        for p in svc["ports"].as_array().into_iter().flatten() {
            assert!(p.as_str().unwrap().starts_with("127.0.0.1:"), "{name} publishes {p} beyond loopback");
        }
    }
    for node in ["earshot-1", "earshot-2"] {
        let svc = &services[node];
        assert_eq!(svc["command"], serde_json::json!(["serve", "--config", "/etc/earshot/earshot.toml"]));
        for dep in ["init", "redis", "minio-bucket"] {
            assert!(svc["depends_on"][dep]["condition"].is_string(), "{node} waits for {dep}");
        }
        assert!(svc["healthcheck"]["test"].to_string().contains("/readyz"), "{node}");
        assert!(
            std::fs::read_to_string(dir.join("prometheus.yml")).unwrap().contains(&format!("{node}:8080")),
            "Prometheus scrapes {node}"
        );
    }
    for s in doc["secrets"].as_object().unwrap().values() {
        assert!(dir.join(s["file"].as_str().unwrap()).exists(), "{s}");
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_real_prometheus_scrapes_earshot_and_every_panel_and_rule_has_data() {
    require_tool("prometheus");
    let server = TestServer::start();
    // Some traffic: two calls through the PCM fork.
    let (audio, _) = two_party_call(8000, 1.0);
    for campaign in ["p1", "p2"] {
        let script = earshot_loadtest::pcm::render(&audio, serde_json::json!({"campaign": campaign}));
        rt().block_on(async {
            let url = format!("{}/fork/pcm/{TENANT}", server.ws());
            let mut c =
                earshot_loadtest::ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None)
                    .await
                    .unwrap();
            earshot_loadtest::pcm::send(&mut c, &script, 8.0).await.unwrap()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("deploy/prometheus/earshot-alerts.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: earshot\n    static_configs:\n      - targets: ['{}']\n",
            rules.display(),
            server.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(std::mem::replace(&mut prom, Command::new("true").spawn().unwrap()));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let try_query = |expr: &str| -> Option<serde_json::Value> {
        let mut r = agent.get(format!("http://127.0.0.1:{port}/api/v1/query")).query("query", expr).call().ok()?;
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    };
    let query = |expr: &str| try_query(expr).unwrap_or_else(|| panic!("query {expr} failed"));
    // Until the target is up and a few scrapes are in (rates need two samples).
    let t0 = std::time::Instant::now();
    loop {
        let up = try_query("up{job=\"earshot\"}");
        if up.as_ref().is_some_and(|v| v["data"]["result"][0]["value"][1] == "1") {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "prometheus never scraped earshot: {up:?}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // A few scrapes in (rates need two samples in their window), counted, not slept for.
    let t1 = std::time::Instant::now();
    loop {
        let n = try_query("count_over_time(up{job=\"earshot\"}[5m])");
        let n = n.as_ref().and_then(|v| v["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok());
        if n.is_some_and(|n| n >= 4.0) {
            break;
        }
        assert!(t1.elapsed() < std::time::Duration::from_secs(30), "prometheus stopped scraping: {n:?}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let mut empty = Vec::new();
    let mut checked = 0;
    let mut uids = BTreeSet::new();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root().join("grafana/dashboards")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let titles: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().to_string()).collect();
    for want in ["overview", "media", "asr", "live", "storage", "process"] {
        assert!(titles.contains(&format!("earshot-{want}.json")), "dashboard {want}: {titles:?}");
    }
    let panels: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| {
            // Grafana's provisioning format: a dashboard object with a unique uid, a title,
            // panels laid out on the grid, each on the provisioned Prometheus datasource.
            let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()), "{}", f.display());
            assert!(dash["schemaVersion"].as_u64().is_some(), "{}", f.display());
            assert!(uids.insert(dash["uid"].as_str().unwrap().to_string()), "duplicate uid in {}", f.display());
            let panels = dash["panels"].as_array().unwrap().clone();
            let mut ids = BTreeSet::new();
            for p in &panels {
                assert!(ids.insert(p["id"].as_u64().unwrap()), "{}: duplicate panel id", f.display());
                assert_eq!(p["datasource"]["uid"], "prometheus", "{}: {}", f.display(), p["title"]);
                assert!(
                    p["gridPos"]["w"].as_u64().is_some_and(|w| w > 0 && w <= 24),
                    "{}: {}",
                    f.display(),
                    p["title"]
                );
            }
            panels.into_iter().map(move |mut p| {
                p["title"] = serde_json::json!(format!(
                    "{} / {}",
                    dash["title"].as_str().unwrap(),
                    p["title"].as_str().unwrap()
                ));
                p
            })
        })
        .collect();
    for panel in &panels {
        for t in panel["targets"].as_array().into_iter().flatten() {
            // A display filter ("> 0") may rightly hide everything: check what it filters.
            let expr = t["expr"].as_str().unwrap().trim_end_matches(" > 0");
            let v = query(expr);
            assert_eq!(v["status"], "success", "{expr}: {v}");
            if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                empty.push(format!("{}: {expr}", panel["title"]));
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
    assert!(empty.is_empty(), "panels with no data from a live Earshot:\n{}", empty.join("\n"));
    // The calls show up as such, and every alert rule loaded and evaluates cleanly.
    let ended = query("sum(earshot_calls_ended_total)");
    assert!(ended["data"]["result"][0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 2.0, "{ended}");
    let mut r = agent.get(format!("http://127.0.0.1:{port}/api/v1/rules")).call().unwrap();
    let rules: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let all: Vec<&serde_json::Value> =
        rules["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(all.len() >= 14, "{rules}");
    for rule in all {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}

/// `earshot-loadtest run` against a running server: PCM calls with overlay clients on
/// `/live`; the result has the calls and the overlay's latencies, and `--slo` thresholds
/// that cannot be met fail the run (and an unknown key is refused up front).
#[test]
fn the_load_tool_reports_calls_and_overlay_latency_and_fails_a_missed_slo() {
    use earshot_loadtest::load::{run, RunArgs};
    let server = TestServer::start_with(
        "[sip]\nlisten = \"127.0.0.1:0\"\nrtp_ports = [30000, 39999]\n\n[whip]\nice_ip = \"127.0.0.1\"\n",
        &[
            ("EARSHOT__TENANTS__ACME__SIGNING_SECRET", crate::live::SIGNING),
            ("EARSHOT__TENANTS__ACME__SIP__ALLOW", "[\"127.0.0.1\"]"),
        ],
    );
    let t0 = std::time::Instant::now();
    let sip: std::net::SocketAddr = loop {
        if let Some(a) = server
            .log()
            .lines()
            .find(|l| l.contains("SIP listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next()?.parse().ok())
        {
            break a;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "no SIP listener; log:\n{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::live::live_config(dir.path(), "");
    let manager = crate::live::tok(&cfg, TENANT, "boss", earshot::live::token::TokenRole::Manager);
    let publisher = crate::live::tok(&cfg, TENANT, "loadtest", earshot::live::token::TokenRole::Publisher);
    let wav = dir.path().join("call.wav");
    let (audio, _) = two_party_call(8000, 1.0);
    let mut w = hound::WavWriter::create(
        &wav,
        hound::WavSpec { channels: 2, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int },
    )
    .unwrap();
    for i in 0..audio.channels[0].len() {
        w.write_sample(audio.channels[0][i]).unwrap();
        w.write_sample(audio.channels[1][i]).unwrap();
    }
    w.finalize().unwrap();
    let out = dir.path().join("result.json");
    let mut args = RunArgs {
        url: server.ws(),
        sip,
        format: earshot_loadtest::cli::Format::Pcm,
        mix: Some("twilio=1,pcm=1,siprec=1,whip=1".into()),
        publisher_token: Some(publisher),
        scenario: None,
        calls: 4,
        ramp: 0.5,
        duration: 3.0,
        wav: Some(wav),
        tenant: TENANT.into(),
        token: SECRET.into(),
        server_pid: Some(server.pid()),
        out: Some(out.clone()),
        live: 2,
        live_token: Some(manager),
        slo: Some("connect_errors=0,completed_min=4,live_messages_min=8,live_delivery_p95_ms=5000".into()),
    };
    // One call on each ingest path at once.
    let r = rt().block_on(run(args.clone())).unwrap();
    assert_eq!((r.connected, r.completed, r.connect_errors, r.media_errors), (4, 4, 0, 0), "{r:?}");
    assert_eq!(r.format, "mixed");
    assert_eq!(r.mix.values().copied().collect::<Vec<_>>(), [1, 1, 1, 1], "{:?}", r.mix);
    assert_eq!(r.server_metrics["calls_completed"], 4.0, "{:?}", r.server_metrics);
    assert!(
        r.server_metrics["whip_received"] > 0.0 && r.server_metrics["rtp_received"] > 0.0,
        "{:?}",
        r.server_metrics
    );
    let live = r.live.as_ref().unwrap();
    assert_eq!((live.connected, live.connect_errors), (2, 0));
    assert_eq!(
        live.by_type.get("call.started"),
        Some(&8),
        "each overlay client saw the four calls start: {:?}",
        live.by_type
    );
    assert_eq!(live.by_type.get("call.ended"), Some(&8), "{:?}", live.by_type);
    assert!(live.delivery_p95_ms.is_some_and(|p| p < 5000.0), "{live:?}");
    let slo = r.slo.as_ref().unwrap();
    assert!(slo.passed, "{:?}", slo.missed);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["live"]["clients"], 2);
    assert_eq!(json["slo"]["passed"], true);
    assert!(std::fs::read_to_string(out.with_extension("md")).unwrap().contains("overlay clients connected"));
    // Thresholds no run can meet: missed, each named.
    args.slo = Some("live_delivery_p95_ms=0.0001,completed_min=3".into());
    args.out = None;
    args.mix = None;
    args.calls = 2;
    let r = rt().block_on(run(args.clone())).unwrap();
    let slo = r.slo.unwrap();
    assert!(!slo.passed);
    assert!(
        slo.missed.iter().any(|m| m.starts_with("live_delivery_p95_ms"))
            && slo.missed.iter().any(|m| m.starts_with("completed_min: 2 < 3")),
        "{:?}",
        slo.missed
    );
    // A typo is refused before anything runs.
    args.slo = Some("live_hint_p59_ms=1".into());
    let e = rt().block_on(run(args)).unwrap_err().to_string();
    assert!(e.contains("unknown key \"live_hint_p59_ms\""), "{e}");
}
