//! Real peers from Debian (Prometheus, promtool, headless Chromium, …) for
//! integration tests: found on the PATH, or the test skips with a
//! message. With `TELEMINE_REQUIRE_PEERS=1` (as `scripts/test.sh` sets
//! after installing them) a missing peer fails the test instead.

use std::path::PathBuf;
use std::process::{Child, Command};

/// The first of `names` on the PATH, or `None` (with a message) to skip.
pub fn peer(names: &[&str], package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if std::env::var("TELEMINE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!(
            "TELEMINE_REQUIRE_PEERS=1 but none of {names:?} is installed: apt-get install {package} (scripts/test.sh does)"
        );
    }
    eprintln!(
        "skipped: {names:?} not installed (apt-get install {package}, or run scripts/test.sh)"
    );
    None
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A peer process, killed when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn start(command: &mut Command) -> Process {
        Process(command.spawn().expect("start the peer"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
