//! Paced workloads: jobs sent at a fixed rate, each one's latency measured from the time it
//! was meant to be sent (so a stalled sender cannot hide a stall: no coordinated omission).
//!
//! - sustained: `rate` no-op jobs per second for `seconds`;
//! - retry storm: `storm` jobs that fail twice before they complete, with healthy jobs paced
//!   beside them; only the healthy jobs' latencies are reported.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use conveyor::{handler_fn, Backoff, Engine, NewJob, Outcome, Registry};
use indicatif::ProgressBar;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{enqueue_in_batches, Background};
use crate::output::progress_bar as progress;

/// A paced stream: how many jobs, how fast.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Jobs per second.
    pub rate: f64,
    /// Jobs in all.
    pub total: usize,
}

impl Pace {
    /// How long sending the whole stream takes.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.total as f64 / self.rate)
    }

    /// When job `index` is meant to be sent, counted from `start`.
    pub fn intended(&self, start: Instant, index: usize) -> Instant {
        start + Duration::from_secs_f64(index as f64 / self.rate)
    }
}

/// What a paced run measured.
pub struct Paced {
    /// Latencies (ms) of the paced jobs, sorted.
    pub samples: Vec<f64>,
    /// Per paced job, ms from its intended send time to the engine's acknowledgement, sorted:
    /// the enqueue's share of the latency.
    pub acks: Vec<f64>,
    /// Seconds from the first intended send to the last paced job started.
    pub seconds: f64,
    /// Storm jobs completed, and the seconds they took from the worker's start.
    pub storm: Option<(usize, f64)>,
}

/// The storm runs in a queue of its own, read by the same worker as the healthy jobs: a burst
/// of new jobs in one FIFO queue delays every later job of that queue by design, so what the
/// workload shows is how much the storm's retries and its queue hold back another queue.
const STORM_QUEUE: &str = "storm";

#[derive(Deserialize)]
struct Index {
    i: usize,
}

/// The storm's backoff, the seeds' 200/400/800 ms style without jitter.
fn storm_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_millis(800),
        jitter: 0.0,
    }
}

/// Runs `pace` (and, if `storm > 0`, a retry storm of that many jobs beside it) through one
/// worker of `concurrency`.
pub async fn run(
    engine: &Arc<dyn Engine>,
    pace: Pace,
    storm: usize,
    concurrency: usize,
) -> Result<Paced> {
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let (storm_tx, mut storm_rx) = mpsc::unbounded_channel::<Instant>();
    let mut registry = Registry::new();
    registry.register(handler_fn("bench_paced", move |ctx| {
        let at = Instant::now();
        if let Ok(Index { i }) = ctx.payload::<Index>() {
            let _ = started_tx.send((i, at));
        }
        async { Outcome::Complete }
    }));
    registry.register(handler_fn("bench_storm", move |ctx| {
        let outcome = if ctx.attempt() <= 2 {
            Outcome::Retry(format!("storm: attempt {} fails", ctx.attempt()))
        } else {
            let _ = storm_tx.send(Instant::now());
            Outcome::Complete
        };
        async move { outcome }
    }));
    let storm_job = || {
        NewJob::new("bench_storm", serde_json::json!({}))
            .queue(STORM_QUEUE)
            .backoff(storm_backoff())
    };
    enqueue_in_batches(engine, storm, storm_job, &ProgressBar::hidden()).await?;
    let worker = Background::start(engine, registry, concurrency);
    let worker_started = Instant::now();
    warm_up(engine, &mut started_rx).await?;
    let start = Instant::now();
    let acks = Arc::new(std::sync::Mutex::new(Vec::with_capacity(pace.total)));
    let mut sender = tokio::spawn(send_paced(engine.clone(), pace, start, acks.clone()));
    let mut sending = true;
    let bar = progress(pace.total, "paced");
    let mut samples = vec![f64::NAN; pace.total];
    let mut seen = 0;
    let mut last = start;
    while seen < pace.total {
        let next = tokio::time::timeout(Duration::from_secs(30), started_rx.recv());
        let (i, at) = tokio::select! {
            // A failed enqueue ends the run at once, with its error.
            sent = &mut sender, if sending => {
                sent??;
                sending = false;
                continue;
            }
            started = next => started
                .with_context(|| {
                    // Tells a job the worker never got from an enqueue the broker has not
                    // acknowledged yet (a produce request it left unanswered).
                    let acked = acks.lock().map_or(0, |a| a.len());
                    format!(
                        "{seen} of {} paced jobs started, then none for 30 s; {acked} were \
                         acknowledged by the broker by then",
                        pace.total
                    )
                })?
                .context("the worker stopped")?,
        };
        if let Some(slot) = samples.get_mut(i).filter(|s| s.is_nan()) {
            *slot = at.duration_since(pace.intended(start, i)).as_secs_f64() * 1000.0;
            seen += 1;
            last = last.max(at);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if sending {
        sender.await??;
    }
    let storm = wait_for_storm(&mut storm_rx, storm, worker_started).await?;
    worker.stop().await?;
    samples.sort_by(f64::total_cmp);
    let mut acks = std::mem::take(&mut *acks.lock().unwrap_or_else(|e| e.into_inner()));
    acks.sort_by(f64::total_cmp);
    Ok(Paced {
        samples,
        acks,
        seconds: last.duration_since(start).as_secs_f64(),
        storm,
    })
}

/// One job through before timing starts: a Kafka worker first joins its group.
async fn warm_up(
    engine: &Arc<dyn Engine>,
    started: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
) -> Result<()> {
    let job = NewJob::new("bench_paced", serde_json::json!({"i": usize::MAX}));
    engine.enqueue(job).await?;
    tokio::time::timeout(Duration::from_secs(60), started.recv())
        .await
        .context("the warm-up job did not start within 60 s")?
        .ok_or_else(|| anyhow!("the worker stopped"))?;
    Ok(())
}

/// Sends the paced jobs through the engine.
async fn send_paced(
    engine: Arc<dyn Engine>,
    pace: Pace,
    start: Instant,
    acks: Arc<std::sync::Mutex<Vec<f64>>>,
) -> Result<()> {
    pace_sends(pace, start, move |range| {
        let engine = engine.clone();
        let acks = acks.clone();
        async move {
            let batch: Vec<NewJob> = range.clone().map(paced_job).collect();
            engine.enqueue_batch(batch).await?;
            let at = Instant::now();
            let mut acks = acks.lock().unwrap_or_else(|e| e.into_inner());
            acks.extend(range.map(|i| {
                at.saturating_duration_since(pace.intended(start, i))
                    .as_secs_f64()
                    * 1000.0
            }));
            Ok(())
        }
    })
    .await
}

/// The `index`th paced job.
pub fn paced_job(index: usize) -> NewJob {
    NewJob::new("bench_paced", serde_json::json!({ "i": index }))
}

/// The index a paced job's payload carries.
pub fn index_of(payload: &[u8]) -> Option<usize> {
    serde_json::from_slice::<Index>(payload).ok().map(|p| p.i)
}

/// Calls `send` every millisecond with the indexes whose time has come; each call runs in its
/// own task, so a slow acknowledgement does not hold back the next send.
pub async fn pace_sends<F, Fut>(pace: Pace, start: Instant, send: F) -> Result<()>
where
    F: Fn(Range<usize>) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sends = JoinSet::new();
    let mut sent = 0;
    while sent < pace.total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * pace.rate) as usize + 1).min(pace.total);
        if due > sent {
            sends.spawn(send(sent..due));
            sent = due;
        }
        while let Some(done) = sends.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    Ok(())
}

async fn wait_for_storm(
    done: &mut mpsc::UnboundedReceiver<Instant>,
    storm: usize,
    since: Instant,
) -> Result<Option<(usize, f64)>> {
    if storm == 0 {
        return Ok(None);
    }
    let mut seen = 0;
    let mut last = since;
    while seen < storm {
        last = tokio::time::timeout(Duration::from_secs(60), done.recv())
            .await
            .with_context(|| format!("{seen} of {storm} storm jobs completed; none for 60 s"))?
            .ok_or_else(|| anyhow!("the worker stopped"))?;
        seen += 1;
    }
    Ok(Some((storm, last.duration_since(since).as_secs_f64())))
}
