//! See `telemine_fuzz::engine::silence_reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemine_fuzz::engine::silence_reader(data));
