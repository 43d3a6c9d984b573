//! Prometheus metrics. Names follow `earshot_<noun>_<unit>[_total]`; labels are
//! low-cardinality (never a call id). Every label set that can occur is registered at
//! zero up front, so dashboards and alerts see a series before the first event.

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::call::{Outcome, Source};
use crate::events::EventBody;
use crate::ingest::IngestError;

pub const ENDPOINTS: [&str; 2] = ["twilio", "pcm"];
pub const DROP_REASONS: [&str; 2] = ["late", "duplicate"];
pub const STAGES: [(&str, &[&str]); 3] = [
    ("ingest", &IngestError::CODES),
    ("recorder", &["io", "ring_full", "start_failed"]),
    ("events", &["no_subscriber"]),
];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub calls_active: IntGaugeVec,
    pub calls_started: IntCounterVec,
    pub calls_ended: IntCounterVec,
    pub frames_received: IntCounterVec,
    pub frames_reordered: IntCounterVec,
    pub frames_gap_filled: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub samples_gap_filled: IntCounterVec,
    pub ring_fill: HistogramVec,
    pub recorded_bytes: IntCounter,
    pub recorder_write_seconds: Histogram,
    pub ws_connections_active: IntGaugeVec,
    pub ws_connections: IntCounterVec,
    pub errors: IntCounterVec,
    pub events_published: IntCounterVec,
    pub recovered_calls: IntCounter,
    pub recogniser_dropped_seconds: CounterVec,
    pub asr_queue_depth: IntGauge,
    pub asr_queue_wait_seconds: Histogram,
    pub asr_inference_seconds: HistogramVec,
    pub asr_realtime_factor: Histogram,
    pub asr_lag_seconds: Histogram,
    /// Work time of one turn of the ASR scheduler (everything but waiting for results).
    pub asr_step_seconds: Histogram,
    pub asr_transcripts: IntCounterVec,
    pub asr_model_load_seconds: prometheus::Gauge,
    pub asr_degrade_level: IntGauge,
    pub asr_shed_seconds: prometheus::Counter,
    pub draining: IntGauge,
    pub live_connections: IntGauge,
    pub live_rejected: IntCounterVec,
    pub live_messages_sent: IntCounter,
    pub live_lagged: IntCounter,
    pub live_resumes: IntCounterVec,
    pub coach_hints: IntCounterVec,
    /// Inputs for a call's owner task it had no room for (kind, reason).
    pub call_inputs_dropped: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub postcall_dropped: IntCounter,
    pub spool_bytes: IntGauge,
    pub spool_calls: IntGauge,
    pub uploads: IntCounterVec,
    pub upload_bytes: IntCounter,
    pub upload_seconds: Histogram,
    pub retention_deleted_objects: IntCounter,
    pub retention_deleted_bytes: IntCounter,
    pub retention_overdue: IntGauge,
    pub retention_sweep_seconds: Histogram,
    pub retention_sweeps: IntCounterVec,
    pub sip_requests: IntCounterVec,
    pub sip_responses: IntCounterVec,
    pub rtp_packets: IntCounterVec,
    pub rtp_jitter_seconds: Histogram,
    pub rtp_timeouts: IntCounter,
    pub whip_sessions_active: IntGauge,
    pub whip_sessions: IntCounterVec,
    pub whip_session_ends: IntCounterVec,
    pub whip_packets: IntCounterVec,
    pub cluster_events: IntCounterVec,
    pub cluster_snapshots: IntCounterVec,
    pub cluster_redis_up: IntGauge,
    pub cluster_reconnects: IntCounter,
    pub cluster_calls_lost: IntCounter,
    pub cluster_locks: IntCounterVec,
    pub cluster_redirects: IntCounter,
    pub cluster_event_delay_seconds: Histogram,
}

pub const SIP_METHODS: [&str; 8] = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "other"];
pub const SIP_CODES: [&str; 9] = ["200", "400", "403", "415", "481", "486", "488", "500", "503"];
pub const RTP_RESULTS: [&str; 10] = [
    "received",
    "lost",
    "late",
    "duplicate",
    "reordered",
    "malformed",
    "wrong_source",
    "other_payload",
    "rtcp",
    "srtp_failed",
];
pub const WHIP_RESULTS: [&str; 13] = [
    "created",
    "redirected",
    "bad_sdp",
    "no_audio",
    "no_opus",
    "track_count",
    "bad_param",
    "unsupported_media_type",
    "unauthorized",
    "forbidden",
    "over_limit",
    "conflict",
    "internal",
];
pub const WHIP_END_REASONS: [&str; 8] =
    ["deleted", "media_timeout", "ice_timeout", "ice_failed", "dtls_failed", "closed", "shutdown", "storage"];
pub const WHIP_PACKET_RESULTS: [&str; 6] = ["received", "decode_error", "queue_full", "late", "duplicate", "reordered"];
pub const UPLOAD_OUTCOMES: [&str; 3] = ["ok", "failed", "erased"];

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

pub const LIVE_REJECT_REASONS: [&str; 3] = ["auth", "limit", "draining"];
pub const LIVE_RESUME_RESULTS: [&str; 3] = ["replay", "snapshot", "current"];
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "retried", "failed", "dropped"];

fn int_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let sources: Vec<&str> = Source::ALL.iter().map(Source::as_str).collect();
        let m = Metrics {
            calls_active: gauge_vec(&r, "earshot_calls_active", "Calls in progress, by ingest source.", &["source"]),
            calls_started: counter_vec(&r, "earshot_calls_started_total", "Calls started, by ingest source.", &["source"]),
            calls_ended: counter_vec(&r, "earshot_calls_ended_total", "Calls ended, by source and outcome.", &["source", "outcome"]),
            frames_received: counter_vec(&r, "earshot_media_frames_received_total", "Media frames received.", &["source"]),
            frames_reordered: counter_vec(&r, "earshot_media_frames_reordered_total", "Media frames that arrived out of order and were put back in place.", &["source"]),
            frames_gap_filled: counter_vec(&r, "earshot_media_frames_gap_filled_total", "Media frames that never arrived and were filled with silence.", &["source"]),
            frames_dropped: counter_vec(&r, "earshot_media_frames_dropped_total", "Media frames discarded, by reason.", &["source", "reason"]),
            samples_gap_filled: counter_vec(&r, "earshot_media_gap_filled_samples_total", "Samples of silence inserted for gaps and lagging channels.", &["source"]),
            ring_fill: {
                let h = HistogramVec::new(
                    HistogramOpts::new("earshot_ring_fill_ratio", "Fill level of per-call audio rings seen by their consumer.")
                        .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]),
                    &["consumer"],
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            recorded_bytes: {
                let c = IntCounter::new("earshot_recorded_bytes_total", "Audio bytes written to recordings.").expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            recorder_write_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new("earshot_recorder_pass_duration_seconds", "Time a recorder thread spends on one pass over its calls.")
                        .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            ws_connections_active: gauge_vec(&r, "earshot_ws_connections_active", "Open fork websocket connections, by endpoint.", &["endpoint"]),
            ws_connections: counter_vec(&r, "earshot_ws_connections_total", "Fork websocket connections accepted, by endpoint.", &["endpoint"]),
            errors: counter_vec(&r, "earshot_errors_total", "Errors by stage and stable code.", &["stage", "code"]),
            events_published: counter_vec(&r, "earshot_events_published_total", "Events put on the in-process bus, by type.", &["type"]),
            recovered_calls: {
                let c = IntCounter::new("earshot_recovered_calls_total", "Calls found open after a crash and closed at start-up.").expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            recogniser_dropped_seconds: {
                let c = CounterVec::new(
                    Opts::new("earshot_recogniser_dropped_seconds_total", "Audio the recogniser never saw: skipped because it was behind, or dropped because its ring was full."),
                    &["reason"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            asr_queue_depth: {
                let g = IntGauge::new("earshot_asr_queue_depth", "Decode jobs waiting for a whisper worker.").expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            asr_queue_wait_seconds: histogram(&r, "earshot_asr_queue_wait_seconds", "Time a decode job waited for a worker.", vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]),
            asr_inference_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new("earshot_asr_inference_seconds", "whisper.cpp time per decode, by kind (partial, final, or refine: a whole call re-transcribed after it ended).")
                        .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0]),
                    &["kind"],
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            asr_realtime_factor: histogram(&r, "earshot_asr_realtime_factor_ratio", "Inference time divided by the audio duration decoded.", vec![0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]),
            asr_lag_seconds: histogram(&r, "earshot_asr_lag_seconds", "How far behind the live audio a channel's transcript is when a decode result arrives.", vec![0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0]),
            asr_step_seconds: histogram(
                &r,
                "earshot_asr_step_seconds",
                "Work time of one turn of the ASR scheduler thread (reading rings, the policy, dispatching decodes, handing transcripts to call owners); waiting for results is not counted.",
                vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
            ),
            asr_transcripts: counter_vec(&r, "earshot_asr_transcripts_total", "Transcript events emitted, by type.", &["type"]),
            asr_model_load_seconds: {
                let g = prometheus::Gauge::new("earshot_asr_model_load_seconds", "Time the Whisper model took to load (0 when ASR is off).").expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            asr_degrade_level: {
                let g = IntGauge::new(
                    "earshot_asr_degrade_level",
                    "Recognition load level: 0 normal, 1 longer partial step, 2 finals only, 3 shedding old audio.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            asr_shed_seconds: {
                let c = prometheus::Counter::new(
                    "earshot_asr_shed_seconds_total",
                    "Speech left untranscribed because the recognition pool was too far behind (the recording keeps it).",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            draining: {
                let g = IntGauge::new("earshot_draining", "1 while the server drains for shutdown.").expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            live_connections: {
                let g = IntGauge::new("earshot_live_connections", "Open /live websocket connections (overlays, dashboards).").expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            live_rejected: counter_vec(&r, "earshot_live_rejected_total", "/live connections refused, by reason.", &["reason"]),
            live_messages_sent: int_counter(&r, "earshot_live_messages_sent_total", "Messages written to /live clients."),
            live_lagged: int_counter(&r, "earshot_live_lagged_total", "Times a /live client fell behind its queue and was resynchronised with a snapshot."),
            live_resumes: counter_vec(&r, "earshot_live_resumes_total", "/live resumes, by how the client was caught up (replay of missed events, snapshot, or already current).", &["result"]),
            coach_hints: counter_vec(&r, "earshot_coach_hints_total", "Coaching hints raised, by severity.", &["severity"]),
            call_inputs_dropped: counter_vec(
                &r,
                "earshot_call_inputs_dropped_total",
                "Transcript updates and voice edges a call's owner task had no room for (full) or was gone for (closed).",
                &["kind", "reason"],
            ),
            webhook_deliveries: counter_vec(&r, "earshot_webhook_deliveries_total", "Webhook attempts and results: delivered, retried (attempt failed, will retry), failed (gave up), dropped (queue full).", &["outcome"]),
            postcall_dropped: int_counter(&r, "earshot_postcall_dropped_total", "Post-call jobs (scorecard files, webhooks) dropped because their queue was full."),
            spool_bytes: int_gauge(&r, "earshot_spool_bytes", "Bytes in the local spool: calls being recorded or waiting for upload (the only plain copies)."),
            spool_calls: int_gauge(&r, "earshot_spool_calls", "Calls in the local spool (running or waiting for upload)."),
            uploads: counter_vec(&r, "earshot_uploads_total", "Call uploads to the store: ok, failed (kept in the spool, retried), erased (tombstoned meanwhile: dropped).", &["outcome"]),
            upload_bytes: int_counter(&r, "earshot_upload_bytes_total", "Encrypted bytes uploaded to the store."),
            upload_seconds: histogram(&r, "earshot_upload_seconds", "Time to encrypt and upload one call.", vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            retention_deleted_objects: int_counter(&r, "earshot_retention_deleted_objects_total", "Stored objects deleted by retention."),
            retention_deleted_bytes: int_counter(&r, "earshot_retention_deleted_bytes_total", "Stored bytes deleted by retention."),
            retention_overdue: int_gauge(&r, "earshot_retention_calls_overdue", "Calls found more than a day past their retention at the last sweep, plus deletions that failed (should stay 0)."),
            retention_sweep_seconds: histogram(&r, "earshot_retention_sweep_seconds", "Duration of a retention sweep.", vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
            retention_sweeps: counter_vec(&r, "earshot_retention_sweeps_total", "Retention sweeps: ok or failed.", &["outcome"]),
            sip_requests: counter_vec(&r, "earshot_sip_requests_total", "SIP requests received, by method.", &["method"]),
            sip_responses: counter_vec(&r, "earshot_sip_responses_total", "Final SIP responses sent, by status code.", &["code"]),
            rtp_packets: counter_vec(&r, "earshot_rtp_packets_total", "RTP packets by what became of them (received, lost, late, duplicate, reordered, malformed, wrong_source, other_payload, rtcp, srtp_failed: SRTP authentication or decryption failed).", &["result"]),
            rtp_jitter_seconds: histogram(&r, "earshot_rtp_jitter_seconds", "RFC 3550 interarrival jitter of RTP streams, sampled at each stream's end.", vec![0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32]),
            rtp_timeouts: int_counter(&r, "earshot_rtp_timeouts_total", "SIP calls ended because no RTP arrived for sip.rtp_timeout."),
            whip_sessions_active: int_gauge(&r, "earshot_whip_sessions_active", "WHIP (WebRTC) sessions open: answered and not yet ended."),
            whip_sessions: counter_vec(&r, "earshot_whip_sessions_total", "POST /whip requests by result: created, redirected (307 to the node that owns the call), or why refused (bad_sdp, no_audio, no_opus, track_count, bad_param, unsupported_media_type, unauthorized, forbidden, over_limit, conflict, internal).", &["result"]),
            whip_session_ends: counter_vec(&r, "earshot_whip_session_ends_total", "WHIP sessions ended, by reason (deleted, media_timeout, ice_timeout: ICE/DTLS never completed, ice_failed, dtls_failed, closed: the peer went away, shutdown, storage).", &["reason"]),
            whip_packets: counter_vec(&r, "earshot_whip_packets_total", "Opus RTP packets of WHIP sessions by what became of them (received, decode_error, queue_full: dropped before the call task, late, duplicate, reordered).", &["result"]),
            cluster_events: counter_vec(&r, "earshot_cluster_events_total", "Live events crossing nodes through Redis: published, unpublished (Redis error or down), dropped (publish queue full), received, duplicate (already covered by a snapshot), bad (unreadable stream entry).", &["result"]),
            cluster_snapshots: counter_vec(&r, "earshot_cluster_snapshots_total", "Call snapshots sent to other nodes (after this node could not publish, or another node said hello) and applied from them.", &["direction"]),
            cluster_redis_up: int_gauge(&r, "earshot_cluster_redis_up", "1 while this node's Redis connections work (always 0 without [redis])."),
            cluster_reconnects: int_counter(&r, "earshot_cluster_reconnects_total", "Times the event-stream reader reconnected to Redis."),
            cluster_calls_lost: int_counter(&r, "earshot_cluster_calls_lost_total", "Remote calls shown as ended with outcome node_lost: their owner's registry entry expired."),
            cluster_locks: counter_vec(&r, "earshot_cluster_locks_total", "Job lock attempts (retention sweep, export) by result: acquired, busy (another node holds it), unavailable (Redis down: the job is skipped), lost (the lease could not be renewed).", &["result"]),
            cluster_redirects: int_counter(&r, "earshot_cluster_redirects_total", "WHIP requests redirected (307) to the node that owns their call."),
            cluster_event_delay_seconds: histogram(&r, "earshot_cluster_event_delay_seconds", "From an event's wall_ts on its owner to its delivery to this node's hub (cross-node latency; includes clock skew).", vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            registry: r,
        };
        for res in ["published", "unpublished", "dropped", "received", "duplicate", "bad"] {
            m.cluster_events.with_label_values(&[res]);
        }
        for d in ["sent", "applied"] {
            m.cluster_snapshots.with_label_values(&[d]);
        }
        for res in ["acquired", "busy", "unavailable", "lost"] {
            m.cluster_locks.with_label_values(&[res]);
        }
        for m2 in SIP_METHODS {
            m.sip_requests.with_label_values(&[m2]);
        }
        for c in SIP_CODES {
            m.sip_responses.with_label_values(&[c]);
        }
        for res in RTP_RESULTS {
            m.rtp_packets.with_label_values(&[res]);
        }
        for res in WHIP_RESULTS {
            m.whip_sessions.with_label_values(&[res]);
        }
        for res in WHIP_END_REASONS {
            m.whip_session_ends.with_label_values(&[res]);
        }
        for res in WHIP_PACKET_RESULTS {
            m.whip_packets.with_label_values(&[res]);
        }
        for o in UPLOAD_OUTCOMES {
            m.uploads.with_label_values(&[o]);
        }
        for o in ["ok", "failed"] {
            m.retention_sweeps.with_label_values(&[o]);
        }
        for reason in LIVE_REJECT_REASONS {
            m.live_rejected.with_label_values(&[reason]);
        }
        for result in LIVE_RESUME_RESULTS {
            m.live_resumes.with_label_values(&[result]);
        }
        for sev in ["info", "warning", "critical"] {
            m.coach_hints.with_label_values(&[sev]);
        }
        for kind in ["partial", "final", "voice"] {
            for reason in ["full", "closed"] {
                m.call_inputs_dropped.with_label_values(&[kind, reason]);
            }
        }
        for o in WEBHOOK_OUTCOMES {
            m.webhook_deliveries.with_label_values(&[o]);
        }
        for s in &sources {
            m.calls_active.with_label_values(&[s]);
            m.calls_started.with_label_values(&[s]);
            m.frames_received.with_label_values(&[s]);
            m.frames_reordered.with_label_values(&[s]);
            m.frames_gap_filled.with_label_values(&[s]);
            m.samples_gap_filled.with_label_values(&[s]);
            for o in Outcome::LABELS {
                m.calls_ended.with_label_values(&[s, o]);
            }
            for reason in DROP_REASONS {
                m.frames_dropped.with_label_values(&[s, reason]);
            }
        }
        for e in ENDPOINTS {
            m.ws_connections_active.with_label_values(&[e]);
            m.ws_connections.with_label_values(&[e]);
        }
        for (stage, codes) in STAGES {
            for code in codes {
                m.errors.with_label_values(&[stage, code]);
            }
        }
        for t in EventBody::TYPE_NAMES {
            m.events_published.with_label_values(&[t]);
        }
        m.ring_fill.with_label_values(&["recorder"]);
        for reason in ["behind", "ring_full"] {
            m.recogniser_dropped_seconds.with_label_values(&[reason]);
        }
        for kind in ["partial", "final", "refine"] {
            m.asr_inference_seconds.with_label_values(&[kind]);
        }
        for t in ["transcript.partial", "transcript.final"] {
            m.asr_transcripts.with_label_values(&[t]);
        }
        let build = IntGaugeVec::new(Opts::new("earshot_build_info", "Build information; always 1."), &["version"])
            .expect("valid metric");
        r_register(&m.registry, &build);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = m.registry.register(Box::new(pc));
        }
        m
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        enc.encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text format is UTF-8")
    }

    pub fn ingest_error(&self, err: &IngestError) {
        self.errors.with_label_values(&["ingest", err.code()]).inc();
    }
}

fn r_register(r: &Registry, g: &IntGaugeVec) {
    r.register(Box::new(g.clone())).expect("unique metric");
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_series_exist_at_zero() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains(r#"earshot_calls_ended_total{outcome="storage_error",source="twilio"} 0"#));
        assert!(text.contains(r#"earshot_errors_total{code="bad_base64",stage="ingest"} 0"#));
        assert!(text.contains("earshot_build_info"));
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
