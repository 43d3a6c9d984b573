//! Live: what reaches people while the call runs. The `/live` websocket protocol
//! (pure), the hub that numbers nothing but replays, snapshots and fans events out to
//! bounded per-client queues, the websocket endpoint, tokens, and the overlay page.

pub mod protocol;

#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod outlet;
#[cfg(feature = "server")]
pub mod overlay;
#[cfg(feature = "server")]
pub mod socket;
#[cfg(feature = "server")]
pub mod token;
