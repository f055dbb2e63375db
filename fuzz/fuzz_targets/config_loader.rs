//! The config loader: any text is a config or diagnostics with positions,
//! never a panic (the file may be edited by hand, or generated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match telemine::config::Config::parse(std::path::Path::new("fuzzed.toml"), text) {
        Ok(c) => {
            let _ = c.source_defs();
        }
        Err(d) => {
            let _ = d.to_string();
        }
    }
});
