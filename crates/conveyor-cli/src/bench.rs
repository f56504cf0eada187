//! `conveyor bench`: a built-in load generator. Each workload runs on fresh storage (SQLite
//! files beside the backend's database, or Kafka topics with a fresh prefix) and is compared
//! with the raw storage ceiling measured in the same run.

mod kafka;
mod sqlite;
mod sqlite_ceiling;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conveyor::{handler_fn, Engine, NewJob, Outcome, Registry, Worker, WorkerConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

/// Which load to generate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Enqueue N no-op jobs, then drain them with one worker.
    BurnDown,
    /// N sequential enqueue -> handler start round trips on an idle worker.
    Latency,
}

/// Options of `conveyor bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run (repeatable); default: burn-down and latency.
    #[arg(long, value_enum)]
    pub workload: Vec<Workload>,
    /// Jobs per workload (default: 100000 for burn-down, 2000 for latency).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Worker concurrency for burn-down (also the SQLite ceiling loop's batch size).
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Print one JSON object per workload on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One workload's figures (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct BenchResult {
    workload: &'static str,
    backend: String,
    jobs: usize,
    seconds: f64,
    jobs_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    ceiling_jobs_per_s: f64,
    ratio_to_ceiling: f64,
    enqueue_jobs_per_s: Option<f64>,
    peak_rss_mb: Option<f64>,
}

/// Runs the chosen workloads on the engine `backend_url` names.
pub async fn run(backend_url: &str, args: BenchArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("invalid concurrency: must be at least 1");
    }
    let workloads = if args.workload.is_empty() {
        vec![Workload::BurnDown, Workload::Latency]
    } else {
        args.workload.clone()
    };
    for workload in workloads {
        let jobs = args.jobs.unwrap_or(match workload {
            Workload::BurnDown => 100_000,
            Workload::Latency => 2_000,
        });
        let result = if backend_url.starts_with("kafka://") {
            kafka::run(backend_url, workload, jobs, args.concurrency).await?
        } else {
            sqlite::run(backend_url, workload, jobs, args.concurrency).await?
        };
        report(&result, args.json)?;
    }
    Ok(())
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// Enqueues `jobs` no-op jobs in batches of 1000; returns jobs per second.
async fn enqueue_noops(engine: &Arc<dyn Engine>, jobs: usize) -> Result<f64> {
    let bar = progress(jobs, "enqueue");
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n)
            .map(|_| NewJob::new("noop", serde_json::json!({})))
            .collect();
        engine.enqueue_batch(batch).await?;
        left -= n;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// Drains `jobs` no-op jobs with one worker; returns the seconds until the worker stored the
/// last outcome (it stops once every job ran, and `run` returns after the final report).
async fn drain(engine: &Arc<dyn Engine>, jobs: usize, concurrency: usize) -> Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let mut registry = Registry::new();
    registry.register(handler_fn("noop", move |_ctx| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Outcome::Complete }
    }));
    let worker = Worker::new(
        engine.clone(),
        registry,
        WorkerConfig {
            concurrency,
            ..WorkerConfig::default()
        },
    );
    let bar = progress(jobs, "drain");
    let watcher = bar.clone();
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let first_seen = first.clone();
    worker
        .run(async move {
            while done.load(Ordering::Relaxed) < jobs {
                if done.load(Ordering::Relaxed) > 0 {
                    first_seen.get_or_init(Instant::now);
                }
                watcher.set_position(done.load(Ordering::Relaxed) as u64);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
    bar.finish_and_clear();
    // Timed from the first job done (within a millisecond), so a Kafka group join before it
    // does not count as drain time.
    Ok(first.get().map_or(0.0, |t| t.elapsed().as_secs_f64()))
}

/// `jobs` sequential round trips: enqueue one job, wait until its handler starts. Returns the
/// sorted latencies in milliseconds and the total seconds.
async fn round_trips(engine: &Arc<dyn Engine>, jobs: usize) -> Result<(Vec<f64>, f64)> {
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<Instant>();
    let mut registry = Registry::new();
    registry.register(handler_fn("bench_latency", move |_ctx| {
        let _ = started_tx.send(Instant::now());
        async { Outcome::Complete }
    }));
    let worker = Worker::new(
        engine.clone(),
        registry,
        WorkerConfig {
            concurrency: 4,
            ..WorkerConfig::default()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    // The first job also waits for the worker to join (a Kafka group join takes seconds).
    engine
        .enqueue(NewJob::new("bench_latency", serde_json::json!({})))
        .await?;
    tokio::time::timeout(Duration::from_secs(60), started_rx.recv())
        .await
        .context("the warm-up job did not start within 60 s")?;
    let bar = progress(jobs, "latency");
    let mut samples = Vec::with_capacity(jobs);
    let all = Instant::now();
    for _ in 0..jobs {
        let t0 = Instant::now();
        engine
            .enqueue(NewJob::new("bench_latency", serde_json::json!({})))
            .await?;
        let at = tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
            .await
            .context("a job did not start within 10 s")?
            .context("worker stopped")?;
        samples.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        bar.inc(1);
    }
    let seconds = all.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let _ = stop_tx.send(());
    running.await??;
    samples.sort_by(f64::total_cmp);
    Ok((samples, seconds))
}

impl BenchResult {
    fn burn_down(
        backend: String,
        jobs: usize,
        seconds: f64,
        enqueue_rate: f64,
        ceiling: f64,
    ) -> Self {
        let rate = jobs as f64 / seconds;
        BenchResult {
            workload: "burn-down",
            backend,
            jobs,
            seconds,
            jobs_per_s: rate,
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
            ceiling_jobs_per_s: ceiling,
            ratio_to_ceiling: rate / ceiling,
            enqueue_jobs_per_s: Some(enqueue_rate),
            peak_rss_mb: peak_rss_mb(),
        }
    }

    fn latency(backend: String, samples: &[f64], seconds: f64, ceiling: f64) -> Self {
        let rate = samples.len() as f64 / seconds;
        BenchResult {
            workload: "latency",
            backend,
            jobs: samples.len(),
            seconds,
            jobs_per_s: rate,
            p50_ms: Some(percentile(samples, 0.50)),
            p99_ms: Some(percentile(samples, 0.99)),
            max_ms: samples.last().copied(),
            ceiling_jobs_per_s: ceiling,
            ratio_to_ceiling: rate / ceiling,
            enqueue_jobs_per_s: None,
            peak_rss_mb: peak_rss_mb(),
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Peak resident memory of this process (Linux), for the "queue is not loaded into memory"
/// target.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn report(result: &BenchResult, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(result)?);
        return Ok(());
    }
    println!(
        "{} on {}: {} jobs in {:.2} s",
        result.workload, result.backend, result.jobs, result.seconds
    );
    println!("  jobs/s            {:>12.0}", result.jobs_per_s);
    if let (Some(p50), Some(p99), Some(max)) = (result.p50_ms, result.p99_ms, result.max_ms) {
        println!("  latency ms        p50 {p50:.3}  p99 {p99:.3}  max {max:.3}");
    }
    if let Some(rate) = result.enqueue_jobs_per_s {
        println!("  enqueue jobs/s    {rate:>12.0}");
    }
    println!(
        "  raw ceiling /s    {:>12.0}  (ratio {:.2})",
        result.ceiling_jobs_per_s, result.ratio_to_ceiling
    );
    if let Some(rss) = result.peak_rss_mb {
        println!("  peak rss          {rss:>9.1} MB");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
