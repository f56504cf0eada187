//! The verbs. [`run`] resolves the backend and the configuration file, then dispatches.

mod cron;
mod dlq;
mod enqueue;
mod jobs;
mod serve;

use std::future::Future;
use std::pin::Pin;

use conveyor::Conveyor;

use crate::cli::{Cli, Command};
use crate::config::Config;
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
        Command::Purge(args) => Box::pin(jobs::purge(ctx, args)),
        Command::Cleanup(args) => Box::pin(jobs::cleanup(ctx, args)),
        Command::Dlq(command) => Box::pin(dlq::run(ctx, command)),
        Command::Cron(command) => Box::pin(cron::run(ctx, command)),
        Command::Bench(args) => Box::pin(crate::bench::run(&ctx.backend_url, args)),
    };
    tokio::select! {
        result = admin => result,
        () = shutdown => Err(Interrupted.into()),
    }
}
