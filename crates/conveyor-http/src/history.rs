//! Depth and throughput over the last minutes, for the dashboard's charts. A task samples the
//! engine's counts (`stats`, the same on every engine) at a fixed interval and keeps the last
//! [`KEEP`] samples in memory: nothing is stored, and a server started a minute ago shows a
//! minute. It samples only while someone looks: from a dashboard view until [`KEEP`]
//! intervals after the last one (counting is cheap on SQLite, not on Kafka, where it reads
//! offsets and scans topics). Throughput is the growth of a queue's finished jobs (completed, dead, cancelled)
//! between two samples; a cleanup that deletes finished jobs shows as 0, never negative.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use conveyor::{QueueStats, Stats};

use crate::App;

/// Samples kept: 15 minutes at the default interval.
pub(crate) const KEEP: usize = 180;

/// One queue's counts at one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    /// Jobs not finished: scheduled, available, running, retryable.
    depth: u64,
    /// Jobs finished so far: completed, dead, cancelled.
    finished: u64,
}

impl Counts {
    fn of(q: &QueueStats) -> Self {
        Counts {
            depth: q.scheduled + q.available + q.running + q.retryable,
            finished: q.completed + q.dead + q.cancelled,
        }
    }
}

/// The samples so far.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<(Instant, BTreeMap<String, Counts>)>>,
    /// Sampling ticks left before the sampler rests (set by each dashboard view).
    watched: AtomicU64,
}

/// One queue's series, oldest first: depth, and finished jobs per second since the sample
/// before.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Series {
    pub depth: Vec<f64>,
    pub per_second: Vec<f64>,
}

impl History {
    /// A dashboard page showed the charts: sample for the next [`KEEP`] intervals.
    pub(crate) fn viewed(&self) {
        self.watched.store(KEEP as u64, Ordering::Relaxed);
    }

    /// Whether to sample at this tick (counts one tick down).
    fn wanted(&self) -> bool {
        self.watched
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    fn push(&self, at: Instant, stats: &Stats) {
        let counts = stats
            .queues
            .iter()
            .map(|q| (q.queue.clone(), Counts::of(q)))
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back((at, counts));
    }

    /// The series of `queue` (empty before two samples).
    pub(crate) fn series(&self, queue: &str) -> Series {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut series = Series::default();
        let mut before: Option<(Instant, Counts)> = None;
        for (at, counts) in samples.iter() {
            let now = counts.get(queue).copied().unwrap_or(Counts {
                depth: 0,
                finished: before.map_or(0, |(_, c)| c.finished),
            });
            if let Some((then, earlier)) = before {
                let seconds = at.duration_since(then).as_secs_f64().max(0.001);
                let done = now.finished.saturating_sub(earlier.finished) as f64;
                series.depth.push(now.depth as f64);
                series.per_second.push(done / seconds);
            }
            before = Some((*at, now));
        }
        series
    }
}

/// Samples every `every` until the server's state is dropped.
pub(crate) fn start(app: Weak<App>, every: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // no runtime (a router built outside one): no charts
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else { return };
            if !app.history.wanted() {
                continue;
            }
            match app.conveyor.stats().await {
                Ok(stats) => app.history.push(Instant::now(), &stats),
                Err(err) => tracing::debug!(error = %err, "dashboard chart: no sample"),
            }
        }
    });
}

/// An SVG polyline's points for `values` in a `width` x `height` box (max at the top), and
/// the largest value.
pub(crate) fn polyline(values: &[f64], width: f64, height: f64) -> (String, f64) {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 {
                height - v / max * height
            } else {
                height
            };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect::<Vec<_>>()
        .join(" ");
    (points, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(queue: &str, available: u64, completed: u64) -> Stats {
        Stats {
            queues: vec![QueueStats {
                queue: queue.into(),
                available,
                completed,
                ..QueueStats::default()
            }],
        }
    }

    #[test]
    fn throughput_is_the_growth_of_finished_jobs_per_second() {
        let history = History::default();
        let t = Instant::now();
        history.push(t, &stats("q", 100, 0));
        history.push(t + Duration::from_secs(5), &stats("q", 50, 50));
        // A cleanup deleted finished jobs: no negative throughput.
        history.push(t + Duration::from_secs(10), &stats("q", 40, 0));
        let series = history.series("q");
        assert_eq!(series.depth, vec![50.0, 40.0]);
        assert_eq!(series.per_second, vec![10.0, 0.0]);
        assert_eq!(history.series("other").depth, vec![0.0, 0.0]);
    }

    #[test]
    fn sampling_rests_once_nobody_looked_for_a_while() {
        let history = History::default();
        assert!(!history.wanted(), "nobody looked yet");
        history.viewed();
        for _ in 0..KEEP {
            assert!(history.wanted());
        }
        assert!(!history.wanted());
    }

    #[test]
    fn polylines_scale_to_their_box() {
        let (points, max) = polyline(&[0.0, 5.0, 10.0], 100.0, 20.0);
        assert_eq!(max, 10.0);
        assert_eq!(points, "0.0,20.0 50.0,10.0 100.0,0.0");
        assert_eq!(polyline(&[0.0, 0.0], 10.0, 5.0).0, "0.0,5.0 10.0,5.0");
    }
}
