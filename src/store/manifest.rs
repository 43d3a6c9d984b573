//! `manifest.json`: what is known about a stored call. Written when the call starts,
//! rewritten when it ends (or when a crash is recovered), always atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{CallId, CallInfo, Layout, Participant, Role, Source};

pub const MANIFEST_VERSION: u32 = 1;

/// Media counters, per call (manifest, `call.ended`) and in aggregate (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaStats {
    /// Media frames (websocket messages / packets) received.
    pub frames_received: u64,
    /// Frames that arrived out of order and were put back in place.
    pub frames_reordered: u64,
    /// Frames that never arrived and were filled with silence.
    pub frames_gap_filled: u64,
    /// Frames discarded: late (slot already filled), duplicate.
    pub frames_dropped: u64,
    /// Samples (per channel) of silence inserted for gaps and lagging channels.
    pub samples_gap_filled: u64,
    pub dtmf_events: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AudioInfo {
    pub file: String,
    pub format: String,
    pub sample_rate: u32,
    pub channels: u16,
    /// Samples per channel written.
    pub frames: u64,
    pub duration_ms: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DtmfEvent {
    pub digit: String,
    pub offset_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub tenant: String,
    pub call_id: CallId,
    #[serde(default)]
    pub campaign: Option<String>,
    pub source: Source,
    #[serde(default)]
    pub rep_id: Option<String>,
    #[serde(default)]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub source_ids: BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    pub layout: Layout,
    pub channels: Vec<Role>,
    pub sample_rate: u32,
    /// Whether audio recording was enabled for this call.
    pub recording: bool,
    #[serde(default)]
    pub audio: Option<AudioInfo>,
    #[serde(default)]
    pub stats: MediaStats,
    #[serde(default)]
    pub dtmf: Vec<DtmfEvent>,
    /// `None` while the call runs; then `completed`, `client_error:<code>`, `timeout`,
    /// `shutdown`, `storage_error`, `recovered_after_crash`.
    #[serde(default)]
    pub outcome: Option<String>,
}

impl Manifest {
    pub fn for_call(info: &CallInfo, recording: bool) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            tenant: info.tenant.clone(),
            call_id: info.call_id,
            campaign: info.campaign.clone(),
            source: info.source,
            rep_id: info.rep_id.clone(),
            participants: info.participants.clone(),
            source_ids: info.source_ids.clone(),
            started_at: info.started_at,
            ended_at: None,
            layout: info.layout,
            channels: info.layout.roles(),
            sample_rate: info.sample_rate,
            recording,
            audio: None,
            stats: MediaStats::default(),
            dtmf: Vec::new(),
            outcome: None,
        }
    }

    /// Writes `manifest.json` in `dir` atomically (temp file + rename).
    pub fn write_to_dir(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("manifest.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, self)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, dir.join("manifest.json"))
    }

    pub fn read_from_dir(dir: &Path) -> std::io::Result<Manifest> {
        let bytes = std::fs::read(dir.join("manifest.json"))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}
