//! Unit tests of playbook parsing and resolution.

use super::*;

const PB: &str = r#"
[thresholds]
monologue = "45s"
fast_wpm = 170

[[triggers]]
id = "competitor-globex"
kind = "competitor"
phrases = ["globex", "globe x"]
title = "Globex mentioned"
body = "Globex charges per seat; we don't."

[[required]]
id = "disclosure"
phrases = ["this call is recorded"]
within = "30s"
label = "Recording disclosure"
title = "Recording disclosure missing"

[[forbidden]]
id = "guarantees"
phrases = ["guarantee*"]
title = "Never guarantee results"

[[checklist]]
id = "budget"
label = "Asked about budget"
phrases = ["budget"]
weight = 2

[campaigns.spring]
thresholds = { monologue = "30s" }
disable = ["guarantees"]
[[campaigns.spring.triggers]]
id = "competitor-globex"
kind = "competitor"
phrases = ["globex"]
title = "Globex (spring battlecard)"
[[campaigns.spring.checklist]]
id = "promo"
label = "Mentioned the spring promo"
phrases = ["spring promo"]
"#;

#[test]
fn base_and_campaign_resolve() {
    let f = PlaybookFile::parse(PB).unwrap();
    let base = f.resolve(None).unwrap();
    assert_eq!(base.thresholds.monologue_ms, 45_000);
    assert_eq!(base.thresholds.fast_wpm, 170.0);
    assert_eq!(base.thresholds.dead_air_ms, 10_000, "defaults for what the file leaves out");
    assert_eq!(base.triggers[0].phrases.len(), 2);
    assert_eq!(base.forbidden.len(), 1);
    assert_eq!(base.checklist.len(), 1);
    let spring = f.resolve(Some("spring")).unwrap();
    assert_eq!(spring.thresholds.monologue_ms, 30_000);
    assert_eq!(spring.thresholds.fast_wpm, 170.0, "campaign thresholds merge key by key");
    assert_eq!(spring.triggers.len(), 1);
    assert_eq!(spring.triggers[0].title, "Globex (spring battlecard)");
    assert!(spring.forbidden.is_empty());
    assert_eq!(spring.checklist.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["budget", "promo"]);
    let unknown = f.resolve(Some("nope")).unwrap();
    assert_eq!(unknown.thresholds.monologue_ms, 45_000);
}

#[test]
fn bad_playbooks_name_the_key() {
    let e = PlaybookFile::parse("[[triggers]]\nid = \"x\"\nphrases = []\ntitle = \"t\"\n").unwrap_err().to_string();
    assert!(e.contains("triggers[0].phrases"), "{e}");
    let e = PlaybookFile::parse("[[triggers]]\nid = \"x\"\nphrases = [\"a\"]\ntitle = \"t\"\ncolour = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
    let dup = "[[triggers]]\nid = \"x\"\nphrases = [\"a\"]\ntitle = \"t\"\n[[checklist]]\nid = \"x\"\nlabel = \"l\"\nphrases = [\"b\"]\n";
    assert!(PlaybookFile::parse(dup).unwrap_err().to_string().contains("duplicate rule id"));
    let e = PlaybookFile::parse("[thresholds]\ntalk_ratio_max = 1.5\n").unwrap_err().to_string();
    assert!(e.contains("talk_ratio"), "{e}");
    let e = PlaybookFile::parse("[campaigns.x.thresholds]\nfast_wpm = -1\n").unwrap_err().to_string();
    assert!(e.contains("campaigns.x"), "{e}");
    let e = PlaybookFile::parse("[thresholds]\nmonologue = \"soon\"\n").unwrap_err().to_string();
    assert!(e.contains("thresholds.monologue"), "{e}");
    assert!(PlaybookFile::parse("this is = not toml [").is_err());
    assert!(PlaybookFile::parse("").unwrap().resolve(None).is_ok(), "an empty playbook is the defaults");
}
