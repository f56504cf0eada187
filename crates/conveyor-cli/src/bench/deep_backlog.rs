//! `conveyor bench --workload deep-backlog`: how fast workers take jobs off a queue with
//! `--jobs` (default 1,000,000) waiting, against the same with 50,000 waiting (reported as the
//! ceiling), in the same run. A fetch must cost the same however deep the backlog is: both
//! phases drain the first 50,000 jobs of their backlog with one worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use conveyor::{handler_fn, Engine, NewJob, Outcome, Registry};

use super::hot_key::wait;
use super::{enqueue_in_batches, Background, BenchResult, Workload};
use crate::output::progress_bar;

/// Jobs each phase takes off its backlog.
const SAMPLE: usize = 50_000;

/// The deep figure, with the shallow one as its ceiling.
pub async fn run(
    engine: &Arc<dyn Engine>,
    backend: &str,
    jobs: usize,
    concurrency: usize,
) -> Result<Vec<BenchResult>> {
    let sample = SAMPLE.min(jobs);
    let shallow = drain_first(engine, "shallow", sample, sample, concurrency).await?;
    let deep = drain_first(engine, "deep", jobs, sample, concurrency).await?;
    let mut result = BenchResult::empty(
        Workload::DeepBacklog,
        format!("{backend}, {sample} taken with {jobs} waiting"),
        sample,
        deep,
    );
    let ceiling = sample as f64 / shallow;
    result.ceiling_jobs_per_s = Some(ceiling);
    result.ratio_to_ceiling = Some(result.jobs_per_s / ceiling);
    Ok(vec![result])
}

/// Enqueues `backlog` jobs in `queue`, then times one worker taking the first `take` of them.
async fn drain_first(
    engine: &Arc<dyn Engine>,
    queue: &str,
    backlog: usize,
    take: usize,
    concurrency: usize,
) -> Result<f64> {
    let bar = progress_bar(backlog, "enqueue");
    enqueue_in_batches(
        engine,
        backlog,
        || NewJob::new("noop", serde_json::json!({})).queue(queue),
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let wanted = queue.to_string();
    let mut registry = Registry::new();
    registry.register(handler_fn("noop", move |ctx| {
        if ctx.job().queue == wanted {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        async { Outcome::Complete }
    }));
    let started = Instant::now();
    let worker = Background::start_on(engine, registry, concurrency, vec![queue.to_string()]);
    let seconds = wait(&done, take, started, queue).await;
    worker.stop().await?;
    seconds
}
