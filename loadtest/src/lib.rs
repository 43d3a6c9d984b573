//! Earshot's load generator and fork senders. `earshot replay` uses the same senders,
//! so the demo, the tests and the benchmarks all speak through one implementation.

pub mod audio;
pub mod cli;
pub mod live;
pub mod load;
pub mod pcm;
pub mod proc_stats;
pub mod siprec;
pub mod twilio;
pub mod whip;
pub mod ws;
