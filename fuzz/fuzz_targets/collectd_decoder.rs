//! See `telemine_fuzz::decoders::collectd_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemine_fuzz::decoders::collectd_decoder(data));
