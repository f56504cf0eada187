//! `conveyor bench --workload fleet --workers N` (Kafka): `--rate` no-op jobs per second flow
//! for `--seconds` while N `conveyor worker` processes (this binary) join one after another,
//! evenly spread over the run, the first at its start. Each worker logs every job it starts;
//! the figures are the gaps between consecutive starts across the fleet (p50, p99, and the
//! longest: how long the queue stalled while members joined and the group rebalanced), the
//! jobs started, and how many started twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conveyor::{Engine, KafkaConfig, NewJob};

use super::paced::Pace;
use super::{BenchResult, Workload};

/// Longest wait for the last jobs to start once sending ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Worker processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // A graceful stop first: each worker leaves its group and says so.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for child in &mut self.0 {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The fleet's figure on the engine `config` describes (the bench's own topics and group).
pub async fn run(
    url: &str,
    config: &KafkaConfig,
    engine: &Arc<dyn Engine>,
    backend: &str,
    workers: usize,
    pace: Pace,
) -> Result<Vec<BenchResult>> {
    if workers == 0 {
        bail!("invalid workers: the fleet needs at least 1");
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let worker_url = format!(
        "{url}{sep}prefix={}&group={}",
        config.topics.prefix, config.group
    );
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let sender = tokio::spawn(send(engine.clone(), pace, started));
    let mut fleet = Fleet(Vec::new());
    let every = pace.duration() / workers as u32;
    for n in 0..workers {
        tokio::time::sleep_until((started + every * (n as u32)).into()).await;
        fleet
            .0
            .push(spawn(&worker_url, &dir.path().join(format!("{n}.log")))?);
    }
    let sent = sender.await??;
    let logs: Vec<PathBuf> = (0..workers)
        .map(|n| dir.path().join(format!("{n}.log")))
        .collect();
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let started: HashSet<String> = read_starts(&logs).into_iter().map(|(_, id)| id).collect();
        if started.len() >= sent || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Starts after this are re-deliveries while members leave: not part of the figure.
    let stopped_at = now_ms();
    drop(fleet);
    let starts: Vec<(f64, String)> = read_starts(&logs)
        .into_iter()
        .filter(|(at, _)| *at <= stopped_at)
        .collect();
    let unique: HashSet<&str> = starts.iter().map(|(_, id)| id.as_str()).collect();
    if unique.len() < sent {
        bail!(
            "fleet: {} of {sent} jobs started within {DRAIN_LIMIT:?} of the last send",
            unique.len()
        );
    }
    let mut times: Vec<f64> = starts.iter().map(|(at, _)| *at).collect();
    times.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let seconds = (times.last().copied().unwrap_or(0.0) - times[0]) / 1000.0;
    let twice = starts.len() - unique.len();
    let mut result = BenchResult::empty(
        Workload::Fleet,
        format!("{backend}, {workers} workers joining, gaps between starts, {twice} started twice"),
        unique.len(),
        seconds,
    );
    result.with_latencies(&gaps);
    Ok(vec![result])
}

/// Sends `pace` as batches of the jobs due every millisecond; the number sent.
async fn send(engine: Arc<dyn Engine>, pace: Pace, start: Instant) -> Result<usize> {
    let mut sent = 0;
    while sent < pace.total {
        let due = ((start.elapsed().as_secs_f64() * pace.rate) as usize).min(pace.total);
        if due > sent {
            let jobs = (sent..due)
                .map(|_| NewJob::new("noop", serde_json::json!({})))
                .collect();
            engine.enqueue_batch(jobs).await?;
            sent = due;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(sent)
}

/// A `conveyor worker` on `url` logging each job start as a JSON line into `log`.
fn spawn(url: &str, log: &Path) -> Result<Child> {
    let file = std::fs::File::create(log)?;
    Command::new(std::env::current_exe()?)
        .args(["worker", "--backend", url, "--log-format", "json"])
        .env("RUST_LOG", "warn,conveyor::commands=debug")
        .env_remove("CONVEYOR_CONFIG")
        // In the bench's own folder: a conveyor.toml where the bench was started (queues,
        // handlers, concurrency) must not change what the workers do.
        .current_dir(log.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .context("starting a worker process")
}

/// Every `started` line of the logs: (ms since the epoch, job id).
fn read_starts(logs: &[PathBuf]) -> Vec<(f64, String)> {
    let mut starts = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Only the `started` lines are parsed (half the lines are `completed`), so reading the
        // logs while the fleet runs costs little of the CPU it measures.
        for line in text.lines().filter(|l| l.contains("\"started\"")) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = &value["fields"];
            if fields["message"] != "started" {
                continue;
            }
            let at = value["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let (Some(at), Some(id)) = (at, fields["job"].as_str()) {
                starts.push((at.timestamp_micros() as f64 / 1000.0, id.to_string()));
            }
        }
    }
    starts
}

/// Now, in ms since the epoch (the logs' clock).
fn now_ms() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1000.0
}
