//! `conveyor bench --workload hot-key`: one ordering key's backlog of `--jobs` jobs, with a
//! tenth as many unkeyed jobs in another queue beside it. A key runs one job at a time, but a
//! job of it should cost one fetch and one completion, and the jobs beside it must not wait for
//! it. Reports the key's drain rate, and the unkeyed jobs' rate beside it against the rate of
//! the same unkeyed jobs alone (measured first, in the same run).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use conveyor::{handler_fn, Engine, NewJob, Outcome, Registry};

use super::{enqueue_in_batches, Background, BenchResult, Workload};
use crate::output::progress_bar;

const HOT_QUEUE: &str = "hot";
const BESIDE_QUEUE: &str = "beside";
/// Longest wait for one phase; a wedged key fails the bench instead of hanging it.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

/// Jobs done per queue.
#[derive(Default)]
struct Done {
    hot: AtomicUsize,
    beside: AtomicUsize,
}

/// The keyed figure (no ceiling) and the unkeyed figure (its ceiling: the same jobs alone).
pub async fn run(
    engine: &Arc<dyn Engine>,
    backend: &str,
    jobs: usize,
    concurrency: usize,
) -> Result<Vec<BenchResult>> {
    let beside = (jobs / 10).max(1);
    let done = Arc::new(Done::default());
    let alone = {
        enqueue(engine, beside, BESIDE_QUEUE, None).await?;
        let worker = Background::start(engine, registry(&done), concurrency);
        let seconds = wait(&done.beside, beside, Instant::now(), "alone").await;
        worker.stop().await?;
        beside as f64 / seconds?
    };
    done.beside.store(0, Ordering::Relaxed);
    enqueue(engine, jobs, HOT_QUEUE, Some("hot")).await?;
    enqueue(engine, beside, BESIDE_QUEUE, None).await?;
    let started = Instant::now();
    let worker = Background::start(engine, registry(&done), concurrency);
    let beside_seconds = wait(&done.beside, beside, started, "beside").await?;
    let hot_seconds = wait(&done.hot, jobs, started, "hot key").await?;
    worker.stop().await?;
    let hot = BenchResult::empty(
        Workload::HotKey,
        format!("{backend}, one key"),
        jobs,
        hot_seconds,
    );
    let mut unkeyed = BenchResult::empty(
        Workload::HotKey,
        format!("{backend}, unkeyed beside it"),
        beside,
        beside_seconds,
    );
    unkeyed.ceiling_jobs_per_s = Some(alone);
    unkeyed.ratio_to_ceiling = Some(unkeyed.jobs_per_s / alone);
    Ok(vec![hot, unkeyed])
}

async fn enqueue(
    engine: &Arc<dyn Engine>,
    jobs: usize,
    queue: &str,
    key: Option<&str>,
) -> Result<()> {
    let bar = progress_bar(jobs, "enqueue");
    enqueue_in_batches(
        engine,
        jobs,
        || {
            let job = NewJob::new("noop", serde_json::json!({})).queue(queue);
            match key {
                Some(key) => job.ordering_key(key),
                None => job,
            }
        },
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    Ok(())
}

fn registry(done: &Arc<Done>) -> Registry {
    let done = done.clone();
    let mut registry = Registry::new();
    registry.register(handler_fn("noop", move |ctx| {
        let counter = if ctx.job().queue == HOT_QUEUE {
            &done.hot
        } else {
            &done.beside
        };
        counter.fetch_add(1, Ordering::Relaxed);
        async { Outcome::Complete }
    }));
    registry
}

/// Seconds from `started` until `counter` reached `jobs`.
pub(super) async fn wait(
    counter: &AtomicUsize,
    jobs: usize,
    started: Instant,
    what: &str,
) -> Result<f64> {
    let bar = progress_bar(jobs, what);
    while counter.load(Ordering::Relaxed) < jobs {
        if started.elapsed() > PHASE_LIMIT {
            bail!(
                "bench: {what}: {} of {jobs} jobs done after {PHASE_LIMIT:?}",
                counter.load(Ordering::Relaxed)
            );
        }
        bar.set_position(counter.load(Ordering::Relaxed) as u64);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}
