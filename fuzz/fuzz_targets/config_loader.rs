//! See `telemine_fuzz::engine::config_loader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemine_fuzz::engine::config_loader(data));
