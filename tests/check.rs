//! `telemine check`: exit codes and `file:line:col: message` output.

use std::path::Path;
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_telemine"))
        .arg("check")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run telemine check")
}

/// A copy of the default SQL folder with `files` added (path, contents).
fn sql_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["features", "rules"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(repo().join("sql").join(sub)).expect("sql dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    for (path, text) in files {
        std::fs::write(dir.path().join(path), text).expect("write");
    }
    dir
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_default_config_and_sql_are_valid() {
    let o = check(&["--config", "config/telemine.toml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 feature views and 6 rules"));
}

/// What the bundled librdkafka was built with: zstd always; GSSAPI and
/// OIDC with the `kafka-gssapi` and `kafka-oidc` features.
#[test]
fn check_says_what_the_kafka_client_was_built_with() {
    let o = check(&["--config", "config/telemine.toml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("kafka client: librdkafka "))
        .unwrap_or_else(|| panic!("no kafka client line:\n{out}"));
    let features: Vec<&str> = line
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .split(',')
        .collect();
    for f in ["zstd", "lz4", "snappy", "gzip", "ssl", "sasl_scram"] {
        assert!(features.contains(&f), "{f} missing: {line}");
    }
    assert_eq!(
        features.contains(&"sasl_gssapi"),
        cfg!(feature = "kafka-gssapi"),
        "{line}"
    );
    assert_eq!(
        features.contains(&"oidc"),
        cfg!(feature = "kafka-oidc"),
        "{line}"
    );
}

#[test]
fn check_says_which_views_scale_out_by_partition_and_which_need_their_records_brought_together() {
    let o = check(&["--config", "config/telemine.toml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let line = |view: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("view `{view}`:")))
            .unwrap_or_else(|| panic!("no line for {view}:\n{out}"))
            .to_string()
    };
    // host_1m groups by host, the telemetry topic's key.
    assert!(line("host_1m").contains("computed per partition"), "{out}");
    // rack_1m groups by dc, rack: every partition's records are needed.
    let rack = line("rack_1m");
    assert!(
        rack.contains("not by the key of source `telemetry` (host)"),
        "{rack}"
    );
    assert!(rack.contains("produced once more"), "what it costs: {rack}");
    assert!(
        rack.contains("topic `telemine.repartition.telemetry.dc-rack`"),
        "{rack}"
    );
    // So the default config runs one instance per group, and says why.
    let scale = out
        .lines()
        .find(|l| l.starts_with("scale-out:"))
        .unwrap_or_else(|| panic!("no scale-out line:\n{out}"));
    assert!(scale.contains("one instance per consumer group"), "{scale}");
    assert!(scale.contains("view `rack_1m`"), "{scale}");
    assert!(
        !scale.contains("model"),
        "a model does not keep the group to one instance: {scale}"
    );
    assert!(scale.contains("[engine] repartition = true"), "{scale}");
    // The model scores where the alerting runs; check says what is relayed.
    let scoring = out
        .lines()
        .find(|l| l.starts_with("where the alerting runs"))
        .unwrap_or_else(|| panic!("no line on what runs where the alerting runs:\n{out}"));
    assert!(scoring.contains("scored view(s) `host_1m`"), "{scoring}");
    assert!(
        scoring.contains("relays the closed windows of view(s) `host_1m`"),
        "{scoring}"
    );

    // A key that is not a declared column is a config error.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("telemine.toml");
    let text = std::fs::read_to_string(repo().join("config/telemine.toml"))
        .expect("default config")
        .replace("key = [\"host\"]", "key = [\"hostname\"]")
        .replace(
            "dir = \"../sql\"",
            &format!("dir = {:?}", repo().join("sql")),
        );
    std::fs::write(&config, text).expect("config");
    let o = check(&["--config", config.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("key column `hostname` is not one of the declared columns"),
        "{err}"
    );
}

#[test]
fn each_kind_of_sql_error_is_reported_at_its_position() {
    let dir = sql_with(&[
        (
            "features/typo.sql",
            "SELECT host, window_start, window_end,\n       avg(cpux) AS c\nFROM TUMBLE(telemetry, ts, INTERVAL '1 minute')\nGROUP BY host, window_start, window_end\n",
        ),
        (
            "features/syntax.sql",
            "-- comment\nSELECT host,, window_start\nFROM TUMBLE(telemetry, ts, INTERVAL '1 minute')\n",
        ),
        ("features/nowindow.sql", "SELECT host FROM telemetry\n"),
        (
            "rules/unknown_view.sql",
            "-- @severity: critical\nSELECT host, window_start, window_end FROM host_5m\n",
        ),
        (
            "rules/no_key.sql",
            "SELECT window_start, window_end, cpu_avg FROM host_1m\n",
        ),
        ("rules/ddl.sql", "DROP TABLE host_1m\n"),
        (
            "rules/bad_meta.sql",
            "-- @sevrity: high\nSELECT host, window_start, window_end FROM host_1m\n",
        ),
        (
            "rules/bad_template.sql",
            "-- @for: 2m\n-- @summary: {{ $labels.host }} at {{ $values.cpu }}%\nSELECT host, window_start, window_end, cpu_avg FROM host_1m\n",
        ),
        (
            "rules/bad_timing.sql",
            "-- @keep_firing_for: a while\nSELECT host, window_start, window_end FROM host_1m\n",
        ),
        (
            "rules/label_clash.sql",
            "-- @label.host: all\nSELECT host, window_start, window_end FROM host_1m\n",
        ),
    ]);
    let sql = dir.path().to_string_lossy().to_string();
    let o = check(&["--sql", &sql]);
    assert_eq!(o.status.code(), Some(1));
    let lines = stderr_lines(&o);
    let expect = [
        ("features/typo.sql:2:12:", "No field named cpux"),
        ("features/syntax.sql:2:13:", "Expected: an expression"),
        (
            "features/nowindow.sql:1:1:",
            "must read its source through a window",
        ),
        ("rules/unknown_view.sql:2:44:", "table 'host_5m' not found"),
        ("rules/no_key.sql:1:1:", "rule returns no key column"),
        ("rules/ddl.sql:1:1:", "`DROP TABLE …` is not allowed"),
        ("rules/bad_meta.sql:1:4:", "unknown rule metadata @sevrity"),
        (
            "rules/bad_template.sql:2:36:",
            "the rule selects no value column `cpu` (it selects: cpu_avg)",
        ),
        ("rules/bad_timing.sql:1:4:", "@keep_firing_for: "),
        (
            "rules/label_clash.sql:1:4:",
            "@label.host: the rule's key column `host` is already a label",
        ),
    ];
    for (at, msg) in expect {
        assert!(
            lines.iter().any(|l| l.contains(at) && l.contains(msg)),
            "expected `{at} … {msg}` in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        lines.len(),
        expect.len(),
        "one line per problem:\n{}",
        lines.join("\n")
    );
}

#[test]
fn an_unknown_config_key_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repo().join("config/telemine.toml")).expect("config");
    let text = text.replacen(
        "topic = \"telemetry\"",
        "topic = \"telemetry\"\ntopik = \"x\"",
        1,
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("topik"))
        .expect("inserted")
        + 1;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let o = check(&["--config", &path.to_string_lossy(), "--sql", "sql"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("bad.toml:{line}:1: unknown field `topik`")),
        "{err}"
    );
}

/// A regular-expression topic passed `check` once and then consumed
/// nothing: it is refused now, at the source, with the reason.
#[test]
fn a_regex_topic_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repo().join("config/telemine.toml")).expect("config");
    let text = text.replacen("topic = \"telemetry\"", "topic = \"^telemetry-.*\"", 1);
    let path = dir.path().join("regex.toml");
    std::fs::write(&path, text).expect("write");
    let o = check(&["--config", &path.to_string_lossy(), "--sql", "sql"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("source `telemetry`: topic `^telemetry-.*` is a regular expression"),
        "{err}"
    );
}

/// librdkafka itself checks every `[kafka.properties]` entry: a misspelt
/// name or a value it cannot parse is an error at its line, and no value
/// that could be a secret is ever printed — a misspelt `sasl.pasword`
/// included.
#[test]
fn kafka_properties_are_checked_and_secrets_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repo().join("config/telemine.toml"))
        .expect("default config")
        .replace(
            "[kafka.properties]\n",
            "[kafka.properties]\n\"sasl.pasword\" = \"hunter2-secret\"\n\"linger.ms\" = \"soon\"\n",
        )
        .replace(
            "dir = \"../sql\"",
            &format!("dir = {:?}", repo().join("sql")),
        );
    let config = dir.path().join("telemine.toml");
    std::fs::write(&config, &text).expect("config");
    let o = check(&["--config", config.to_str().expect("path")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`sasl.pasword`"), "{err}");
    assert!(err.contains("`linger.ms`"), "{err}");
    assert!(!err.contains("hunter2"), "a password was printed: {err}");
    let line = text
        .lines()
        .position(|l| l.contains("sasl.pasword"))
        .expect("line")
        + 1;
    assert!(err.contains(&format!("telemine.toml:{line}:")), "{err}");
}

/// A blend is checked member by member, at the `kind` key; a valid one
/// is described member by member, each with the state it keeps.
#[test]
fn a_blend_of_detectors_is_checked_member_by_member() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repo().join("config/telemine.toml")).expect("config");
    let write = |kind: &str| {
        let path = dir.path().join("blend.toml");
        std::fs::write(
            &path,
            text.replacen("kind = \"pca\"", &format!("kind = \"{kind}\""), 1),
        )
        .expect("write");
        let line = text
            .lines()
            .position(|l| l.starts_with("kind = \"pca\""))
            .expect("the default model's kind")
            + 1;
        (path, line)
    };
    let (path, line) = write("pca+nearst");
    let o = check(&["--config", &path.to_string_lossy(), "--sql", "sql"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "blend.toml:{line}:8: model `host_behaviour`: unknown kind `nearst`"
        )),
        "{err}"
    );

    let (path, _) = write("pca+nearest");
    let o = check(&["--config", &path.to_string_lossy(), "--sql", "sql"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    for member in ["host_behaviour.pca", "host_behaviour.nearest"] {
        assert!(
            out.contains(&format!("model `{member}` on view `host_1m`")),
            "{out}"
        );
    }
}
