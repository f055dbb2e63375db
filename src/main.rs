//! The `telemine` binary: parse the command line, set up logging, run the
//! command, map the outcome to an exit code.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use telemine_types::error::ErrorClass;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.log_format, &cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            telemine_observe::logging::problem(format_args!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(commands::dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            let class = classify(&e);
            let code = class.exit_code();
            telemine_observe::logging::fatal(&e, code, class == ErrorClass::Retryable);
            ExitCode::from(code)
        }
    };
    // A blocking task still running (a Kafka call that does not return)
    // must not keep the process from exiting: dropping the runtime would
    // wait for it without end.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    code
}

/// How long the exit waits for blocking tasks still running once the
/// command has returned.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who has to act on an error that ended a command: the first classified
/// error in its chain decides; an error no boundary classified came from
/// the command's own checks of its arguments and files (the user's).
fn classify(e: &anyhow::Error) -> ErrorClass {
    use telemine::runtime::PipelineError;
    use telemine_connectors::ConnectorError;
    use telemine_types::error::EngineError;
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<PipelineError>() {
            return p.class();
        }
        if let Some(c) = cause.downcast_ref::<ConnectorError>() {
            return c.class();
        }
        if let Some(x) = cause.downcast_ref::<EngineError>() {
            return x.class();
        }
    }
    ErrorClass::User
}

fn init_logging(format: cli::LogFormat, command: &cli::Command) {
    // The demo prints alerts on stdout and its score on stderr; keep its
    // logs to warnings unless RUST_LOG asks for more.
    let default = match command {
        cli::Command::Demo { .. }
        | cli::Command::Check { .. }
        | cli::Command::Test { .. }
        | cli::Command::DryRun { .. }
        | cli::Command::Train { .. }
        | cli::Command::Eval { .. }
        | cli::Command::Silence { .. } => "warn",
        _ => "info",
    };
    let format = match format {
        cli::LogFormat::Text => telemine_observe::logging::Format::Text,
        cli::LogFormat::Json => telemine_observe::logging::Format::Json,
    };
    telemine_observe::logging::init(format, default);
}
