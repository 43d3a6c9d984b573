//! One integration-test binary (links once): the real server on 127.0.0.1.

mod admin;
mod asr_model;
mod auth;
mod bad_input;
mod cluster;
mod common;
mod events;
mod lifecycle;
mod live;
mod live_asr;
mod live_speech;
mod media_forks;
mod model_fetch;
mod recogniser;
mod s3;
pub(crate) mod sip;
mod sip_admission;
mod sip_media;
mod sre;
mod storage;
mod whip;
