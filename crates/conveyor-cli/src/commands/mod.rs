//! The verbs. [`run`] resolves the backend and the configuration file, then dispatches.

mod config;
mod cron;
mod dlq;
mod enqueue;
mod jobs;
mod migrate;
mod serve;
mod workers;

use std::future::Future;
use std::pin::Pin;

use conveyor::Conveyor;

use crate::cli::{Cli, Command, WorkerFlags};
use crate::config::{Config, IngestSection};
use crate::failure::Interrupted;

/// What every verb needs: the backend URL and the configuration file.
pub struct Context {
    /// The backend URL: `--backend`, then `CONVEYOR_BACKEND`, then the file's `backend`, then
    /// `sqlite://conveyor.db`.
    pub backend_url: String,
    /// The configuration file (defaults when there is none).
    pub config: Config,
}

impl Context {
    /// Loads the configuration file and resolves the backend URL.
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        let config = Config::load(cli.config.as_deref())?;
        let backend_url = cli
            .backend
            .clone()
            .or_else(|| config.file.backend.clone())
            .unwrap_or_else(|| conveyor::DEFAULT_BACKEND.to_string());
        Ok(Context {
            backend_url,
            config,
        })
    }

    /// Opens the backend (creating and migrating a SQLite file, or creating Kafka topics, if
    /// needed).
    pub async fn open(&self) -> anyhow::Result<Conveyor> {
        Ok(Conveyor::connect(&self.backend_url).await?)
    }

    /// Opens the backend for a worker: on Kafka with its ingest topics (the file's
    /// `[[ingest]]` entries, then `--ingest`) and the Go worker server's variables
    /// (`KAFKA_JOB_TOPIC`, `KAFKA_JOB_CONSUMER_GROUP`).
    pub async fn open_worker(&self, flags: &WorkerFlags) -> anyhow::Result<Conveyor> {
        let mut ingest: Vec<String> = self
            .config
            .file
            .ingest
            .iter()
            .map(IngestSection::flag_value)
            .collect();
        ingest.extend(flags.ingest.iter().cloned());
        let url = worker_url(
            &self.backend_url,
            &ingest,
            std::env::var("KAFKA_JOB_TOPIC").ok(),
            std::env::var("KAFKA_JOB_CONSUMER_GROUP").ok(),
        )?;
        Ok(Conveyor::connect(&url).await?)
    }
}

/// The backend URL with the worker's ingest entries and group as Kafka URL options.
fn worker_url(
    base: &str,
    ingest: &[String],
    job_topic: Option<String>,
    group: Option<String>,
) -> Result<String, conveyor::Error> {
    if !base.starts_with("kafka://") {
        if !ingest.is_empty() {
            return Err(conveyor::Error::invalid(
                "ingest",
                "ingest topics need a kafka:// backend",
            ));
        }
        return Ok(base.to_string());
    }
    let mut options = Vec::new();
    for entry in ingest {
        let (topic, format) = entry
            .split_once('=')
            .filter(|(t, f)| !t.is_empty() && !f.is_empty())
            .ok_or_else(|| {
                conveyor::Error::invalid("ingest", format!("{entry:?} is not TOPIC=FORMAT"))
            })?;
        options.push(format!("ingest={topic}:{format}"));
    }
    options.extend(
        job_topic
            .filter(|t| !t.is_empty())
            .map(|t| format!("ingest={t}:event")),
    );
    options.extend(
        group
            .filter(|g| !g.is_empty())
            .map(|g| format!("group={g}")),
    );
    let mut url = base.to_string();
    for option in options {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&option);
    }
    Ok(url)
}

/// A verb that stops at once on a signal.
type Admin<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Runs the verb `cli` names. `serve` and `worker` drain gracefully when `shutdown` resolves;
/// the other verbs stop at once with an [`Interrupted`] error.
pub async fn run(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ctx = Context::new(&cli)?;
    let ctx = &ctx;
    let admin: Admin<'_> = match cli.command {
        Command::Serve(args) => return serve::serve(ctx, args, shutdown).await,
        Command::Worker(args) => return serve::worker(ctx, args, shutdown).await,
        Command::Enqueue(args) => Box::pin(enqueue::enqueue(ctx, args)),
        Command::Job(args) => Box::pin(jobs::job(ctx, args)),
        Command::Cancel(args) => Box::pin(jobs::cancel(ctx, args)),
        Command::Stats(args) => Box::pin(jobs::stats(ctx, args)),
        Command::Workers(args) => Box::pin(workers::run(ctx, args)),
        Command::Purge(args) => Box::pin(jobs::purge(ctx, args)),
        Command::Cleanup(args) => Box::pin(jobs::cleanup(ctx, args)),
        Command::Dlq(command) => Box::pin(dlq::run(ctx, command)),
        Command::Cron(command) => Box::pin(cron::run(ctx, command)),
        Command::Config(command) => Box::pin(config::run(ctx, command)),
        Command::Replay(args) => Box::pin(jobs::replay(ctx, args)),
        Command::Migrate(args) => Box::pin(migrate::migrate(ctx, args)),
        Command::Bench(args) => Box::pin(crate::bench::run(&ctx.backend_url, args)),
    };
    tokio::select! {
        result = admin => result,
        () = shutdown => Err(Interrupted.into()),
    }
}

#[cfg(test)]
mod worker_url_tests {
    use super::worker_url;

    #[test]
    fn kafka_urls_get_ingest_and_group_options() {
        let url = worker_url(
            "kafka://h:1",
            &["orders=auto".into()],
            Some("job-events".into()),
            Some("job-workers".into()),
        );
        assert_eq!(
            url.unwrap(),
            "kafka://h:1?ingest=orders:auto&ingest=job-events:event&group=job-workers"
        );
        let url = worker_url("kafka://h:1?prefix=x.", &[], None, None);
        assert_eq!(url.unwrap(), "kafka://h:1?prefix=x.");
    }

    #[test]
    fn bad_or_misplaced_ingest_is_an_input_error() {
        assert!(worker_url("kafka://h:1", &["orders".into()], None, None)
            .unwrap_err()
            .is_input_error());
        assert!(
            worker_url("sqlite://x.db", &["orders=event".into()], None, None)
                .unwrap_err()
                .is_input_error()
        );
        assert_eq!(
            worker_url("sqlite://x.db", &[], Some("t".into()), None).unwrap(),
            "sqlite://x.db"
        );
    }
}
