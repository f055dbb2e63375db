//! The engine targets' bodies (config, rule files, silences, alerting
//! state): any bytes in, never a panic. Shared by the fuzz targets and by
//! `tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;

use telemine_alerting::Alerter;
use telemine_alerting::silence::{Silence, Silences};
use telemine_sql::{Kind, SqlFile, rule_meta};
use telemine_stream::chunked;

/// A rule file's `-- @key: value` metadata and annotation templates, as
/// `telemine check` reads them: metadata or diagnostics.
pub fn rule_metadata(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [Kind::Rule, Kind::View] {
        let file = SqlFile::new("rules/fuzzed.sql".into(), kind, text.to_string());
        let mut diags = Vec::new();
        let meta = rule_meta(&file, &mut diags);
        for (_, template, _, _) in &meta.annotations {
            let _ = telemine_types::alert::template::Template::parse(template, &[], &[]);
        }
        for d in &diags {
            let _ = d.to_string();
        }
    }
}

/// The config loader: a config or diagnostics with positions.
pub fn config_loader(data: &[u8]) {
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
}

/// The silences topic: every 0x00 byte separates two messages; each is a
/// silence, a deletion, or ignored with a warning, and the set they build
/// can be asked whether it mutes.
pub fn silence_reader(data: &[u8]) {
    let _ = Silence::from_json(data);
    let mut set = Silences::default();
    for (i, message) in data.split(|b| *b == 0).enumerate() {
        let key = format!("id{}", i % 3);
        set.apply_message(&key, (i % 5 != 4).then_some(message));
    }
    let labels: BTreeMap<String, String> = [("host".to_string(), "h1".to_string())].into();
    let _ = set.mutes(&labels, 1_795_737_600_000);
}

/// The saved alerting state: restored or refused with a reason (whole, or
/// as the head of chunks); a restored alerter can step and be saved.
pub fn alerting_state_reader(data: &[u8]) {
    let mut alerter = Alerter::new(&Default::default());
    if alerter.restore(data).is_ok() {
        let _ = alerter.step(Vec::new(), Vec::new(), Some(i64::MAX - 1));
        let _ = alerter.snapshot();
    }
    let mut table: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    table.insert("g".into(), Some(data.to_vec()));
    table.insert("g/0000000000000000/0".into(), Some(data.to_vec()));
    if let Ok(Some(state)) = chunked::read(&table, "g") {
        let _ = Alerter::new(&Default::default()).restore(&state);
    }
}
