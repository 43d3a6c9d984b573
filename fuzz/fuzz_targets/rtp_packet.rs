#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| earshot::fuzzing::rtp_packet(data));
