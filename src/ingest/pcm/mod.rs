//! Raw PCM websocket forks (jambonz `listen`, FreeSWITCH `mod_audio_fork`): the
//! metadata and frame reassembly, and the websocket endpoint.

pub mod protocol;

#[cfg(feature = "server")]
pub mod socket;
