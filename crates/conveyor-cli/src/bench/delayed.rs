//! The delayed workload: `jobs` delayed jobs due evenly over `seconds`, all enqueued up front
//! (a little ahead of the first one's time); each start is compared with its job's time.
//! Lateness is what a scheduler is judged by, and a start before the time is a bug: the
//! result counts early starts, which must be 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::Utc;
use conveyor::{handler_fn, Engine, JobId, NewJob, Outcome, Registry};
use serde::Deserialize;

use super::Background;
use crate::output::progress_bar as progress;

/// How long after the enqueue starts the first job is due: the whole batch is enqueued by
/// then on any engine this bench runs on (10k jobs take well under a second).
const LEAD: Duration = Duration::from_secs(3);

/// What the delayed workload measured.
pub struct Delayed {
    /// Lateness of each start (ms after its job's time; negative: early), sorted.
    pub lateness: Vec<f64>,
    /// Starts before their job's time (at millisecond precision, as times are stored).
    pub early: usize,
    /// Seconds from the first job's time to the last start.
    pub seconds: f64,
}

/// Per job that started: (1 if it started early, else 0; lateness in ms).
type Starts = Arc<Mutex<HashMap<JobId, (i64, f64)>>>;

#[derive(Deserialize)]
struct Due {
    due_ms: i64,
}

/// Waits until a first delayed job ran: the worker is ready (a Kafka worker's groups take
/// seconds to form), so the figures measure the scheduler, not the start-up.
async fn warm_up(engine: &Arc<dyn Engine>, starts: &Starts) -> Result<()> {
    let due_ms = Utc::now().timestamp_millis() + 200;
    let at = chrono::DateTime::from_timestamp_millis(due_ms).unwrap_or_default();
    let job = NewJob::new("bench_delayed", serde_json::json!({ "due_ms": due_ms })).run_at(at);
    let id = engine.enqueue(job).await?.id;
    for _ in 0..600 {
        if starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .is_some()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the warm-up delayed job did not start within 60 s")
}

/// Runs the workload on `engine` with a worker of `concurrency`.
pub async fn run(
    engine: &Arc<dyn Engine>,
    jobs: usize,
    seconds: f64,
    concurrency: usize,
) -> Result<Delayed> {
    let starts: Starts = Arc::default();
    let record = starts.clone();
    let mut registry = Registry::new();
    registry.register(handler_fn("bench_delayed", move |ctx| {
        let now_us = Utc::now().timestamp_micros();
        if let Ok(due) = ctx.payload::<Due>() {
            let lateness_ms = (now_us - due.due_ms * 1000) as f64 / 1000.0;
            let early = now_us / 1000 < due.due_ms;
            let mut starts = record.lock().unwrap_or_else(|e| e.into_inner());
            // The first start of a job counts (a second one would be a re-run).
            starts
                .entry(ctx.id())
                .or_insert((i64::from(early), lateness_ms));
        }
        async { Outcome::Complete }
    }));
    let worker = Background::start(engine, registry, concurrency);
    warm_up(engine, &starts).await?;
    let first_due = Utc::now().timestamp_millis() + LEAD.as_millis() as i64;
    let spacing = seconds * 1000.0 / jobs.max(1) as f64;
    let bar = progress(jobs, "enqueue");
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|i| {
                let due_ms = first_due + (*i as f64 * spacing) as i64;
                let at = chrono::DateTime::from_timestamp_millis(due_ms).unwrap_or_default();
                NewJob::new("bench_delayed", serde_json::json!({ "due_ms": due_ms })).run_at(at)
            })
            .collect();
        engine.enqueue_batch(batch).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let bar = progress(jobs, "started");
    let deadline = first_due as f64 + seconds * 1000.0 + 60_000.0;
    loop {
        let n = starts.lock().unwrap_or_else(|e| e.into_inner()).len();
        bar.set_position(n as u64);
        if n >= jobs {
            break;
        }
        if Utc::now().timestamp_millis() as f64 > deadline {
            worker.stop().await?;
            bail!("{n} of {jobs} delayed jobs started, the last due {seconds} s after the first, then none for 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    let elapsed = (Utc::now().timestamp_millis() - first_due) as f64 / 1000.0;
    worker.stop().await?;
    let starts = starts.lock().unwrap_or_else(|e| e.into_inner());
    let mut lateness: Vec<f64> = starts.values().map(|(_, l)| *l).collect();
    lateness.sort_by(f64::total_cmp);
    Ok(Delayed {
        lateness,
        early: starts.values().map(|(e, _)| *e as usize).sum(),
        seconds: elapsed,
    })
}
