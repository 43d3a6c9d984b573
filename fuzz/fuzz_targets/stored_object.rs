#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| earshot::fuzzing::stored_object(data));
