//! The saved alerting state as telemine restores it at start: any bytes
//! under the head key (whole, or as chunks) are restored or refused with a
//! reason, never a panic; a restored alerter can step and be saved again.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use telemine::alerting::Alerter;
use telemine::engine::chunked;

fuzz_target!(|data: &[u8]| {
    let mut alerter = Alerter::new(&Default::default());
    if alerter.restore(data).is_ok() {
        let _ = alerter.step(Vec::new(), Vec::new(), Some(i64::MAX - 1));
        let _ = alerter.snapshot();
    }
    // The same bytes as the head of a chunked value, with a chunk.
    let mut table: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    table.insert("g".into(), Some(data.to_vec()));
    table.insert("g/0000000000000000/0".into(), Some(data.to_vec()));
    if let Ok(Some(state)) = chunked::read(&table, "g") {
        let _ = Alerter::new(&Default::default()).restore(&state);
    }
});
