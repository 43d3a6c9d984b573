//! The ingest side of one call, held by the connection task: admission, the recorder
//! handle, the recogniser feed, and the end-of-call bookkeeping shared by every ingest
//! (events are numbered and published by the call's owner, `call::owner`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::app::Intake;
use crate::call::owner::CallHandle;
use crate::call::{CallInfo, Outcome, SampleEncoding};
use crate::events::{CallEndedPayload, CallStartedPayload, EventBody};
use crate::media::g711;
use crate::media::recogniser_feed::{DropObserver, DropReason, RecogniserFeed, RECOGNISER_RATE};
use crate::store::manifest::{DtmfEvent, Manifest, MediaStats};
use crate::store::recorder::{CallEnd, RecorderError, RecorderHandle};

/// A reserved place among `limits.max_calls`; released on drop.
pub struct CallSlot {
    app: Arc<Intake>,
}

impl CallSlot {
    /// `None` when draining or at the call limit.
    pub fn try_acquire(app: &Arc<Intake>) -> Option<CallSlot> {
        if app.is_draining() {
            return None;
        }
        let max = app.config.limits.max_calls;
        let mut cur = app.lifecycle.active_calls.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match app.lifecycle.active_calls.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(CallSlot { app: app.clone() }),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.app.lifecycle.active_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

const MAX_DTMF_KEPT: usize = 1000;

pub struct CallSession {
    app: Arc<Intake>,
    info: CallInfo,
    recorder: Option<RecorderHandle>,
    /// This side's part of the call; `call.ended` goes through it.
    owner: CallHandle,
    dtmf: Vec<DtmfEvent>,
    dtmf_count: u64,
    storage_failed: bool,
    recogniser: Option<RecogniserPath>,
    _slot: CallSlot,
}

/// Decode + deinterleave + resample into the recogniser's rings (only when one is registered).
struct RecogniserPath {
    feed: RecogniserFeed,
    channels: usize,
    encoding: SampleEncoding,
    linear: Vec<i16>,
    per_channel: Vec<i16>,
}

impl RecogniserPath {
    fn push(&mut self, bytes: &[u8]) {
        self.linear.clear();
        match self.encoding {
            SampleEncoding::Mulaw => g711::decode_ulaw_into(bytes, &mut self.linear),
            SampleEncoding::Alaw => g711::decode_alaw_into(bytes, &mut self.linear),
            SampleEncoding::L16 => self.linear.extend(bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
        }
        for ch in 0..self.channels {
            self.per_channel.clear();
            self.per_channel.extend(self.linear.iter().skip(ch).step_by(self.channels));
            self.feed.push(ch, &self.per_channel);
        }
    }
}

impl CallSession {
    /// Opens the recording (blocking IO on a blocking thread) and announces the call.
    pub async fn start(
        app: Arc<Intake>,
        slot: CallSlot,
        info: CallInfo,
        recording: bool,
    ) -> Result<Self, RecorderError> {
        let app2 = app.clone();
        let info2 = info.clone();
        let (handle, playbook) = tokio::task::spawn_blocking(move || {
            let playbook = app2.playbooks.for_call(app2.config.tenant(&info2.tenant), info2.campaign.as_deref());
            (app2.recorder.open(&info2, recording), playbook)
        })
        .await
        .map_err(|_| RecorderError::Closed)?;
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                app.metrics.errors.with_label_values(&["recorder", "start_failed"]).inc();
                return Err(e);
            }
        };
        let source = info.source.as_str();
        app.metrics.calls_started.with_label_values(&[source]).inc();
        app.metrics.calls_active.with_label_values(&[source]).inc();
        let started = EventBody::CallStarted(CallStartedPayload {
            source: info.source,
            campaign: info.campaign.clone(),
            rep_id: info.rep_id.clone(),
            layout: info.layout,
            channels: info.layout.roles(),
            sample_rate: info.sample_rate,
            recording,
            source_ids: info.source_ids.clone(),
            participants: info.participants.clone(),
        });
        let tenant = app.config.tenant(&info.tenant);
        let env = crate::call::owner::OwnerEnv {
            clock: app.clock.clone(),
            metrics: app.metrics.clone(),
            events: app.events.clone(),
            postcall: app.postcall.clone(),
            metrics_interval: app.config.live.metrics_interval,
            call_dir: app.layout.call_dir(&info.tenant, info.call_id),
            redactor: app.redactor(&info.tenant),
            redact_live: tenant.is_none_or(|t| t.redact_live),
            redact_audio: tenant.is_some_and(|t| t.redact_audio),
            webhook: tenant.and_then(|t| Some((t.webhook_url.clone()?, t.webhook_secret.clone()?))),
            seal: Some(app.uploader.seal(&info.tenant, info.call_id)),
            tasks: app.tasks.clone(),
        };
        let owner = crate::call::owner::spawn(env, &info, playbook, started);
        let recogniser = app.recogniser.as_ref().and_then(|(hub, settings)| {
            let channels = info.layout.channels();
            let counters = [
                app.metrics.recogniser_dropped_seconds.with_label_values(&["behind"]),
                app.metrics.recogniser_dropped_seconds.with_label_values(&["ring_full"]),
            ];
            let observer: DropObserver = Box::new(move |reason, samples| {
                let c = &counters[usize::from(reason == DropReason::RingFull)];
                c.inc_by(samples as f64 / RECOGNISER_RATE as f64);
            });
            match RecogniserFeed::new(
                info.sample_rate,
                channels,
                settings.ring_seconds,
                settings.max_lag_seconds,
                Some(observer),
            ) {
                Ok((feed, taps)) => {
                    hub.attach(&info, taps, feed.drops().clone(), owner.clone());
                    Some(RecogniserPath {
                        feed,
                        channels,
                        encoding: info.encoding,
                        linear: Vec::new(),
                        per_channel: Vec::new(),
                    })
                }
                Err(e) => {
                    tracing::error!(call_id = %info.call_id, error = %e, "no recogniser feed for this call");
                    None
                }
            }
        });
        tracing::info!(call_id = %info.call_id, tenant = %info.tenant, source, layout = ?info.layout, rate = info.sample_rate, "call started");
        Ok(Self {
            app,
            info,
            recorder: Some(handle),
            owner,
            dtmf: Vec::new(),
            dtmf_count: 0,
            storage_failed: false,
            recogniser,
            _slot: slot,
        })
    }

    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// Queues interleaved audio in the call's encoding for the recorder. Never waits.
    /// Err means storage cannot keep up or failed: the caller ends the call.
    pub fn write_audio(&mut self, bytes: &[u8]) -> Result<(), RecorderError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(r) = self.recogniser.as_mut() {
            r.push(bytes);
        }
        let Some(rec) = self.recorder.as_mut() else { return Ok(()) };
        match rec.write(bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                if !self.storage_failed {
                    self.storage_failed = true;
                    let code = if matches!(e, RecorderError::RingFull) { "ring_full" } else { "io" };
                    self.app.metrics.errors.with_label_values(&["recorder", code]).inc();
                    tracing::error!(call_id = %self.info.call_id, error = %e, "ending call: storage");
                }
                Err(e)
            }
        }
    }

    pub fn record_dtmf(&mut self, digit: String, track: Option<&str>) {
        self.dtmf_count += 1;
        if self.dtmf.len() < MAX_DTMF_KEPT {
            let offset_ms = (self.app.now() - self.info.started_at).num_milliseconds().max(0) as u64;
            self.dtmf.push(DtmfEvent { digit, offset_ms, track: track.map(str::to_string) });
        }
    }

    /// Finalises the recording and manifest, publishes `call.ended`, updates metrics.
    pub async fn end(mut self, outcome: Outcome, mut stats: MediaStats) -> Option<Manifest> {
        let outcome = if self.storage_failed { Outcome::StorageError } else { outcome };
        stats.dtmf_events = self.dtmf_count;
        // Keyed card numbers never reach the manifest.
        let mut dtmf = std::mem::take(&mut self.dtmf);
        let digits: Vec<&str> = dtmf.iter().map(|d| d.digit.as_str()).collect();
        let mask = crate::call::redact::dtmf_card_mask(&digits);
        for (d, m) in dtmf.iter_mut().zip(mask) {
            if m {
                d.digit = "*".into();
            }
        }
        let end = CallEnd { outcome: outcome.clone(), ended_at: self.app.now(), stats, dtmf };
        let rx = self.recorder.take().expect("end is called once").finish(end);
        // Dropping the feed closes the rings: the recogniser sees the call's end.
        self.recogniser.take();
        let manifest = rx.await.ok().map(|f| f.manifest);
        let final_outcome = manifest.as_ref().and_then(|m| m.outcome.clone()).unwrap_or_else(|| outcome.manifest_str());
        let source = self.info.source.as_str();
        let label = if final_outcome.starts_with("storage_error") { "storage_error" } else { outcome.label() };
        self.app.metrics.calls_ended.with_label_values(&[source, label]).inc();
        self.app.metrics.calls_active.with_label_values(&[source]).dec();
        let duration_ms = manifest
            .as_ref()
            .and_then(|m| m.audio.as_ref().map(|a| a.duration_ms))
            .unwrap_or_else(|| (self.app.now() - self.info.started_at).num_milliseconds().max(0) as u64);
        self.owner.end(CallEndedPayload { outcome: final_outcome.clone(), duration_ms, stats }).await;
        tracing::info!(call_id = %self.info.call_id, outcome = %final_outcome, duration_ms, "call ended");
        manifest
    }
}
