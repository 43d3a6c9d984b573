//! `[[tenants]]`: one entry per tenant (secrets, rep mapping, ASR, coaching, webhooks,
//! retention, redaction, SIP admission) and its `[tenants.campaigns.NAME]` overrides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TenantSip;

/// Which Twilio track carries the rep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepTrack {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelSide {
    Left,
    Right,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Shared secret machine forks (Twilio `token` parameter, PCM Bearer/Basic) present.
    #[serde(default)]
    pub fork_secret: Option<String>,
    /// Twilio account auth token: lets `/fork/twilio/{tenant}` accept `X-Twilio-Signature`.
    #[serde(default)]
    pub twilio_auth_token: Option<String>,
    /// Which Twilio track is the rep (the other is the customer). A stream may override
    /// it with the `rep_track` custom parameter.
    #[serde(default = "default_rep_track")]
    pub rep_track: RepTrack,
    /// Which channel of a stereo PCM fork is the rep, unless its metadata says.
    #[serde(default = "default_rep_channel")]
    pub pcm_rep_channel: ChannelSide,
    /// Record audio at all. Off: calls are still accepted (later: transcribed), no audio is written.
    #[serde(default = "default_true")]
    pub recording: bool,
    /// This tenant's Whisper model (name or path), instead of `asr.model`.
    #[serde(default)]
    pub asr_model: Option<String>,
    /// This tenant's language (`en`, `de`, …, or `auto` to detect; needs a multilingual
    /// model for anything but English), instead of `asr.language`.
    #[serde(default)]
    pub asr_language: Option<String>,
    /// Post-call refinement for this tenant, instead of `asr.refine`.
    #[serde(default)]
    pub asr_refine: Option<bool>,
    /// Signs this tenant's tokens (JWT HS256, `kid` = tenant id): live overlay, WHIP
    /// publishers, admin. No secret: no token of this tenant is accepted.
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// Coaching playbook (TOML; relative paths are taken from the config file's folder).
    /// Re-read when the file changes: the next call uses the new version.
    #[serde(default)]
    pub playbook: Option<PathBuf>,
    /// Where `call.ended` and `scorecard` are POSTed after each call (https, or http to loopback).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the `Earshot-Signature` header on webhook requests.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Open `/live` connections for this tenant, instead of `live.max_connections_per_tenant`.
    #[serde(default)]
    pub live_max_connections: Option<usize>,
    /// The retention plan: days a call's audio is kept (7, 30, 90, 365 or any number).
    /// Unset: kept until deleted by hand (a warning at start-up).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Transcripts' retention, if not the audio's.
    #[serde(default)]
    pub retention_transcript_days: Option<u32>,
    /// Hints' and scorecards' retention, if not the audio's.
    #[serde(default)]
    pub retention_coaching_days: Option<u32>,
    /// Legal hold on every call of the tenant: nothing is deleted while set.
    #[serde(default)]
    pub legal_hold: bool,
    /// Per-campaign recording and retention overrides.
    #[serde(default)]
    pub campaigns: BTreeMap<String, CampaignConfig>,
    /// Mask card numbers (and `redact_patterns`) in the live events overlays see too,
    /// not only in what is stored (always masked).
    #[serde(default = "default_true")]
    pub redact_live: bool,
    /// More to mask, as regular expressions (e.g. national id numbers).
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    /// Also silence, in the stored recording, the utterances in which something was
    /// masked (the channel that said it, for the span of that final).
    #[serde(default)]
    pub redact_audio: bool,
    /// Who may fork SIP/SIPREC calls for this tenant, and how streams map to channels.
    #[serde(default)]
    pub sip: TenantSip,
}

impl TenantConfig {
    /// Whether a call of `campaign` records audio.
    pub fn recording_for(&self, campaign: Option<&str>) -> bool {
        campaign.and_then(|c| self.campaigns.get(c)).and_then(|c| c.recording).unwrap_or(self.recording)
    }

    /// The tenant's retention policy, if it has a plan.
    pub fn retention_policy(&self) -> Option<crate::store::retention::TenantPolicy> {
        use crate::store::retention::{CampaignPolicy, KindDays, TenantPolicy};
        Some(TenantPolicy {
            days: self.retention_days?,
            kinds: KindDays { transcript: self.retention_transcript_days, coaching: self.retention_coaching_days },
            campaigns: self
                .campaigns
                .iter()
                .map(|(name, c)| {
                    let kinds =
                        KindDays { transcript: c.retention_transcript_days, coaching: c.retention_coaching_days };
                    (name.clone(), CampaignPolicy { days: c.retention_days, kinds })
                })
                .collect(),
            hold: self.legal_hold,
        })
    }
}

fn default_rep_track() -> RepTrack {
    RepTrack::Inbound
}
fn default_rep_channel() -> ChannelSide {
    ChannelSide::Left
}
fn default_true() -> bool {
    true
}

/// Per-campaign settings of a tenant (`[tenants.campaigns.NAME]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Record this campaign's audio, instead of the tenant's `recording`.
    #[serde(default)]
    pub recording: Option<bool>,
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub retention_transcript_days: Option<u32>,
    #[serde(default)]
    pub retention_coaching_days: Option<u32>,
}
