//! The in-process event bus, driven through the library: envelopes match the committed
//! JSON Schema and `seq` counts per call.

use std::collections::BTreeMap;
use std::time::Duration;

use earshot::config::Config;
use earshot::server::{ServeOptions, Server};
use earshot_loadtest::{twilio, ws};

use crate::common::*;

#[test]
fn call_events_match_the_schema_and_count_seq_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[[tenants]]\nid = \"{TENANT}\"\nfork_secret = \"{SECRET}\"\n",
        dir.path().join("data").display()
    );
    let config = Config::from_toml_with_env(&text, &dir.path().join("c.toml"), std::iter::empty()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../schemas/event.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let (audio, _) = two_party_call(8000, 1.0);
    rt().block_on(async {
        let server = Server::start(config, ServeOptions::default()).await.unwrap();
        let mut rx = server.app.subscribe();
        let url = format!("ws://{}/fork/twilio/{TENANT}", server.local_addr);
        for campaign in ["one", "two"] {
            let mut params = BTreeMap::new();
            params.insert("token".to_string(), SECRET.to_string());
            params.insert("campaign".to_string(), campaign.to_string());
            params.insert("from".to_string(), "+15550001111".to_string());
            let script =
                twilio::render(&audio, &twilio::TwilioOptions { custom_parameters: params, ..Default::default() })
                    .unwrap();
            let mut c = ws::connect(&url, &[], None).await.unwrap();
            twilio::send(&mut c, &script, 16.0).await.unwrap();
        }
        // Until both calls' scorecards (periodic `metrics` may come between, on a slow machine).
        let mut events = Vec::new();
        while events.iter().filter(|e: &&std::sync::Arc<earshot::events::Event>| e.type_name() == "scorecard").count()
            < 2
        {
            let e = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            events.push(e);
        }
        for e in &events {
            let json = serde_json::to_value(&**e).unwrap();
            let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{json}: {errors:?}");
        }
        // Two calls, each with its own seq from 1, no gaps: call.started, call.ended, then
        // the scorecard (no transcripts: this server has no recogniser).
        let mut ids: Vec<_> = events.iter().map(|e| e.call_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 2, "the calls ran one after the other");
        for id in &ids {
            let of: Vec<_> = events.iter().filter(|e| e.call_id == *id).collect();
            assert_eq!(of.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=of.len() as u64).collect::<Vec<_>>());
            let types: Vec<&str> = of.iter().map(|e| e.type_name()).filter(|t| *t != "metrics").collect();
            assert_eq!(types, ["call.started", "call.ended", "scorecard"]);
        }
        // The schema rejects a malformed envelope.
        let mut bad = serde_json::to_value(&*events[0]).unwrap();
        bad["seq"] = serde_json::json!(0);
        assert!(!validator.is_valid(&bad));
        server.drain(std::future::pending()).await;
    });
}
