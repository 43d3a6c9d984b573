//! The synthetic calls: one script per ingest path, and each call's outcome counted
//! (connected, completed, closed early, errors, how it ended).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::args::RunArgs;
use crate::audio::Audio;
use crate::cli::Format;
use crate::{pcm, siprec, twilio, whip, ws};

/// What every call of one ingest path sends (rendered once, shared by the calls).
pub(super) enum Script {
    Twilio(twilio::TwilioScript),
    Pcm(pcm::PcmScript),
    Siprec(Arc<siprec::SiprecScript>),
    Whip(Arc<whip::WhipScript>),
}

pub(super) fn render(f: Format, audio: &Audio, args: &RunArgs) -> anyhow::Result<Script> {
    Ok(match f {
        Format::Twilio => {
            let mut params = BTreeMap::new();
            params.insert("token".to_string(), args.token.clone());
            params.insert("campaign".to_string(), "loadtest".to_string());
            Script::Twilio(twilio::render(
                audio,
                &twilio::TwilioOptions { custom_parameters: params, ..Default::default() },
            )?)
        }
        Format::Pcm => {
            Script::Pcm(pcm::render(audio, serde_json::json!({"tenant": args.tenant, "campaign": "loadtest"})))
        }
        Format::Siprec => Script::Siprec(Arc::new(siprec::render(audio)?)),
        Format::Whip => Script::Whip(Arc::new(whip::render(audio)?)),
    })
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicU64,
    pub(super) connect_errors: AtomicU64,
    pub(super) media_errors: AtomicU64,
    pub(super) closed_early: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) frames_sent: AtomicU64,
    pub(super) active: AtomicU64,
    pub(super) max_lag_ms: AtomicU64,
}

pub(super) type Codes = std::sync::Mutex<BTreeMap<String, u64>>;

fn count_code(codes: &Codes, key: String) {
    *codes.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
}

/// A websocket fork connected (counted as active), or its failure counted.
pub(super) fn ws_open(conn: anyhow::Result<ws::Ws>, counters: &Counters) -> Option<ws::Ws> {
    let Ok(conn) = conn else {
        counters.connect_errors.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    Some(conn)
}

/// A websocket fork call is over: counts its outcome and close code.
pub(super) fn ws_done(res: anyhow::Result<twilio::SendReport>, counters: &Counters, codes: &Codes) {
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match res {
        Ok(r) => {
            counters.frames_sent.fetch_add(r.media_sent, Ordering::Relaxed);
            counters.max_lag_ms.fetch_max(r.max_lag_ms, Ordering::Relaxed);
            if r.closed_early {
                counters.closed_early.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            count_code(codes, r.closing.code.map_or("none".to_string(), |c| c.to_string()));
        }
        Err(_) => {
            counters.media_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One SIPREC call: counts its outcome; the "close code" is how it ended.
pub(super) async fn siprec_call(
    o: &siprec::SiprecOptions,
    script: Arc<siprec::SiprecScript>,
    counters: &Counters,
    codes: &Codes,
) {
    counters.active.fetch_add(1, Ordering::Relaxed);
    let r = siprec::call_observed(o, script, || {
        counters.connected.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    let key = match &r {
        Ok(rep) => {
            counters.frames_sent.fetch_add(rep.packets_sent, Ordering::Relaxed);
            counters.max_lag_ms.fetch_max(rep.max_lag_ms, Ordering::Relaxed);
            if rep.ended_by_server {
                counters.closed_early.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            rep.bye_status.map_or("server BYE".to_string(), |c| format!("BYE {c}"))
        }
        Err(siprec::SiprecError::Refused(why)) => {
            counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            why.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        }
        Err(e) => {
            counters.media_errors.fetch_add(1, Ordering::Relaxed);
            e.to_string()
        }
    };
    count_code(codes, key);
}

/// One WHIP publisher: counts its outcome; the "close code" is how it ended.
pub(super) async fn whip_call(
    o: &whip::WhipOptions,
    script: Arc<whip::WhipScript>,
    duration: Duration,
    counters: &Counters,
    codes: &Codes,
) {
    counters.active.fetch_add(1, Ordering::Relaxed);
    let r = whip::publish(o, script, duration, || {
        counters.connected.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    let key = match &r {
        Ok(rep) => {
            counters.frames_sent.fetch_add(rep.packets_sent, Ordering::Relaxed);
            counters.max_lag_ms.fetch_max(rep.max_lag_ms, Ordering::Relaxed);
            if rep.ended_early {
                counters.closed_early.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            rep.delete_status.map_or("DELETE failed".to_string(), |c| format!("DELETE {c}"))
        }
        Err(whip::WhipError::Refused(why)) => {
            counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            why.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        }
        Err(e) => {
            counters.media_errors.fetch_add(1, Ordering::Relaxed);
            e.to_string()
        }
    };
    count_code(codes, key);
}
