//! `telemine test [PATH]`: run rule test files (see `telemine::ruletest`).

use std::path::Path;
use std::process::ExitCode;

use telemine::ruletest::{find_files, run_file};

/// Runs every test file under `path`; prints one line per case and the
/// differences of each failure. Exit 1 when any failed or none was found.
pub async fn test(path: &Path) -> anyhow::Result<ExitCode> {
    let files = find_files(path);
    if files.is_empty() {
        telemine_observe::logging::problem(format_args!(
            "no rule test files (*.toml) under {}",
            path.display()
        ));
        return Ok(ExitCode::FAILURE);
    }
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        for result in run_file(f).await {
            match &result.failure {
                None => {
                    passed += 1;
                    telemine_observe::out!("ok    {}", result.label());
                }
                Some(why) => {
                    failed += 1;
                    telemine_observe::out!("FAIL  {}", result.label());
                    for line in why.lines() {
                        telemine_observe::out!("      {line}");
                    }
                }
            }
        }
    }
    telemine_observe::out!("\n{passed} passed, {failed} failed ({} files)", files.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
