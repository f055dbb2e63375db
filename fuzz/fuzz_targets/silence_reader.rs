//! The silences topic as telemine reads it: any message (key and value) is
//! a silence, a deletion, or ignored with a warning — never a panic — and
//! the set it builds can be asked whether it mutes.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use telemine::alerting::silence::{Silence, Silences};

fuzz_target!(|data: &[u8]| {
    let _ = Silence::from_json(data);
    let mut set = Silences::default();
    for (i, message) in data.split(|b| *b == 0).enumerate() {
        let key = format!("id{}", i % 3);
        set.apply_message(&key, (i % 5 != 4).then_some(message));
    }
    let labels: BTreeMap<String, String> = [("host".to_string(), "h1".to_string())].into();
    let _ = set.mutes(&labels, 1_795_737_600_000);
});
