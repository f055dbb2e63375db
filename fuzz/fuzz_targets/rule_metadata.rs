//! See `telemine_fuzz::engine::rule_metadata`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemine_fuzz::engine::rule_metadata(data));
