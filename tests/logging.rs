//! What telemine writes on stderr: ANSI colour only on a terminal, and in
//! `--log-format json` one JSON object per line for every diagnostic,
//! note and fatal error.

use std::path::Path;
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn telemine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_telemine"));
    cmd.args(args).current_dir(repo()).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run telemine")
}

/// Every line on stderr, each parsed as JSON; fails on a line that is not.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!text.trim().is_empty(), "nothing on stderr");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{text}"))
        })
        .collect()
}

fn bad_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repo().join("config/telemine.toml")).expect("config");
    let text = text.replacen("\n[kafka]\n", "\n[kafka]\nno_such_key = 1\n", 1);
    let text = text.replace(
        "dir = \"../sql\"",
        &format!("dir = \"{}/sql\"", repo().display()),
    );
    std::fs::write(dir.path().join("bad.toml"), text).expect("write");
    dir
}

#[test]
fn json_mode_reports_config_diagnostics_as_json_with_file_line_and_column() {
    let dir = bad_config();
    let path = dir.path().join("bad.toml");
    let o = telemine(
        &[
            "--log-format",
            "json",
            "check",
            "--config",
            path.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o);
    let d = lines
        .iter()
        .find(|l| l["fields"]["file"].is_string())
        .unwrap_or_else(|| panic!("no diagnostic with a file: {lines:?}"));
    assert_eq!(d["level"], "ERROR");
    assert!(
        d["fields"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("bad.toml"))
    );
    assert!(d["fields"]["line"].as_u64().is_some_and(|l| l > 1), "{d}");
    assert!(d["fields"]["column"].as_u64().is_some(), "{d}");
    assert!(
        d["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_such_key")),
        "{d}"
    );
}

#[test]
fn json_mode_reports_sql_diagnostics_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["features", "rules"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(repo().join("sql").join(sub)).expect("sql dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    std::fs::write(
        dir.path().join("rules/broken.sql"),
        "-- a rule that names a column no view has\nSELECT no_such_column FROM host_1m\n",
    )
    .expect("write");
    let o = telemine(
        &[
            "--log-format",
            "json",
            "check",
            "--config",
            "config/telemine.toml",
            "--sql",
            dir.path().to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o);
    assert!(
        lines.iter().any(|l| l["fields"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.sql"))
            && l["fields"]["line"].as_u64() == Some(2)),
        "{lines:?}"
    );
}

#[test]
fn json_mode_reports_the_error_that_ended_a_command_with_its_exit_code() {
    let o = telemine(
        &[
            "--log-format",
            "json",
            "eval",
            "--data",
            "/nonexistent/telemine-corpus",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o);
    let fatal = lines
        .iter()
        .find(|l| l["target"] == "telemine::fatal")
        .unwrap_or_else(|| panic!("no fatal line: {lines:?}"));
    assert_eq!(fatal["level"], "ERROR");
    assert_eq!(fatal["fields"]["exit_code"], 1);
    assert!(
        fatal["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/telemine-corpus")),
        "{fatal}"
    );
}

/// Log lines at every level while `check` runs (DataFusion's and ours).
const VERBOSE: (&str, &str) = ("RUST_LOG", "debug");

#[test]
fn text_logs_written_to_a_pipe_or_a_file_carry_no_colour_codes() {
    let o = telemine(
        &["check", "--config", "config/telemine.toml"],
        &[VERBOSE, ("TERM", "xterm-256color")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("DEBUG"), "no log lines to look at:\n{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a pipe:\n{text}");
}

/// On a terminal (a pseudo-terminal from util-linux `script`) the same
/// lines are coloured, unless NO_COLOR is set.
#[test]
fn text_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` (a pseudo-terminal) is not installed");
        return;
    }
    let on_tty = |no_color: Option<&str>| {
        let bin = env!("CARGO_BIN_EXE_telemine");
        let mut cmd = Command::new("script");
        cmd.args([
            "-qec",
            &format!("{bin} check --config config/telemine.toml"),
            "/dev/null",
        ])
        .current_dir(repo())
        .env(VERBOSE.0, VERBOSE.1)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let o = cmd.output().expect("run script");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let coloured = on_tty(None);
    assert!(coloured.contains("DEBUG"), "{coloured}");
    assert!(coloured.contains('\u{1b}'), "no colour on a terminal");
    let plain = on_tty(Some("1"));
    assert!(plain.contains("DEBUG"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "colour despite NO_COLOR");
}

/// `telemine check | head -1`: the reader goes away; the command ends
/// quietly (exit 0), not with a panic about a broken pipe.
#[test]
fn a_reader_that_goes_away_does_not_make_a_command_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_telemine"))
        .args(["check", "--config", "config/telemine.toml"])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start telemine");
    // Closed before the config is even read.
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
}
