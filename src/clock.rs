//! Time is an input: the one wall clock every IO shell reads. Pure cores take `now` as
//! a parameter; the shells read it from here, so tests can inject a clock that crosses
//! 24-hour links and 7-day grace periods without waiting.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system's clock.
pub fn system() -> Clock {
    Arc::new(Utc::now)
}
