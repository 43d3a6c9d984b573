#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| earshot::fuzzing::pcm_fork(data));
