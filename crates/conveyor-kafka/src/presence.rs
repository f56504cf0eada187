//! Who runs what, on the broker alone: the `running` count of `conveyor stats` and the
//! connected workers (`Workers`).
//!
//! Kafka keeps no per-job state, and a job being run is only an unfinished offset. So each
//! worker says itself what it runs: from its heartbeat (every second, idle or not), at most
//! every [`INTERVAL`], it writes a presence record to `{prefix}workers` (partition 0) with how
//! many jobs it runs per queue, and a last one, marked `left`, with nothing running when it
//! leaves. `stats` adds up the latest record of each worker written within [`FRESH_MS`]; the
//! workers list shows each worker whose latest record is that fresh and not `left`. A worker
//! killed without leaving drops out of both after that long.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::DateTime;
use conveyor_core::{now_ms, Job, JobId, WorkerInfo, Workers};
use serde::{Deserialize, Serialize};

use crate::scan::Scanner;
use crate::{Error, KafkaConfig, KafkaEngine, Record};

/// Least time between two presence records of one worker.
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);

/// A presence record older than this no longer counts: its worker stopped writing.
const FRESH_MS: i64 = 3 * INTERVAL.as_millis() as i64;

/// Most presence records a count reads (the newest): far more than a fleet writes within
/// [`FRESH_MS`], and a bound when the broker cannot look offsets up by time.
const READ_AT_MOST: i64 = 20_000;

/// One worker's presence record (JSON value, no key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Presence {
    /// The worker (its owner name).
    pub owner: String,
    /// When it was written, ms since the epoch.
    pub at: i64,
    /// Jobs it runs now, per queue.
    pub running: BTreeMap<String, u64>,
    /// When the worker wrote its first presence, ms since the epoch (absent in records of
    /// builds before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// The worker's last record: it left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left: bool,
}

impl Presence {
    /// The presence as a record.
    pub fn to_record(&self) -> Record {
        Record {
            key: None,
            value: serde_json::to_vec(self).ok(),
            headers: Vec::new(),
        }
    }
}

/// What this handle's workers run, per owner: the queue of each job handed out and not
/// finished, and when each owner last wrote its presence.
#[derive(Default)]
pub(crate) struct Roster {
    owners: Mutex<HashMap<String, Owner>>,
}

#[derive(Default)]
struct Owner {
    queues: HashMap<JobId, String>,
    written: Option<Instant>,
    /// Its first presence, ms since the epoch.
    since: Option<i64>,
    /// The time of its latest presence, ms since the epoch: each new one is later, so a
    /// reader taking the latest by time never prefers an older one written after it (the
    /// records are sent in the background, and may arrive out of order).
    last_at: i64,
}

impl Owner {
    fn presence(&mut self, owner: &str, running: BTreeMap<String, u64>) -> Presence {
        self.written = Some(Instant::now());
        let at = now_ms().max(self.last_at + 1);
        self.last_at = at;
        Presence {
            owner: owner.to_string(),
            at,
            running,
            since: Some(*self.since.get_or_insert(at)),
            left: false,
        }
    }
}

impl Roster {
    /// Notes the jobs handed to `owner`.
    pub fn handed(&self, owner: &str, jobs: &[Job]) {
        if jobs.is_empty() {
            return;
        }
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let entry = owners.entry(owner.to_string()).or_default();
        entry
            .queues
            .extend(jobs.iter().map(|j| (j.id, j.queue.clone())));
    }

    /// Notes the jobs `owner` finished; the presence to write now when that left it running
    /// nothing (its next heartbeat's presence may be up to [`INTERVAL`] away, and its last
    /// count would linger until then).
    pub fn finished(&self, owner: &str, ids: &[JobId]) -> Option<Presence> {
        if ids.is_empty() {
            return None;
        }
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let entry = owners.get_mut(owner)?;
        let had = entry.queues.len();
        entry.queues.retain(|id, _| !ids.contains(id));
        if had == 0 || !entry.queues.is_empty() {
            return None;
        }
        Some(entry.presence(owner, BTreeMap::new()))
    }

    /// The presence `owner` should write now, running `running` (its heartbeat's list); `None`
    /// when it wrote one less than [`INTERVAL`] ago.
    pub fn due(&self, owner: &str, running: &[JobId]) -> Option<Presence> {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let entry = owners.entry(owner.to_string()).or_default();
        entry.queues.retain(|id, _| running.contains(id));
        if entry.written.is_some_and(|at| at.elapsed() < INTERVAL) {
            return None;
        }
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for queue in entry.queues.values() {
            *counts.entry(queue.clone()).or_default() += 1;
        }
        Some(entry.presence(owner, counts))
    }

    /// The last presence of `owner`, which leaves: nothing running.
    pub fn leave(&self, owner: &str) -> Presence {
        let gone = self
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
        let mut presence = gone.unwrap_or_default().presence(owner, BTreeMap::new());
        presence.left = true;
        presence
    }
}

/// Jobs running now per queue: the latest fresh presence record of each worker, added up.
pub(crate) fn running(
    config: &KafkaConfig,
    scanner: &Scanner,
) -> Result<HashMap<String, u64>, Error> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for presence in latest(config, scanner)? {
        for (queue, n) in presence.running {
            *counts.entry(queue).or_default() += n;
        }
    }
    Ok(counts)
}

/// The connected workers: each worker's latest fresh presence record, unless it left.
pub(crate) fn workers(config: &KafkaConfig, scanner: &Scanner) -> Result<Vec<WorkerInfo>, Error> {
    let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let mut workers: Vec<WorkerInfo> = latest(config, scanner)?
        .into_iter()
        .filter(|p| !p.left)
        .map(|p| WorkerInfo {
            started_at: p.since.map(time),
            seen_at: time(p.at),
            running: p.running.into_iter().filter(|(_, n)| *n > 0).collect(),
            owner: p.owner,
        })
        .collect();
    workers.sort_unstable_by(|a, b| a.owner.cmp(&b.owner));
    Ok(workers)
}

#[async_trait::async_trait]
impl Workers for KafkaEngine {
    async fn workers(&self) -> conveyor_core::Result<Vec<WorkerInfo>> {
        let config = self.config().clone();
        crate::inspect::blocking(move || {
            let scanner = Scanner::new(&config, &config.group)?;
            workers(&config, &scanner)
        })
        .await
    }
}

/// The latest presence record of each worker written within [`FRESH_MS`].
fn latest(config: &KafkaConfig, scanner: &Scanner) -> Result<Vec<Presence>, Error> {
    let topic = config.topics.workers();
    let now = now_ms();
    let Some(offsets) = scanner.watermarks(&[(topic.clone(), vec![0])])?.pop() else {
        return Ok(Vec::new());
    };
    let by_time = scanner.offsets_at_time(std::slice::from_ref(&offsets), now - FRESH_MS)?;
    let start = by_time
        .get(&(topic.clone(), 0))
        .copied()
        .unwrap_or(offsets.low)
        .max(offsets.high - READ_AT_MOST)
        .max(offsets.low);
    let mut latest: HashMap<String, Presence> = HashMap::new();
    scanner.read(&[(topic, 0, start, offsets.high)], |_, _, _, record| {
        let presence = record
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Presence>(v).ok());
        if let Some(p) = presence {
            if latest.get(&p.owner).is_none_or(|old| old.at <= p.at) {
                latest.insert(p.owner.clone(), p);
            }
        }
    })?;
    Ok(latest
        .into_values()
        .filter(|p| p.at >= now - FRESH_MS)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(queue: &str) -> Job {
        Job {
            id: JobId::new(),
            kind: "noop".into(),
            queue: queue.into(),
            payload: "{}".into(),
            attempt: 1,
            max_attempts: 3,
            timeout: None,
            backoff: None,
            traceparent: None,
        }
    }

    #[test]
    fn a_presence_counts_what_the_heartbeat_still_runs_per_queue() {
        let roster = Roster::default();
        let jobs = [job("mail"), job("mail"), job("video")];
        roster.handed("w1", &jobs);
        let running = [jobs[0].id, jobs[2].id];
        let presence = roster.due("w1", &running).expect("first presence");
        assert_eq!(presence.running.get("mail"), Some(&1));
        assert_eq!(presence.running.get("video"), Some(&1));
        assert_eq!(roster.due("w1", &running), None, "at most one per interval");
        assert_eq!(roster.finished("w1", &[jobs[0].id]), None, "one still runs");
        let idle = roster.finished("w1", &[jobs[2].id]).expect("idle now");
        assert!(idle.running.is_empty());
        let last = roster.leave("w1");
        assert!(last.running.is_empty() && last.left);
        assert_eq!(last.since, presence.since, "first presence time kept");
    }
}
