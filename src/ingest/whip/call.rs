//! One WHIP call: the task that owns its recording. One or two sessions (rep,
//! customer, or one with both tracks) feed it decoded 16 kHz frames; each channel has
//! a jitter buffer on the call's one timeline, so legs that join at different times
//! stay aligned by arrival. The call starts recording when its first session
//! connects and ends when its last session ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::Intake;
use crate::call::session::{CallSession, CallSlot};
use crate::call::{CallId, CallInfo, Layout, SampleEncoding, Source};
use crate::ingest::whip::registry::{CallMsg, LegEnd, RATE};
use crate::media::jitter::{JitterBuffer, JitterConfig, Pushed};
use crate::store::manifest::MediaStats;

pub struct CallFacts {
    pub tenant: String,
    pub key: String,
    pub campaign: Option<String>,
    pub rep: Option<String>,
}

struct Recording {
    session: CallSession,
    started: Instant,
    jitter: [JitterBuffer; 2],
    out: [Vec<i16>; 2],
    failed: bool,
}

impl Recording {
    fn now_samples(&self, at: Instant) -> i64 {
        (at.saturating_duration_since(self.started).as_micros() as i64) * i64::from(RATE) / 1_000_000
    }

    fn release(&mut self, to: Option<i64>) -> Result<(), ()> {
        let now = self.now_samples(Instant::now());
        for (jb, out) in self.jitter.iter_mut().zip(self.out.iter_mut()) {
            out.clear();
            match to {
                Some(t) => jb.pull_to(t, out),
                None => jb.pull(now, out),
            }
        }
        let n = self.out[0].len().min(self.out[1].len());
        if n == 0 || self.failed {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(n * 4);
        for k in 0..n {
            bytes.extend_from_slice(&self.out[0][k].to_le_bytes());
            bytes.extend_from_slice(&self.out[1][k].to_le_bytes());
        }
        self.session.write_audio(&bytes).map_err(|_| ())
    }

    fn stats(&self) -> MediaStats {
        let mut m = MediaStats::default();
        for jb in &self.jitter {
            let s = jb.stats();
            m.frames_received += s.received + s.late + s.duplicates;
            m.frames_reordered += s.reordered;
            m.frames_gap_filled += s.lost;
            m.frames_dropped += s.late + s.duplicates + s.overflow;
            m.samples_gap_filled += s.concealed_samples;
        }
        m
    }
}

/// The call's task: until its last session leaves.
pub async fn run(
    app: Arc<Intake>,
    slot: CallSlot,
    facts: CallFacts,
    mut rx: mpsc::Receiver<CallMsg>,
    stop: CancellationToken,
) {
    let delay = app.config.whip.as_ref().map_or(80, |w| w.jitter_delay.as_millis() as u32);
    let mut slot = Some(slot);
    let mut rec: Option<Recording> = None;
    let mut last_end = LegEnd::Failed;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let m = app.metrics.clone();
    let (c_received, c_late, c_dup, c_reordered) = (
        m.whip_packets.with_label_values(&["received"]),
        m.whip_packets.with_label_values(&["late"]),
        m.whip_packets.with_label_values(&["duplicate"]),
        m.whip_packets.with_label_values(&["reordered"]),
    );
    // The media counters every ingest reports (by source), as for SIP and the forks.
    let src = Source::Whip.as_str();
    let (f_received, f_reordered, f_late, f_dup) = (
        m.frames_received.with_label_values(&[src]),
        m.frames_reordered.with_label_values(&[src]),
        m.frames_dropped.with_label_values(&[src, "late"]),
        m.frames_dropped.with_label_values(&[src, "duplicate"]),
    );
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(CallMsg::Frame { ch, header, samples, at }) => {
                    if rec.is_none() && slot.is_some() {
                        rec = start(&app, &mut slot, &facts, delay).await;
                        if rec.is_none() {
                            stop.cancel();
                        }
                    }
                    let Some(r) = rec.as_mut() else { continue };
                    let now = r.now_samples(at);
                    let jb = &mut r.jitter[ch.min(1)];
                    let before = jb.stats().reordered;
                    f_received.inc();
                    match jb.push(now, &header, &samples) {
                        Pushed::Accepted if jb.stats().reordered > before => {
                            c_reordered.inc();
                            f_reordered.inc();
                        }
                        Pushed::Accepted => c_received.inc(),
                        Pushed::Duplicate => {
                            c_dup.inc();
                            f_dup.inc();
                        }
                        Pushed::Late => {
                            c_late.inc();
                            f_late.inc();
                        }
                    }
                }
                Some(CallMsg::Connected) => {
                    if rec.is_none() && slot.is_some() {
                        rec = start(&app, &mut slot, &facts, delay).await;
                        if rec.is_none() {
                            stop.cancel();
                        }
                    }
                }
                Some(CallMsg::Left { channels, end }) => {
                    last_end = end;
                    let mut calls = app.whip.calls.lock().unwrap_or_else(|e| e.into_inner());
                    let key = (facts.tenant.clone(), facts.key.clone());
                    let done = match calls.get_mut(&key) {
                        Some(c) => {
                            c.legs = c.legs.saturating_sub(1);
                            for ch in channels {
                                c.taken[ch.min(1)] = false;
                            }
                            c.legs == 0
                        }
                        None => true,
                    };
                    if done {
                        calls.remove(&key);
                        if let Some(c) = &app.cluster {
                            c.release(&facts.tenant, &format!("whip:{}", facts.key));
                        }
                        break;
                    }
                }
                None => break,
            },
            _ = tick.tick(), if rec.is_some() => {
                if let Some(r) = rec.as_mut() {
                    if r.release(None).is_err() && !r.failed {
                        // Storage cannot keep up or failed: end every session of the call.
                        r.failed = true;
                        stop.cancel();
                    }
                }
            }
        }
    }
    drop(slot);
    if let Some(mut r) = rec {
        let end = r.now_samples(Instant::now());
        let _ = r.release(Some(end));
        let stats = r.stats();
        r.session.end(last_end.outcome(), stats).await;
    } else {
        tracing::info!(tenant = %facts.tenant, call_key = %facts.key, reason = last_end.label(), "WHIP call ended before any session connected: nothing recorded");
    }
}

async fn start(app: &Arc<Intake>, slot: &mut Option<CallSlot>, facts: &CallFacts, delay_ms: u32) -> Option<Recording> {
    let slot = slot.take()?;
    let now = app.now();
    let mut source_ids = BTreeMap::new();
    source_ids.insert("external_call_id".to_string(), facts.key.clone());
    let info = CallInfo {
        call_id: CallId::new_at(now),
        tenant: facts.tenant.clone(),
        campaign: facts.campaign.clone(),
        rep_id: facts.rep.clone(),
        source: Source::Whip,
        source_ids,
        participants: Vec::new(),
        layout: Layout::Stereo,
        sample_rate: RATE,
        encoding: SampleEncoding::L16,
        started_at: now,
    };
    let recording = app.config.tenant(&info.tenant).is_none_or(|t| t.recording_for(info.campaign.as_deref()));
    match CallSession::start(app.clone(), slot, info, recording).await {
        Ok(session) => {
            tracing::info!(call_id = %session.info().call_id, call_key = %facts.key, "WHIP call recording");
            let jc = JitterConfig::for_rate(RATE, delay_ms);
            Some(Recording {
                session,
                started: Instant::now(),
                jitter: [JitterBuffer::new(jc), JitterBuffer::new(jc)],
                out: [Vec::new(), Vec::new()],
                failed: false,
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "WHIP call not recorded: storage");
            None
        }
    }
}
