//! The command line, as clap types. Parsing only: the verbs live in [`crate::commands`].

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `conveyor`: background jobs on an embedded SQLite file (server, worker and admin verbs).
///
/// Machine output goes to stdout, logs to stderr. Exit codes: 0 success, 1 runtime failure
/// (including "not found"), 2 usage error or bad input.
#[derive(Parser, Debug)]
#[command(
    name = "conveyor",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success, 1 runtime failure (including \"not found\"), 2 usage error or bad input."
)]
pub struct Cli {
    /// Backend URL, e.g. `sqlite://conveyor.db?synchronous=normal` (default: the `backend` key of
    /// conveyor.toml, then `sqlite://conveyor.db`).
    #[arg(
        long,
        global = true,
        env = "CONVEYOR_BACKEND",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub backend: Option<String>,

    /// Configuration file (default: ./conveyor.toml when it exists).
    #[arg(long, global = true, env = "CONVEYOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log lines on stderr as text, or as one JSON object per line (for log shippers).
    #[arg(
        long,
        global = true,
        env = "CONVEYOR_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// Every verb of the `conveyor` binary.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run workers and the cron scheduler until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Run workers only (no cron scheduler, no HTTP) until SIGINT or SIGTERM.
    Worker(WorkerArgs),
    /// Enqueue one job (or a batch, one JSON payload per line).
    Enqueue(EnqueueArgs),
    /// Show one job: state, attempts, run time, last error, progress.
    Job(JobArgs),
    /// Cancel a job that has not finished.
    Cancel(CancelArgs),
    /// Job counts per queue and state.
    Stats(StatsArgs),
    /// The connected workers (heard from within a few heartbeats) and what each runs.
    Workers(WorkersArgs),
    /// The dead-letter list.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Recurring (cron) schedules.
    #[command(subcommand)]
    Cron(CronCommand),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Remove every job of a queue that waits for its first attempt (scheduled or available,
    /// never started). Jobs that already ran an attempt and wait for the next one (retryable,
    /// rescued from a dead worker, retried from the dead-letter list) are kept: cancel those by id.
    Purge(PurgeArgs),
    /// Delete completed and cancelled jobs that finished long enough ago.
    Cleanup(CleanupArgs),
    /// Run a queue's jobs again from a point in time: every job enqueued since then that came
    /// due (completed, dead, cancelled or waiting) is enqueued again with a new id that names
    /// the job it re-runs (`replay_of`). Idempotency keys are not carried over.
    Replay(ReplayArgs),
    /// Move every waiting, scheduled, retrying and dead job and every cron entry from one
    /// backend to another (e.g. from the embedded SQLite file to Kafka). Stop the source's
    /// workers first. Safe to interrupt and run again: each job arrives once.
    Migrate(MigrateArgs),
    /// Built-in load generator: jobs/s and latency percentiles.
    Bench(crate::bench::BenchArgs),
}

impl Command {
    /// The log level used when `RUST_LOG` is not set: `info` for long-running verbs, `warn`
    /// for admin verbs so their stderr stays quiet.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Worker(_) => "info",
            _ => "warn",
        }
    }
}

/// Worker settings shared by `serve` and `worker`; they override conveyor.toml's `[worker]`.
#[derive(Args, Debug, Clone, Default)]
pub struct WorkerFlags {
    /// Queues to serve, comma separated (default: every queue).
    #[arg(long, value_delimiter = ',', value_name = "a,b")]
    pub queues: Vec<String>,
    /// Most jobs running at once (the Go worker server's `KAFKA_WORKER_POOL_SIZE` works too).
    #[arg(long, env = "KAFKA_WORKER_POOL_SIZE", value_name = "N")]
    pub concurrency: Option<NonZeroUsize>,
    /// Kafka only: also consume TOPIC, whose records plain producers write in FORMAT (`event`,
    /// `schedule-request`, `auto`, `conveyor`). Repeatable. `KAFKA_JOB_TOPIC` adds an `event`
    /// ingest, as the Go worker server reads it.
    #[arg(long, value_name = "TOPIC=FORMAT")]
    pub ingest: Vec<String>,
}

/// Arguments of `conveyor serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the HTTP API and dashboard (default 127.0.0.1:7070; beyond loopback it
    /// needs CONVEYOR_TOKEN).
    #[arg(long, env = "CONVEYOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// The address users reach the server at, behind a reverse proxy that rewrites `Host`
    /// (`https://jobs.example.com`): browsers' requests from it pass the same-origin check.
    #[arg(long, env = "CONVEYOR_PUBLIC_ORIGIN", value_name = "URL")]
    pub public_origin: Option<String>,
    /// Worker settings.
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// Arguments of `conveyor worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Worker settings.
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// Arguments of `conveyor enqueue`.
#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// Handler kind, e.g. `send_email` (built-ins: noop, sleep, fail, echo).
    pub kind: String,
    /// JSON payload, `@FILE` to read it from a file, or `-` for stdin (default: `{}`).
    #[arg(value_name = "JSON|@FILE|-")]
    pub payload: Option<String>,
    /// Enqueue one job per non-blank line of FILE (or stdin: `-`, the default), each line a
    /// JSON payload. Every line is checked before anything is stored. With `--key K`, line N
    /// gets the key `K:N`, so re-running the same batch enqueues nothing twice.
    #[arg(
        long,
        value_name = "FILE|-",
        num_args = 0..=1,
        default_missing_value = "-",
        conflicts_with = "payload"
    )]
    pub batch: Option<String>,
    /// Queue name.
    #[arg(long, default_value = conveyor::DEFAULT_QUEUE, value_name = "Q")]
    pub queue: String,
    /// Run after this delay, e.g. `90s`, `15m`, `1h 30m`.
    #[arg(long = "in", value_name = "DUR")]
    pub run_in: Option<String>,
    /// Run at this time (RFC 3339, e.g. `2030-01-01T09:00:00Z`).
    #[arg(long, value_name = "RFC3339", conflicts_with = "run_in")]
    pub at: Option<String>,
    /// Idempotency key: at most one job per key is stored.
    #[arg(long, value_name = "IDEMPOTENCY_KEY")]
    pub key: Option<String>,
    /// Jobs sharing an ordering key run one at a time, in enqueue order.
    #[arg(long, value_name = "K")]
    pub ordering_key: Option<String>,
    /// Priority; higher runs first among due jobs of a queue.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "P"
    )]
    pub priority: i32,
    /// Attempts before the job goes to the dead-letter list.
    #[arg(long, default_value_t = conveyor::DEFAULT_MAX_ATTEMPTS, value_name = "N")]
    pub max_attempts: u32,
    /// Per-attempt timeout, e.g. `30s` (default: the worker's).
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// Print `{"id","state","duplicate"}` instead of the bare id.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `conveyor job`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job id.
    pub id: String,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `conveyor cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The job id.
    pub id: String,
    /// Print `{"id","state"}` instead of the state.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `conveyor stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print `{"queues":[...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `conveyor workers`.
#[derive(Args, Debug)]
pub struct WorkersArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `conveyor dlq ...`.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead jobs, most recent first.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Most entries to show.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Put a dead job (or every dead job) back with a fresh set of attempts.
    Retry {
        /// The dead job's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Retry every dead job.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every dead job.
    Purge {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `conveyor config ...`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration (handlers' programs included) and print the effective one,
    /// defaults filled in and secrets redacted; exit 2 naming the problem otherwise.
    Check {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// `conveyor cron ...`.
#[derive(Subcommand, Debug)]
pub enum CronCommand {
    /// List the schedules.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add or replace a schedule.
    Add {
        /// Unique name of the schedule.
        name: String,
        /// Cron expression in UTC: 5 fields, or 6 with seconds first.
        expr: String,
        /// Kind of the jobs it enqueues.
        kind: String,
        /// JSON payload of those jobs, `@FILE` or `-` (default: `{}`).
        #[arg(value_name = "JSON|@FILE|-")]
        payload: Option<String>,
        /// Queue of those jobs.
        #[arg(long, default_value = conveyor::DEFAULT_QUEUE, value_name = "Q")]
        queue: String,
        /// Print the stored entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (exit 1 when there is none of that name).
    Remove {
        /// The schedule's name.
        name: String,
    },
}

/// Arguments of `conveyor purge`.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// The queue to empty.
    pub queue: String,
    /// Print `{"queue","purged"}` instead of the count.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `conveyor cleanup`.
#[derive(Args, Debug)]
pub struct CleanupArgs {
    /// Delete jobs that finished more than this long ago, e.g. `7d`.
    #[arg(long, value_name = "DUR")]
    pub older_than: String,
    /// Print `{"deleted":N}` instead of the count.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `conveyor replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The queue whose jobs run again.
    pub queue: String,
    /// From when: an RFC 3339 time (`2030-01-01T09:00:00Z`) or a duration ago (`2h`).
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// Print `{"queue","replayed","ids"}` instead of the count.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

/// Arguments of `conveyor migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The backend to move jobs out of (default: `--backend`), e.g. `sqlite://conveyor.db`.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The backend to move them into, e.g. `kafka://127.0.0.1:9092`.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Jobs per batch: each batch is stored by the target, then removed from the source.
    #[arg(long, default_value_t = NonZeroUsize::new(conveyor::DEFAULT_BATCH).unwrap_or(NonZeroUsize::MIN), value_name = "N")]
    pub batch: NonZeroUsize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
