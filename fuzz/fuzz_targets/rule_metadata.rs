//! A rule file's `-- @key: value` metadata and annotation templates, as
//! `telemine check` reads them: any text gives metadata or diagnostics,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemine::sql::{Kind, SqlFile, rule_meta};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [Kind::Rule, Kind::View] {
        let file = SqlFile::new("rules/fuzzed.sql".into(), kind, text.to_string());
        let mut diags = Vec::new();
        let meta = rule_meta(&file, &mut diags);
        for (_, template, _, _) in &meta.annotations {
            let _ = telemine::alerting::template::Template::parse(template, &[], &[]);
        }
        for d in &diags {
            let _ = d.to_string();
        }
    }
});
