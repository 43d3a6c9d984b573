//! What the websocket fork endpoints share: reading a frame with an idle timeout and
//! a size limit, closing with a code and reason, and reporting media counters.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::WebSocketUpgrade;

use crate::call::Source;
use crate::ingest::twilio::tracks::TwilioMedia;
use crate::ingest::{IngestError, MAX_FRAME_BYTES};
use crate::metrics::Metrics;
use crate::store::manifest::MediaStats;
use prometheus::IntCounter;

pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// The peer sent a close frame.
    Closed,
    /// The connection ended without a close frame (code for the manifest).
    Lost(&'static str),
    Error(IngestError),
}

pub async fn recv_frame(socket: &mut WebSocket, idle: Duration) -> Frame {
    loop {
        let msg = match tokio::time::timeout(idle, socket.recv()).await {
            Err(_) => return Frame::Error(IngestError::IdleTimeout(idle.as_secs())),
            Ok(None) => return Frame::Lost("connection_lost"),
            Ok(Some(Err(_))) => return Frame::Lost("ws_protocol_error"),
            Ok(Some(Ok(msg))) => msg,
        };
        return match msg {
            Message::Text(t) if t.len() > MAX_FRAME_BYTES => Frame::Error(IngestError::FrameTooLarge(t.len())),
            Message::Binary(b) if b.len() > MAX_FRAME_BYTES => Frame::Error(IngestError::FrameTooLarge(b.len())),
            Message::Text(t) => Frame::Text(t),
            Message::Binary(b) => Frame::Binary(b),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => Frame::Closed,
        };
    }
}

/// Sends a close frame; a peer that does not read is not waited on for long.
pub async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Close(Some(frame)))).await;
}

/// Adds a call's media counters to the process-wide metrics as they grow. Counter
/// handles are resolved once per call, not per frame.
pub struct StatsReporter {
    received: IntCounter,
    reordered: IntCounter,
    gap_filled: IntCounter,
    samples_gap_filled: IntCounter,
    dropped_late: IntCounter,
    dropped_duplicate: IntCounter,
    last: MediaStats,
    last_drops: (u64, u64),
    ticks: u32,
}

impl StatsReporter {
    pub fn new(metrics: &Metrics, source: Source) -> Self {
        let s = [source.as_str()];
        Self {
            received: metrics.frames_received.with_label_values(&s),
            reordered: metrics.frames_reordered.with_label_values(&s),
            gap_filled: metrics.frames_gap_filled.with_label_values(&s),
            samples_gap_filled: metrics.samples_gap_filled.with_label_values(&s),
            dropped_late: metrics.frames_dropped.with_label_values(&[s[0], "late"]),
            dropped_duplicate: metrics.frames_dropped.with_label_values(&[s[0], "duplicate"]),
            last: MediaStats::default(),
            last_drops: (0, 0),
            ticks: 0,
        }
    }

    /// Cheap per-frame call; reports every 25 frames (half a second of Twilio audio).
    pub fn tick(&mut self, media: &TwilioMedia) {
        self.ticks += 1;
        if self.ticks % 25 == 0 {
            self.report(media);
        }
    }

    pub fn report(&mut self, media: &TwilioMedia) {
        self.report_stats(media.stats(), media.drop_reasons());
    }

    pub fn report_stats(&mut self, now: MediaStats, drops: (u64, u64)) {
        self.received.inc_by(now.frames_received - self.last.frames_received);
        self.reordered.inc_by(now.frames_reordered - self.last.frames_reordered);
        self.gap_filled.inc_by(now.frames_gap_filled - self.last.frames_gap_filled);
        self.samples_gap_filled.inc_by(now.samples_gap_filled - self.last.samples_gap_filled);
        self.dropped_late.inc_by(drops.0 - self.last_drops.0);
        self.dropped_duplicate.inc_by(drops.1 - self.last_drops.1);
        self.last = now;
        self.last_drops = drops;
    }
}

/// Websocket settings for forks: small buffers (memory per call matters at 1000s of
/// calls) and a frame limit just above what a fork may legitimately send.
pub(crate) fn configure_ws(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_FRAME_BYTES * 4)
        .max_frame_size(MAX_FRAME_BYTES * 4)
}
