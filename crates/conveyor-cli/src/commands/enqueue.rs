//! `conveyor enqueue`: one job, or a batch of one JSON payload per line.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use conveyor::{Enqueued, Error, NewJob};

use super::Context;
use crate::cli::EnqueueArgs;
use crate::input::{self, Source};
use crate::output;

/// Jobs stored per transaction in batch mode.
const CHUNK: usize = 1000;

/// The options of every job of one `enqueue` call, checked before the backend is opened.
#[derive(Debug)]
struct Template {
    kind: String,
    queue: String,
    run_at: Option<DateTime<Utc>>,
    key: Option<String>,
    ordering_key: Option<String>,
    priority: i32,
    max_attempts: u32,
    timeout: Option<Duration>,
}

impl Template {
    fn new(args: &EnqueueArgs) -> Result<Self, Error> {
        let run_at = match (&args.run_in, &args.at) {
            (Some(delay), _) => Some(input::after_now("in", input::duration("in", delay)?)?),
            (None, Some(at)) => Some(input::timestamp("at", at)?),
            (None, None) => None,
        };
        let timeout = args
            .timeout
            .as_deref()
            .map(|t| input::duration("timeout", t))
            .transpose()?;
        Ok(Template {
            kind: args.kind.clone(),
            queue: args.queue.clone(),
            run_at,
            key: args.key.clone(),
            ordering_key: args.ordering_key.clone(),
            priority: args.priority,
            max_attempts: args.max_attempts,
            timeout,
        })
    }

    /// A job with `payload`; `line` (batch mode) is appended to the idempotency key.
    fn job(&self, payload: serde_json::Value, line: Option<usize>) -> NewJob {
        let mut job = NewJob::new(self.kind.clone(), payload)
            .queue(self.queue.clone())
            .priority(self.priority)
            .max_attempts(self.max_attempts);
        if let Some(at) = self.run_at {
            job = job.run_at(at);
        }
        if let Some(key) = &self.key {
            job = match line {
                Some(n) => job.idempotency_key(format!("{key}:{n}")),
                None => job.idempotency_key(key.clone()),
            };
        }
        if let Some(key) = &self.ordering_key {
            job = job.ordering_key(key.clone());
        }
        if let Some(timeout) = self.timeout {
            job = job.timeout(timeout);
        }
        job
    }
}

/// Enqueues one job (printing its id or `{"id","state","duplicate"}`) or, with `--batch`,
/// one job per line (printing one id or JSON object per line, in input order).
pub async fn enqueue(ctx: &Context, args: EnqueueArgs) -> anyhow::Result<()> {
    let template = Template::new(&args)?;
    if let Some(source) = &args.batch {
        return batch(ctx, &template, Source::batch_arg(source), args.json).await;
    }
    let payload = input::payload(args.payload.as_deref()).await?;
    let job = template.job(payload, None);
    let conveyor = ctx.open().await?;
    let enqueued = conveyor.dispatch(job).await?;
    if args.json {
        return output::json(&enqueued);
    }
    if enqueued.duplicate {
        eprintln!(
            "note: duplicate idempotency key: job {} already exists ({})",
            enqueued.id, enqueued.state
        );
    }
    output::line(enqueued.id)
}

async fn batch(
    ctx: &Context,
    template: &Template,
    source: Source,
    json: bool,
) -> anyhow::Result<()> {
    let text = source.read("batch").await?;
    let lines = input::batch_lines(&text)?;
    drop(text);
    let conveyor = ctx.open().await?;
    let limit = conveyor.engine().max_payload_bytes();
    // Every job is checked before the first chunk is stored: a bad line enqueues nothing.
    let mut jobs = Vec::with_capacity(lines.len());
    for (line, payload) in lines {
        let job = template.job(payload, Some(line));
        match job.validate(limit) {
            Ok(_) => jobs.push(job),
            Err(Error::PayloadTooLarge { size, limit }) => {
                return Err(Error::invalid(
                    "payload",
                    format!(
                        "line {line}: payload is {size} bytes, over the limit of {limit} bytes"
                    ),
                )
                .into())
            }
            Err(Error::InvalidInput { field, message }) if field == "idempotency_key" => {
                return Err(Error::invalid(field, format!("line {line}: {message}")).into())
            }
            Err(other) => return Err(other.into()),
        }
    }
    let total = jobs.len();
    let mut stored = 0;
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<NewJob> = jobs.by_ref().take(CHUNK).collect();
        let enqueued = conveyor
            .dispatch_batch(chunk)
            .await
            .with_context(|| format!("after {stored} of {total} jobs were enqueued"))?;
        stored += enqueued.len();
        output::write(&render(&enqueued, json)?)?;
    }
    tracing::info!(jobs = total, "batch enqueued");
    Ok(())
}

fn render(enqueued: &[Enqueued], json: bool) -> anyhow::Result<String> {
    let mut out = String::new();
    for e in enqueued {
        if json {
            out.push_str(&serde_json::to_string(e).context("encoding JSON output")?);
        } else {
            out.push_str(&e.id.to_string());
        }
        out.push('\n');
    }
    Ok(out)
}
