//! See `telemine_fuzz::decoders::influx_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemine_fuzz::decoders::influx_decoder(data));
