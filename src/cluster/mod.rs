//! Several nodes over one Redis: the stream records, key names and lock scripts (pure,
//! `record`) and the node's handle (`node`) with its tasks, registry and locks beside it.

pub mod record;

#[cfg(feature = "server")]
mod locks;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
mod publisher;
#[cfg(feature = "server")]
mod reader;
#[cfg(feature = "server")]
mod registry;
