//! The call's stored live transcript: the final segments and overload gaps the
//! scheduler collected, written (redacted) as `transcript.json` and `transcript.txt`
//! beside the recording.

use std::path::PathBuf;

use serde::Serialize;

use crate::call::owner::CallHandle;
use crate::call::CallInfo;
use crate::call::Role;
use crate::store::spool::StoreLayout;

#[derive(Debug, Clone, Serialize)]
pub(super) struct FinalSegment {
    pub(super) channel: Role,
    pub(super) utterance_id: String,
    pub(super) text: String,
    pub(super) start_ms: u64,
    pub(super) end_ms: u64,
}

/// Speech shed unheard under overload (kept in the recording).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Gap {
    pub(super) channel: Role,
    pub(super) utterance_id: String,
    pub(super) start_ms: u64,
    pub(super) end_ms: u64,
    pub(super) reason: &'static str,
}

/// Writes the live transcript; returns whether the call has a recording to refine from.
pub(super) fn write_transcript(
    layout: &StoreLayout,
    info: &CallInfo,
    owner: &CallHandle,
    mut finals: Vec<FinalSegment>,
    gaps: Vec<Gap>,
) -> bool {
    finals.sort_by_key(|f| (f.start_ms, f.end_ms));
    // Stored transcripts never hold a card number (the live events may, if the tenant allows).
    let redactor = owner.redactor();
    let roles = info.layout.roles();
    let mut silence = Vec::new();
    for f in &mut finals {
        if let std::borrow::Cow::Owned(m) = redactor.apply(&f.text) {
            f.text = m;
            if let Some(ch) = roles.iter().position(|r| *r == f.channel) {
                silence.push(serde_json::json!({ "channel": ch, "start_ms": f.start_ms, "end_ms": f.end_ms }));
            }
        }
    }
    if !silence.is_empty() && owner.redact_audio() {
        // Carried out by the uploader, once every writer of the recording is done.
        let dir = layout.call_dir(&info.tenant, info.call_id);
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| {
            std::fs::write(
                dir.join(crate::store::objects::REDACT_AUDIO),
                serde_json::to_vec(&silence).unwrap_or_default(),
            )
        }) {
            tracing::error!(call_id = %info.call_id, error = %e, "recording the audio to silence");
        }
    }
    let dir: PathBuf = layout.call_dir(&info.tenant, info.call_id);
    let json = serde_json::json!({
        "version": 1,
        "call_id": info.call_id,
        "tenant": info.tenant,
        "segments": finals,
        "gaps": gaps,
    });
    let who = |r: Role| match r {
        Role::Rep => "Rep",
        Role::Customer => "Customer",
        Role::Other => "Speaker",
    };
    let stamp = |ms: u64| format!("[{:02}:{:04.1}]", ms / 60_000, (ms % 60_000) as f64 / 1000.0);
    let mut lines: Vec<(u64, String)> =
        finals.iter().map(|f| (f.start_ms, format!("{} {}: {}", stamp(f.start_ms), who(f.channel), f.text))).collect();
    lines.extend(gaps.iter().map(|g| {
        let secs = g.end_ms.saturating_sub(g.start_ms) as f64 / 1000.0;
        (g.start_ms, format!("{} {}: (untranscribed, {secs:.1} s: {})", stamp(g.start_ms), who(g.channel), g.reason))
    }));
    lines.sort_by_key(|(t, _)| *t);
    let txt: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        // The text first: once transcript.json exists, both are complete.
        std::fs::write(dir.join("transcript.txt"), txt)?;
        let tmp = dir.join("transcript.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
        std::fs::rename(&tmp, dir.join("transcript.json"))
    };
    if let Err(e) = write() {
        tracing::error!(call_id = %info.call_id, error = %e, "writing transcript");
    }
    dir.join("audio.wav").exists()
}
