//! `conveyor config check`: the effective configuration, checked as `serve` would at start-up
//! (handlers' programs found), defaults filled in and secrets redacted.

use serde::Serialize;

use super::Context;
use crate::cli::ConfigCommand;
use crate::handlers::{self, EffectiveHandler};

#[derive(Serialize)]
struct Effective {
    file: String,
    backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    worker: Worker,
    retry: Retry,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cron: Vec<toml::Table>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    handlers: Vec<EffectiveHandler>,
}

#[derive(Serialize)]
struct Worker {
    concurrency: usize,
    queues: Vec<String>,
    poll_interval: String,
    shutdown_grace: String,
    default_timeout: String,
}

#[derive(Serialize)]
struct Retry {
    base: String,
    max: String,
    jitter: f64,
}

/// Runs a `conveyor config` verb.
pub async fn run(ctx: &Context, command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { json } = command;
    let config = ctx.config.worker_config(&[], None)?;
    let human = |d| humantime::format_duration(d).to_string();
    let effective = Effective {
        file: ctx
            .config
            .path
            .as_ref()
            .map_or_else(|| "(none: defaults)".into(), |p| p.display().to_string()),
        backend: handlers::redact_url(&ctx.backend_url),
        listen: ctx.config.file.listen.clone(),
        worker: Worker {
            concurrency: config.concurrency,
            queues: config.queues.clone(),
            poll_interval: human(config.poll_interval),
            shutdown_grace: human(config.shutdown_grace),
            default_timeout: human(config.default_timeout),
        },
        retry: Retry {
            base: human(config.backoff.base),
            max: human(config.backoff.max),
            jitter: config.backoff.jitter,
        },
        cron: ctx.config.cron_entries().iter().map(cron_table).collect(),
        handlers: handlers::effective(
            &ctx.config.file.handlers,
            &ctx.config.base_dir(),
            config.default_timeout,
        )?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&effective)?);
    } else {
        print!("{}", toml::to_string(&effective)?);
    }
    Ok(())
}

fn cron_table(entry: &conveyor::CronEntry) -> toml::Table {
    let mut table = toml::Table::new();
    table.insert("name".into(), entry.name.clone().into());
    table.insert("expr".into(), entry.expr.clone().into());
    table.insert("kind".into(), entry.kind.clone().into());
    table.insert("queue".into(), entry.queue.clone().into());
    table.insert("payload".into(), entry.payload.to_string().into());
    table
}
