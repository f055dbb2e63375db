//! Every input in the fuzz corpus (`fuzz/corpus/TARGET/`) and every input a
//! fuzzer ever found failing (`fuzz/regressions/TARGET/`), through the same
//! function its cargo-fuzz target calls: what fuzzing found stays fixed in
//! every test run, without a fuzzer. `scripts/fuzz.sh` does the fuzzing.

#[path = "../fuzz/src/decoders.rs"]
mod decoders;
#[path = "../fuzz/src/engine.rs"]
mod engine;

use std::path::Path;

fn replay(target: &str, body: Target) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            let ok = std::panic::catch_unwind(|| body(&data));
            assert!(ok.is_ok(), "{target} fails on {}", path.display());
            n += 1;
        }
    }
    n
}

/// A fuzz target's body.
type Target = fn(&[u8]);

#[test]
fn the_fuzz_corpus_passes_every_target() {
    let targets: [(&str, Target); 7] = [
        ("json_decoder", decoders::json_decoder),
        ("collectd_decoder", decoders::collectd_decoder),
        ("influx_decoder", decoders::influx_decoder),
        ("rule_metadata", engine::rule_metadata),
        ("config_loader", engine::config_loader),
        ("silence_reader", engine::silence_reader),
        ("alerting_state_reader", engine::alerting_state_reader),
    ];
    for (target, body) in targets {
        let n = replay(target, body);
        assert!(n > 0, "no corpus for {target}");
        println!("{target}: {n} inputs replayed");
    }
}
