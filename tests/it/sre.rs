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
        assert!(out.status.success(), "promtool {args:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
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
    let out = Command::new(env!("CARGO_BIN_EXE_earshot")).args(["config", "check"]).arg(dir.path().join("earshot.toml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
