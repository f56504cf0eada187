//! The `conveyor` binary: parse the command line, set up logging on stderr, run the verb.

mod bench;
mod cli;
mod commands;
mod config;
mod failure;
mod handlers;
mod input;
mod output;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.command.default_log_level(), cli.log_format);
    let shutdown = match signals::shutdown() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            return failure::report(&anyhow::Error::new(err).context("installing signal handlers"))
        }
    };
    match commands::run(cli, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => failure::report(&err),
    }
}

/// Logs go to stderr, as text or JSON lines; `RUST_LOG` overrides `default_level`.
fn init_tracing(default_level: &str, format: cli::LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        cli::LogFormat::Json => logs.json().init(),
    }
}
