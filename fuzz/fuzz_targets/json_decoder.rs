//! See `telemine_fuzz::decoders::json_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemine_fuzz::decoders::json_decoder(data));
