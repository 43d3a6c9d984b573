//! Earshot: a self-hosted, real-time telephony sidecar. Calls come in, recordings,
//! live transcripts and coaching hints go out, and nothing leaves the server.
//!
//! # The pipeline, in the order the modules are declared
//!
//! 1. **`ingest`** speaks each source's protocol — Twilio/Telnyx Media Streams, raw PCM
//!    websocket forks (jambonz, FreeSWITCH), SIP/SIPREC with RTP/SRTP, WHIP from
//!    browsers — and turns it into one shape: a `call::CallInfo`, then timestamped
//!    audio in the call's fixed channel layout (rep left, customer right).
//! 2. **`call`** owns each call: `call::session` is held by the ingest task (admission,
//!    the recorder handle, the recogniser feed, `call.ended`); `call::owner` is the one
//!    task that numbers the call's events, runs its coach and redaction and publishes,
//!    fed by bounded channels so that nothing upstream ever waits on a client.
//! 3. **`media`** decodes, reorders (jitter buffer), aligns channels and resamples to
//!    16 kHz into one drop-oldest ring per channel for the recogniser.
//! 4. **`asr`** reads those rings on its own OS threads: the streaming policy (pure)
//!    decides what to decode, whisper.cpp workers decode, and transcript updates and
//!    voice edges go to the call's owner.
//! 5. **`coach`** is the pure rule engine the owner runs on stable words, voice activity
//!    and time: hints, checklist, metrics, the scorecard.
//! 6. **`events`** are the wire payloads every stage emits (one envelope, one `seq` per call).
//! 7. **`live`** fans events out to overlays over `/live` (replay, snapshots, lag handling,
//!    tokens); **`store`** keeps recordings, transcripts and hints encrypted, under
//!    retention, erasure, export and holds; **`cluster`** carries live events, the call
//!    registry and job locks across nodes over Redis.
//! 8. **`admin`** is the tenant API over what the store holds; **`server`** composes it
//!    all behind one listener; `config` and `metrics` are read by every stage.
//!
//! Each stage folder holds its pure core (bytes and `now` in, decisions out: no sockets,
//! no clock, no tokio) beside its IO shell; the IO shells build only with the `server`
//! feature, so fuzz targets and core tests compile without whisper.cpp or WebRTC.

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod app;
pub mod asr;
pub mod call;
pub mod clock;
pub mod cluster;
pub mod coach;
pub mod config;
pub mod events;
pub mod fuzzing;
pub mod ingest;
pub mod live;
pub mod media;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod shutdown;
pub mod store;
