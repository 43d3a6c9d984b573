//! `Config::validate`: the checks serde cannot make (ranges, secrets' lengths, URLs,
//! section combinations, tenant ids), each error naming the offending key.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{invalid, webhook_url_ok, Config, ConfigError, StorageBackend, DEMO_SECRET};
use crate::call::is_valid_tenant_id;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.recorder.ring_seconds < 10 {
            return Err(invalid(
                "recorder.ring_seconds",
                "must be at least 10 (seconds of audio the recorder buffers)",
            ));
        }
        if self.recorder.threads == 0 || self.recorder.threads > 64 {
            return Err(invalid("recorder.threads", "must be between 1 and 64"));
        }
        if self.recorder.checkpoint_interval < Duration::from_millis(50)
            || self.recorder.checkpoint_interval > Duration::from_secs(10)
        {
            return Err(invalid("recorder.checkpoint_interval", "must be between 50ms and 10s"));
        }
        if self.media.reorder_window_frames > 500 {
            return Err(invalid("media.reorder_window_frames", "must be at most 500 frames"));
        }
        if self.media.idle_timeout < Duration::from_millis(100) {
            return Err(invalid("media.idle_timeout", "must be at least 100ms"));
        }
        if self.asr.step < Duration::from_millis(200) || self.asr.step > Duration::from_secs(10) {
            return Err(invalid("asr.step", "must be between 200ms and 10s"));
        }
        if self.asr.endpoint < Duration::from_millis(100) || self.asr.endpoint > Duration::from_secs(5) {
            return Err(invalid("asr.endpoint", "must be between 100ms and 5s"));
        }
        let lang_ok =
            |l: &str| l == "auto" || ((2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()));
        if !lang_ok(&self.asr.language) {
            return Err(invalid("asr.language", "must be a Whisper language code (en, de, es, …) or \"auto\""));
        }
        for t in &self.tenants {
            t.sip.validate(&t.id)?;
            if let Some(l) = &t.asr_language {
                if !lang_ok(l) {
                    return Err(invalid(
                        format!("tenants.{}.asr_language", t.id),
                        "must be a Whisper language code (en, de, es, …) or \"auto\"",
                    ));
                }
            }
        }
        if !(1..=8).contains(&self.asr.refine_beam) {
            return Err(invalid("asr.refine_beam", "must be between 1 and 8"));
        }
        if self.asr.max_lag < Duration::from_secs(2) || self.asr.max_lag > Duration::from_secs(120) {
            return Err(invalid("asr.max_lag", "must be between 2s and 120s"));
        }
        if self.live.client_queue < 8 || self.live.replay_events < 16 {
            return Err(invalid("live.client_queue", "client_queue must be at least 8 and replay_events at least 16"));
        }
        if self.live.metrics_interval < Duration::from_millis(20) || self.live.heartbeat < Duration::from_secs(1) {
            return Err(invalid(
                "live.metrics_interval",
                "metrics_interval must be at least 20ms and heartbeat at least 1s",
            ));
        }
        if let Some(sip) = &self.sip {
            sip.validate()?;
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        if let Some(whip) = &self.whip {
            whip.validate()?;
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.queue == 0 {
            return Err(invalid("webhooks.max_attempts", "max_attempts and queue must be at least 1"));
        }
        if self.storage.backend == StorageBackend::S3 {
            let Some(s3) = &self.storage.s3 else {
                return Err(invalid(
                    "storage.s3",
                    "backend = \"s3\" needs a [storage.s3] section with at least bucket",
                ));
            };
            if s3.bucket.is_empty() {
                return Err(invalid("storage.s3.bucket", "must not be empty"));
            }
            if let Some(e) = &s3.endpoint {
                if e.starts_with("http://") && !s3.allow_http {
                    return Err(invalid(
                        "storage.s3.endpoint",
                        "is plain http: set allow_http = true to accept that (loopback or tests only)",
                    ));
                }
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(invalid(
                        "storage.s3.endpoint",
                        "must start with https:// (or http:// with allow_http)",
                    ));
                }
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return Err(invalid("storage.s3.secret_access_key", "access_key_id and secret_access_key go together"));
            }
        }
        if self.storage.sweep_interval < Duration::from_secs(1)
            || self.storage.upload_backoff_max < Duration::from_millis(100)
        {
            return Err(invalid(
                "storage.sweep_interval",
                "sweep_interval must be at least 1s and upload_backoff_max at least 100ms",
            ));
        }
        if self.limits.max_calls == 0 {
            return Err(invalid("limits.max_calls", "must be at least 1"));
        }
        if self.events.bus_capacity < 16 {
            return Err(invalid("events.bus_capacity", "must be at least 16"));
        }
        if let Some(url) = &self.http.public_url {
            if !(url.starts_with("ws://")
                || url.starts_with("wss://")
                || url.starts_with("http://")
                || url.starts_with("https://"))
            {
                return Err(invalid("http.public_url", "must start with ws://, wss://, http:// or https://"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = format!("tenants[{i}]");
            if !is_valid_tenant_id(&t.id) {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("{:?} is not a valid tenant id (1-64 of a-z, 0-9, '-', '_')", t.id),
                ));
            }
            if !seen.insert(t.id.as_str()) {
                return Err(invalid(format!("{key}.id"), format!("duplicate tenant id {:?}", t.id)));
            }
            if t.fork_secret.as_deref().is_none_or(str::is_empty) && t.twilio_auth_token.is_none() {
                return Err(invalid(
                    format!("{key}.fork_secret"),
                    format!(
                        "tenant {:?} has neither fork_secret nor twilio_auth_token: no fork could authenticate",
                        t.id
                    ),
                ));
            }
            if let Some(s) = &t.fork_secret {
                if s != DEMO_SECRET && s.len() < 16 {
                    return Err(invalid(format!("{key}.fork_secret"), "must be at least 16 characters"));
                }
            }
            if let Some(s) = &t.signing_secret {
                if s.len() < 32 {
                    return Err(invalid(
                        format!("{key}.signing_secret"),
                        "must be at least 32 characters (it signs HS256 tokens)",
                    ));
                }
            }
            match (&t.webhook_url, &t.webhook_secret) {
                (Some(url), _) if !webhook_url_ok(url) => {
                    return Err(invalid(
                        format!("{key}.webhook_url"),
                        "must be https:// (or http:// to a loopback address)",
                    ));
                }
                (Some(_), None) => {
                    return Err(invalid(
                        format!("{key}.webhook_secret"),
                        "a webhook_url needs a webhook_secret (requests are signed)",
                    ));
                }
                (_, Some(s)) if s.len() < 16 => {
                    return Err(invalid(format!("{key}.webhook_secret"), "must be at least 16 characters"));
                }
                _ => {}
            }
            let days_ok = |d: Option<u32>| d.is_none_or(|d| (1..=3650).contains(&d));
            for (k, d) in [
                ("retention_days", t.retention_days),
                ("retention_transcript_days", t.retention_transcript_days),
                ("retention_coaching_days", t.retention_coaching_days),
            ] {
                if !days_ok(d) {
                    return Err(invalid(format!("{key}.{k}"), "must be between 1 and 3650 days"));
                }
            }
            for (name, c) in &t.campaigns {
                for (k, d) in [
                    ("retention_days", c.retention_days),
                    ("retention_transcript_days", c.retention_transcript_days),
                    ("retention_coaching_days", c.retention_coaching_days),
                ] {
                    if !days_ok(d) {
                        return Err(invalid(format!("{key}.campaigns.{name}.{k}"), "must be between 1 and 3650 days"));
                    }
                }
                if t.retention_days.is_none()
                    && (c.retention_days.is_some()
                        || c.retention_transcript_days.is_some()
                        || c.retention_coaching_days.is_some())
                {
                    return Err(invalid(
                        format!("{key}.campaigns.{name}"),
                        "a campaign's retention needs the tenant's retention_days (the plan) too",
                    ));
                }
            }
            if let Err(e) = crate::call::redact::Redactor::new(&t.redact_patterns) {
                return Err(invalid(format!("{key}.redact_patterns"), format!("not a valid regular expression: {e}")));
            }
            if t.live_max_connections == Some(0) {
                return Err(invalid(format!("{key}.live_max_connections"), "must be at least 1"));
            }
        }
        Ok(())
    }
}
