//! Where everything telemine says on stderr goes: the `tracing` logger, set
//! up once by the binary. Stdout carries a command's results (alerts, the
//! report of `check`, the outcome of `test`); stderr carries diagnostics,
//! notes and log lines.
//!
//! Two formats:
//! - `text`, for people: log lines as `tracing` writes them, with ANSI
//!   colour only when stderr is a terminal and `NO_COLOR` is unset (a log
//!   file or journald never gets escape codes); diagnostics as
//!   `file:line:col: message`, notes as plain lines, as compilers print them.
//! - `json`, for log shippers: one JSON object per line for *everything* on
//!   stderr — log lines, config and SQL diagnostics (with `file`, `line`
//!   and `column` fields), a command's notes and the error that ended it
//!   (with its `exit_code`).

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use telemine_types::diagnostic::{Diagnostic, Diagnostics};

/// The logger's format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The format chosen by [`init`]; text until then (unit tests, libraries).
static FORMAT: OnceLock<Format> = OnceLock::new();

/// The `tracing` target of a command's notes (its progress and summary
/// lines on stderr). In JSON mode they are logged at info even when the
/// default level is warn, so that `--log-format json` loses none of them.
pub const NOTES: &str = "telemine::notes";

/// Whether log lines may carry ANSI colour: only on a terminal, never when
/// `NO_COLOR` is set (to anything but the empty string, as no-color.org
/// says) or `TERM` is `dumb`.
pub fn use_ansi(is_terminal: bool, no_color: Option<&str>, term: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb")
}

/// Installs the global logger: `RUST_LOG` if set, else `default_level`
/// (plus the command's notes at info in JSON mode), written to stderr.
pub fn init(format: Format, default_level: &str) {
    let _ = FORMAT.set(format);
    let default = match format {
        Format::Text => default_level.to_string(),
        Format::Json => format!("{default_level},{NOTES}=info"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let no_color = std::env::var("NO_COLOR").ok();
    let term = std::env::var("TERM").ok();
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        no_color.as_deref(),
        term.as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        Format::Text => builder.with_ansi(ansi).try_init(),
        Format::Json => builder.json().with_ansi(false).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: cannot install the logger: {e}");
    }
}

fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Text)
}

/// Reports a problem in a file the user wrote.
pub fn diagnostic(d: &Diagnostic) {
    match format() {
        Format::Text => eprintln!("{d}"),
        Format::Json => tracing::error!(
            target: "telemine_types::diagnostic",
            file = %d.file.display(),
            line = d.line,
            column = d.col,
            "{}",
            d.message
        ),
    }
}

/// Reports every diagnostic of `ds`, one line (or one JSON object) each.
pub fn diagnostics(ds: &Diagnostics) {
    for d in &ds.0 {
        diagnostic(d);
    }
}

/// A command's note on stderr: its progress or its summary.
pub fn note(args: fmt::Arguments<'_>) {
    match format() {
        Format::Text => eprintln!("{args}"),
        Format::Json => tracing::info!(target: NOTES, "{args}"),
    }
}

/// `note!("…", args)`: [`note`] with `format!` arguments.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::logging::note(format_args!($($arg)*))
    };
}

/// A line of a command's results on stdout. When whoever reads it has
/// gone (`telemine check | head -3`), the command stops quietly with exit
/// code 0, as Unix tools do, instead of panicking on the broken pipe.
pub fn out(args: fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::error!(error = %e, "cannot write to stdout");
    }
}

/// `out!("…", args)`: [`out`] with `format!` arguments (a `println!` that
/// survives a closed pipe).
#[macro_export]
macro_rules! out {
    () => {
        $crate::logging::out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::logging::out(format_args!($($arg)*))
    };
}

/// Reports a problem with what the user asked for (an argument, a missing
/// file) that ends the command.
pub fn problem(args: fmt::Arguments<'_>) {
    match format() {
        Format::Text => eprintln!("error: {args}"),
        Format::Json => tracing::error!(target: NOTES, "{args}"),
    }
}

/// Reports the error that ended a command, with the exit code it gives and
/// whether running again later may succeed.
pub fn fatal(error: &anyhow::Error, exit_code: u8, retryable: bool) {
    match format() {
        Format::Text => {
            eprintln!("error: {error:#}");
            if retryable {
                eprintln!(
                    "(a peer is unavailable; running again later may succeed — exit code {exit_code})"
                );
            }
        }
        Format::Json => tracing::error!(
            target: "telemine::fatal",
            exit_code,
            retryable,
            "{error:#}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::use_ansi;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None, Some("xterm-256color")));
        assert!(
            !use_ansi(false, None, Some("xterm-256color")),
            "a file or a pipe"
        );
        assert!(!use_ansi(true, Some("1"), None), "NO_COLOR set");
        assert!(
            use_ansi(true, Some(""), None),
            "NO_COLOR empty counts as unset"
        );
        assert!(!use_ansi(true, None, Some("dumb")));
    }
}
