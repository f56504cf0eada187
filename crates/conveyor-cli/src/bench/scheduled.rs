//! `conveyor bench --workload scheduled`: `--jobs` jobs (default 1,000,000) scheduled over the
//! next 30 days, then `--rate` jobs per second (default 10,000) for `--seconds` that run now,
//! each one's enqueue -> start latency measured as `sustained` measures it. The same paced
//! stream runs first with nothing scheduled (reported as the ceiling): jobs due now must keep
//! their latency however many jobs wait for later.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use chrono::{Duration, Utc};
use conveyor::{Engine, NewJob};

use super::paced::{self, Pace};
use super::{enqueue_in_batches, BenchResult, Workload};
use crate::output::progress_bar;

/// The queue of the jobs scheduled for later (no worker ever finds one due during the run).
const LATER_QUEUE: &str = "later";

/// The paced figure alone, then beside the scheduled backlog (its ceiling: the figure alone).
pub async fn run(
    engine: &Arc<dyn Engine>,
    backend: &str,
    jobs: usize,
    pace: Pace,
    concurrency: usize,
) -> Result<Vec<BenchResult>> {
    let alone = paced::run(engine, pace, 0, concurrency).await?;
    schedule(engine, jobs).await?;
    let beside = paced::run(engine, pace, 0, concurrency).await?;
    Ok(vec![
        BenchResult::paced(
            Workload::Scheduled,
            format!("{backend}, nothing scheduled"),
            &alone,
            None,
        ),
        BenchResult::paced(
            Workload::Scheduled,
            format!("{backend}, {jobs} scheduled over 30 days"),
            &beside,
            Some(&alone.samples),
        ),
    ])
}

/// Enqueues `jobs` no-op jobs due one after another from an hour from now to 30 days from now.
async fn schedule(engine: &Arc<dyn Engine>, jobs: usize) -> Result<()> {
    let first = Utc::now() + Duration::hours(1);
    let step_ms = (Duration::days(30) - Duration::hours(1)).num_milliseconds() / jobs.max(1) as i64;
    let next = AtomicUsize::new(0);
    let bar = progress_bar(jobs, "schedule");
    enqueue_in_batches(
        engine,
        jobs,
        || {
            let n = next.fetch_add(1, Ordering::Relaxed) as i64;
            NewJob::new("noop", serde_json::json!({}))
                .queue(LATER_QUEUE)
                .run_at(first + Duration::milliseconds(n * step_ms))
        },
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    Ok(())
}
