//! `conveyor bench`: a built-in load generator. Each workload runs on fresh storage (SQLite
//! files beside the backend's database, or Kafka topics with a fresh prefix) and is compared
//! with the raw storage ceiling measured in the same run.

mod deep_backlog;
mod delayed;
mod fleet;
mod hot_key;
mod http;
mod kafka;
mod paced;
mod pool;
mod scheduled;
mod sqlite;
mod sqlite_ceiling;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conveyor::{handler_fn, Engine, NewJob, Outcome, Registry, Worker, WorkerConfig};
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::mpsc;

/// Which load to generate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Enqueue N no-op jobs, then drain them with one worker.
    BurnDown,
    /// N sequential enqueue -> handler start round trips on an idle worker.
    Latency,
    /// `--rate` no-op jobs per second for `--seconds`; enqueue -> start latency measured from
    /// each job's intended send time.
    Sustained,
    /// `--jobs` jobs that fail twice (200/400 ms backoff) with healthy jobs at `--rate` beside
    /// them for `--seconds`; the healthy jobs' latency is reported.
    RetryStorm,
    /// `--jobs` delayed jobs due evenly over `--seconds`; lateness of each start after its
    /// time, and the count of early starts (must be 0).
    Delayed,
    /// `--jobs` jobs (default 50000) through a pool of 2 worker processes with a trivial
    /// Python and a trivial PHP handler, beside the built-in `noop` figure of the same run
    /// (reported as the ceiling).
    Pool,
    /// `--jobs` jobs (default 20000) of one ordering key, and a tenth as many unkeyed jobs in
    /// another queue beside them: the key's drain rate, and the unkeyed jobs' rate beside it
    /// against the same jobs alone (reported as the ceiling).
    HotKey,
    /// Kafka: `--rate` jobs/s (default 10000) for `--seconds` while `--workers` worker
    /// processes (default 4) join one after another; the gaps between consecutive job starts
    /// across the fleet (the longest: how long joins stalled the queue).
    Fleet,
    /// `--jobs` jobs (default 1000000) scheduled over the next 30 days, then `--rate` jobs/s
    /// for `--seconds` due now: their enqueue -> start latency, against the same stream with
    /// nothing scheduled (reported as the ceiling).
    Scheduled,
    /// `--jobs` jobs (default 1000000) waiting in a queue: the rate one worker takes the first
    /// 50000 of them at, against the same with 50000 waiting (reported as the ceiling).
    /// SQLite only (a Kafka fetch reads on from its offset, whatever follows).
    DeepBacklog,
    /// `--jobs` jobs (default 100000) through `POST /v1/jobs/batch` and a tenth (at most
    /// 20000) through single `POST /v1/jobs` on a keep-alive connection, beside the library's
    /// enqueue of the same run (the ceiling); then each dashboard page's time with those jobs
    /// stored.
    Http,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::BurnDown => "burn-down",
            Workload::Latency => "latency",
            Workload::Sustained => "sustained",
            Workload::RetryStorm => "retry-storm",
            Workload::Delayed => "delayed",
            Workload::Pool => "pool",
            Workload::HotKey => "hot-key",
            Workload::Http => "http",
            Workload::DeepBacklog => "deep-backlog",
            Workload::Scheduled => "scheduled",
            Workload::Fleet => "fleet",
        }
    }

    fn default_jobs(self) -> usize {
        match self {
            Workload::BurnDown => 100_000,
            Workload::Latency => 2_000,
            Workload::Sustained => 0,
            Workload::RetryStorm => 50_000,
            Workload::Delayed => 10_000,
            Workload::Pool => 50_000,
            Workload::HotKey => 20_000,
            Workload::Http => 100_000,
            Workload::DeepBacklog => 1_000_000,
            Workload::Scheduled => 1_000_000,
            Workload::Fleet => 0,
        }
    }

    fn default_rate(self) -> f64 {
        match self {
            Workload::RetryStorm => 500.0,
            _ => 10_000.0,
        }
    }
}

/// What one workload is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    workload: Workload,
    /// Jobs (burn-down, latency) or storm jobs (retry storm).
    jobs: usize,
    /// Worker concurrency.
    concurrency: usize,
    /// The paced stream (sustained, retry storm).
    pace: paced::Pace,
    /// Seconds the paced stream runs, or the delayed jobs' times spread over.
    seconds: f64,
    /// Worker processes of the fleet workload.
    workers: usize,
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
    /// Paced jobs per second (default: 10000 for sustained, 500 healthy jobs for retry-storm).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the paced stream runs (delayed: the span the jobs are due over).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Worker processes that join one after another (fleet workload).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
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
    /// Throughput workloads: the raw loop's rate. Paced ones: none.
    ceiling_jobs_per_s: Option<f64>,
    /// Delayed: starts before their job's time (must be 0); the latencies above are then the
    /// lateness after it.
    early_starts: Option<usize>,
    /// Paced workloads: the raw client's p50 and p99 for the same stream.
    ceiling_p50_ms: Option<f64>,
    ceiling_p99_ms: Option<f64>,
    /// Throughput: rate / ceiling rate. Paced: ceiling p99 / p99 (1.0 = as fast as raw).
    ratio_to_ceiling: Option<f64>,
    enqueue_jobs_per_s: Option<f64>,
    /// Paced workloads: intended send time -> the engine acknowledged the enqueue.
    enqueue_p50_ms: Option<f64>,
    enqueue_p99_ms: Option<f64>,
    /// Retry storm: storm jobs, and the seconds until the last of them completed.
    storm_jobs: Option<usize>,
    storm_seconds: Option<f64>,
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
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("invalid seconds: must be a positive number");
    }
    for workload in workloads {
        let rate = args.rate.unwrap_or(workload.default_rate());
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("invalid rate: must be a positive number of jobs per second");
        }
        let plan = Plan {
            workload,
            jobs: args.jobs.unwrap_or(workload.default_jobs()),
            concurrency: args.concurrency,
            pace: paced::Pace {
                rate,
                total: ((rate * args.seconds).round() as usize).max(1),
            },
            seconds: args.seconds,
            workers: args.workers,
        };
        let results = if backend_url.starts_with("kafka://") {
            kafka::run(backend_url, plan).await?
        } else {
            sqlite::run(backend_url, plan).await?
        };
        for result in &results {
            report(result, args.json)?;
        }
    }
    Ok(())
}

/// Enqueues `jobs` no-op jobs in batches of 1000; returns jobs per second.
async fn enqueue_noops(engine: &Arc<dyn Engine>, jobs: usize) -> Result<f64> {
    let bar = crate::output::progress_bar(jobs, "enqueue");
    let started = Instant::now();
    enqueue_in_batches(
        engine,
        jobs,
        || NewJob::new("noop", serde_json::json!({})),
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// Enqueues `jobs` jobs made by `job`, 1000 per batch, advancing `bar`.
async fn enqueue_in_batches(
    engine: &Arc<dyn Engine>,
    jobs: usize,
    job: impl Fn() -> NewJob,
    bar: &ProgressBar,
) -> Result<()> {
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        engine
            .enqueue_batch((0..n).map(|_| job()).collect())
            .await?;
        left -= n;
        bar.inc(n as u64);
    }
    Ok(())
}

/// A worker running in the background until [`Background::stop`].
struct Background {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<conveyor::Result<()>>,
}

impl Background {
    /// Starts a worker of `concurrency` on `engine`.
    fn start(engine: &Arc<dyn Engine>, registry: Registry, concurrency: usize) -> Self {
        Self::start_on(engine, registry, concurrency, Vec::new())
    }

    /// Starts a worker of `concurrency` taking jobs from `queues` only (empty: every queue).
    fn start_on(
        engine: &Arc<dyn Engine>,
        registry: Registry,
        concurrency: usize,
        queues: Vec<String>,
    ) -> Self {
        let config = WorkerConfig {
            concurrency,
            queues,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(engine.clone(), registry, config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        Background { stop, task }
    }

    /// Asks the worker to stop and waits until it stored its last outcome.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
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
    drain_counted(engine, registry, done, jobs, concurrency, "drain").await
}

/// Runs one worker with `registry` until its handlers counted `jobs` in `done`; returns the
/// seconds from the first job done to the worker's last stored outcome.
async fn drain_counted(
    engine: &Arc<dyn Engine>,
    registry: Registry,
    done: Arc<AtomicUsize>,
    jobs: usize,
    concurrency: usize,
    label: &str,
) -> Result<f64> {
    let worker = Worker::new(
        engine.clone(),
        registry,
        WorkerConfig {
            concurrency,
            ..WorkerConfig::default()
        },
    );
    let bar = crate::output::progress_bar(jobs, label);
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
    let worker = Background::start(engine, registry, 4);
    // The first job also waits for the worker to join (a Kafka group join takes seconds).
    engine
        .enqueue(NewJob::new("bench_latency", serde_json::json!({})))
        .await?;
    tokio::time::timeout(Duration::from_secs(60), started_rx.recv())
        .await
        .context("the warm-up job did not start within 60 s")?;
    let bar = crate::output::progress_bar(jobs, "latency");
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
    worker.stop().await?;
    samples.sort_by(f64::total_cmp);
    Ok((samples, seconds))
}

impl BenchResult {
    fn empty(workload: Workload, backend: String, jobs: usize, seconds: f64) -> Self {
        BenchResult {
            workload: workload.name(),
            backend,
            jobs,
            seconds,
            jobs_per_s: jobs as f64 / seconds,
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
            early_starts: None,
            ceiling_jobs_per_s: None,
            ceiling_p50_ms: None,
            ceiling_p99_ms: None,
            ratio_to_ceiling: None,
            enqueue_jobs_per_s: None,
            enqueue_p50_ms: None,
            enqueue_p99_ms: None,
            storm_jobs: None,
            storm_seconds: None,
            peak_rss_mb: peak_rss_mb(),
        }
    }

    fn burn_down(
        backend: String,
        jobs: usize,
        seconds: f64,
        enqueue_rate: f64,
        ceiling: f64,
    ) -> Self {
        let mut result = Self::empty(Workload::BurnDown, backend, jobs, seconds);
        result.ceiling_jobs_per_s = Some(ceiling);
        result.ratio_to_ceiling = Some(result.jobs_per_s / ceiling);
        result.enqueue_jobs_per_s = Some(enqueue_rate);
        result
    }

    fn latency(backend: String, samples: &[f64], seconds: f64, ceiling: f64) -> Self {
        let mut result = Self::empty(Workload::Latency, backend, samples.len(), seconds);
        result.with_latencies(samples);
        result.ceiling_jobs_per_s = Some(ceiling);
        result.ratio_to_ceiling = Some(result.jobs_per_s / ceiling);
        result
    }

    /// The delayed workload's result: lateness as its latencies.
    fn delayed(backend: String, run: &delayed::Delayed) -> Self {
        let mut result = Self::empty(Workload::Delayed, backend, run.lateness.len(), run.seconds);
        result.with_latencies(&run.lateness);
        result.early_starts = Some(run.early);
        result
    }

    /// A paced workload's result; `raw` is the plain client's latencies for the same stream,
    /// when the engine has such a client.
    fn paced(workload: Workload, backend: String, run: &paced::Paced, raw: Option<&[f64]>) -> Self {
        let mut result = Self::empty(workload, backend, run.samples.len(), run.seconds);
        result.with_latencies(&run.samples);
        result.enqueue_p50_ms = Some(percentile(&run.acks, 0.50));
        result.enqueue_p99_ms = Some(percentile(&run.acks, 0.99));
        if let Some(raw) = raw {
            let raw_p99 = percentile(raw, 0.99);
            result.ceiling_p50_ms = Some(percentile(raw, 0.50));
            result.ceiling_p99_ms = Some(raw_p99);
            result.ratio_to_ceiling = result.p99_ms.map(|p99| raw_p99 / p99);
        }
        if let Some((jobs, seconds)) = run.storm {
            result.storm_jobs = Some(jobs);
            result.storm_seconds = Some(seconds);
        }
        result
    }

    fn with_latencies(&mut self, sorted: &[f64]) {
        self.p50_ms = Some(percentile(sorted, 0.50));
        self.p99_ms = Some(percentile(sorted, 0.99));
        self.max_ms = sorted.last().copied();
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
        let what = if result.early_starts.is_some() {
            "lateness ms     "
        } else {
            "latency ms      "
        };
        println!("  {what}  p50 {p50:.3}  p99 {p99:.3}  max {max:.3}");
    }
    if let Some(early) = result.early_starts {
        println!("  early starts      {early:>12}");
    }
    if let Some(rate) = result.enqueue_jobs_per_s {
        println!("  enqueue jobs/s    {rate:>12.0}");
    }
    if let (Some(p50), Some(p99)) = (result.enqueue_p50_ms, result.enqueue_p99_ms) {
        println!("  enqueue acked ms  p50 {p50:.3}  p99 {p99:.3}  (of the latency above)");
    }
    if let (Some(jobs), Some(seconds)) = (result.storm_jobs, result.storm_seconds) {
        println!("  storm             {jobs} jobs failing twice, done in {seconds:.2} s");
    }
    let ratio = result
        .ratio_to_ceiling
        .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
    if let Some(ceiling) = result.ceiling_jobs_per_s {
        println!("  raw ceiling /s    {ceiling:>12.0}  (ratio {ratio})");
    }
    if let (Some(p50), Some(p99)) = (result.ceiling_p50_ms, result.ceiling_p99_ms) {
        println!("  raw latency ms    p50 {p50:.3}  p99 {p99:.3}  (ratio {ratio})");
    }
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
