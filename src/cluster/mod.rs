//! Several nodes over one Redis: the stream records, key names and lock scripts (pure,
//! `record`) and the node's connections and tasks (`node`).

pub mod record;

#[cfg(feature = "server")]
pub mod node;
