//! The `conveyor` binary: parse the command line, set up logging on stderr, run the verb.

mod bench;
mod cli;
mod commands;
mod config;
mod failure;
mod handlers;
mod input;
#[cfg(feature = "otlp")]
mod otlp;
mod output;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let exporter = match init_tracing(cli.command.default_log_level(), cli.log_format) {
        Ok(exporter) => exporter,
        Err(err) => return failure::report(&err),
    };
    let code = match signals::shutdown() {
        Ok(shutdown) => match commands::run(cli, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => failure::report(&err),
        },
        Err(err) => failure::report(&anyhow::Error::new(err).context("installing signal handlers")),
    };
    exporter.shutdown();
    code
}

/// What must be flushed before the process exits (the OTLP exporter, when there is one).
#[derive(Default)]
struct Exporter {
    #[cfg(feature = "otlp")]
    otlp: Option<otlp::Exporter>,
}

impl Exporter {
    fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(otlp) = self.otlp {
            otlp.shutdown();
        }
    }
}

/// Logs go to stderr, as text or JSON lines; `RUST_LOG` overrides `default_level`. Built with
/// the `otlp` feature and given `OTEL_EXPORTER_OTLP_ENDPOINT`, spans are exported too.
fn init_tracing(default_level: &str, format: cli::LogFormat) -> anyhow::Result<Exporter> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        cli::LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter())
            .boxed(),
        cli::LogFormat::Json => logs.json().with_filter(filter()).boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs);
    #[cfg(feature = "otlp")]
    if otlp::configured() {
        let (spans, exporter) = otlp::layer()?;
        registry.with(spans.with_filter(filter())).init();
        return Ok(Exporter {
            otlp: Some(exporter),
        });
    }
    registry.init();
    Ok(Exporter::default())
}
