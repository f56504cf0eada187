//! Prometheus metrics at `GET /metrics` (documented in `docs/metrics.md`).
//!
//! Counters and histograms come from this process: the worker's job events ([`record`], an
//! observer `conveyor serve` registers) and the API's enqueues. Gauges (jobs per queue and
//! state, consumer lag per partition) are read from the engine at each scrape, so they are the
//! same whichever server of a fleet is scraped.

use std::sync::OnceLock;
use std::time::Duration;

use conveyor::{now_ms, Conveyor, JobEvent, JobId, Stats};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of the duration histograms, in seconds: 1 ms to 10 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// The process's recorder, installed on first use (one per process: the `metrics` facade is
/// global).
fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS);
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot install the Prometheus recorder: /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Records one job event of a worker of this process.
pub fn record(event: &JobEvent) {
    if handle().is_none() {
        return;
    }
    match event {
        JobEvent::Started {
            id,
            kind,
            queue,
            attempt,
        } => {
            let labels = [("queue", queue.clone()), ("kind", kind.clone())];
            counter!("conveyor_jobs_started_total", &labels).increment(1);
            // The first attempt's wait since the enqueue, from the UUIDv7's time (ids chosen
            // by a producer in another form say nothing).
            if let (1, Some(waited)) = (*attempt, waited(*id)) {
                histogram!("conveyor_job_wait_seconds", &labels).record(waited.as_secs_f64());
            }
        }
        JobEvent::Completed {
            kind, queue, took, ..
        } => {
            let labels = [("queue", queue.clone()), ("kind", kind.clone())];
            counter!("conveyor_jobs_completed_total", &labels).increment(1);
            histogram!("conveyor_job_run_seconds", &labels).record(took.as_secs_f64());
        }
        JobEvent::Failed { kind, queue, .. } => {
            let labels = [("queue", queue.clone()), ("kind", kind.clone())];
            counter!("conveyor_jobs_failed_total", &labels).increment(1);
            counter!("conveyor_jobs_retried_total", &labels).increment(1);
        }
        JobEvent::Dead { kind, queue, .. } => {
            let labels = [("queue", queue.clone()), ("kind", kind.clone())];
            counter!("conveyor_jobs_failed_total", &labels).increment(1);
            counter!("conveyor_jobs_dead_lettered_total", &labels).increment(1);
        }
        JobEvent::Cancelled { kind, queue, .. } => {
            let labels = [("queue", queue.clone()), ("kind", kind.clone())];
            counter!("conveyor_jobs_stopped_total", &labels).increment(1);
        }
    }
}

/// Counts jobs enqueued through this server's API.
pub(crate) fn enqueued(queue: &str, kind: &str, count: u64) {
    if handle().is_some() {
        let labels = [("queue", queue.to_string()), ("kind", kind.to_string())];
        counter!("conveyor_jobs_enqueued_total", &labels).increment(count);
    }
}

/// How long ago job `id` was made, when its id is a UUIDv7.
fn waited(id: JobId) -> Option<Duration> {
    let (secs, nanos) = id.0.get_timestamp()?.to_unix();
    let made = i64::try_from(secs).ok()? * 1000 + i64::from(nanos / 1_000_000);
    u64::try_from(now_ms() - made)
        .ok()
        .map(Duration::from_millis)
}

/// The gauge series set at the last scrape: one that is not in the next counts (its queue's
/// jobs are gone, its partition moved) is set to 0 there, never left at a stale value.
static SEEN: std::sync::Mutex<Vec<Series>> = std::sync::Mutex::new(Vec::new());

/// A gauge series: its name and labels.
type Series = (&'static str, Vec<(&'static str, String)>);

/// Sets the gauges from the engine's counts, and zeroes those the counts no longer have.
fn set_gauges(stats: &Stats) {
    let mut now: Vec<Series> = Vec::new();
    for q in &stats.queues {
        for (state, n) in [
            ("scheduled", q.scheduled),
            ("available", q.available),
            ("running", q.running),
            ("retryable", q.retryable),
            ("completed", q.completed),
            ("dead", q.dead),
            ("cancelled", q.cancelled),
        ] {
            let labels = vec![("queue", q.queue.clone()), ("state", state.to_string())];
            gauge!("conveyor_queue_jobs", &labels).set(n as f64);
            now.push(("conveyor_queue_jobs", labels));
        }
        for p in &q.partitions {
            let labels = vec![
                ("queue", q.queue.clone()),
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ];
            gauge!("conveyor_consumer_lag", &labels).set(p.lag as f64);
            now.push(("conveyor_consumer_lag", labels));
        }
    }
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for (name, labels) in seen.iter().filter(|series| !now.contains(series)) {
        gauge!(*name, labels).set(0.0);
    }
    *seen = now;
}

/// The exposition text: the gauges read now from `conveyor` and set by `on_scrape`, then
/// everything recorded.
pub(crate) async fn render(
    conveyor: &Conveyor,
    on_scrape: Option<&(dyn Fn() + Send + Sync)>,
) -> String {
    let Some(handle) = handle() else {
        return String::new();
    };
    if let Some(on_scrape) = on_scrape {
        on_scrape();
    }
    match conveyor.stats().await {
        Ok(stats) => {
            set_gauges(&stats);
            gauge!("conveyor_stats_up").set(1.0);
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics: cannot read the engine's counts");
            gauge!("conveyor_stats_up").set(0.0);
        }
    }
    handle.render()
}
