//! The SQL language's specification (`spec/**/*.toml`) and the project's
//! own rule tests (`sql/tests/*.toml`), run as `telemine test` runs them.

use std::path::PathBuf;

use telemine::ruletest::{find_files, run_file};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run_all(dir: &str) -> usize {
    let files = find_files(&repo().join(dir));
    assert!(!files.is_empty(), "no test files under {dir}");
    let mut failures = Vec::new();
    let mut n = 0;
    for f in &files {
        for r in run_file(f).await {
            n += 1;
            if let Some(why) = &r.failure {
                failures.push(format!("FAIL {}\n{why}", r.label()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    n
}

#[tokio::test]
async fn the_language_specification_holds() {
    let n = run_all("spec").await;
    assert!(n >= 30, "only {n} spec cases ran");
}

#[tokio::test]
async fn the_projects_rule_tests_pass() {
    run_all("sql/tests").await;
}

#[tokio::test]
async fn a_failing_rule_test_shows_a_readable_diff() {
    let results = run_file(&repo().join("tests/fixtures/failing_rule_test.toml")).await;
    assert_eq!(results.len(), 2);
    let diff = results[0].failure.as_deref().expect("the first case fails");
    assert!(
        diff.contains("- hot{host=\"h3\"} [2026-11-27T00:01:00.000Z, …)"),
        "{diff}"
    );
    assert!(
        diff.contains(
            "+ hot{host=\"h2\"} [2026-11-27T00:00:00.000Z, 2026-11-27T00:01:00.000Z) cpu_avg=95.0"
        ),
        "{diff}"
    );
    assert!(
        !diff.contains("host=\"h1\""),
        "matched alerts are not listed: {diff}"
    );
    // An error in inline SQL points at the test file's own line.
    let err = results[1]
        .failure
        .as_deref()
        .expect("the second case fails");
    assert!(
        err.contains("failing_rule_test.toml:33:8:") && err.contains("cpu_max"),
        "{err}"
    );
}
