//! Who runs what, on the broker alone: the `running` count of `conveyor stats`.
//!
//! Kafka keeps no per-job state, and a job being run is only an unfinished offset. So each
//! worker says itself what it runs: from its heartbeat (every second), at most every
//! [`INTERVAL`], it writes a presence record to `{prefix}workers` (partition 0) with how many
//! jobs it runs per queue, and a last one with nothing running when it leaves. `stats` adds up
//! the latest record of each worker written within [`FRESH`]; a worker killed without leaving
//! drops out of the count after that long.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conveyor_core::{now_ms, Job, JobId};
use serde::{Deserialize, Serialize};

use crate::scan::Scanner;
use crate::{Error, KafkaConfig, Record};

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
    /// nothing (an idle worker's runtime sends no heartbeat, so its last count would linger).
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
        entry.written = Some(Instant::now());
        Some(Presence {
            owner: owner.to_string(),
            at: now_ms(),
            running: BTreeMap::new(),
        })
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
        entry.written = Some(Instant::now());
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for queue in entry.queues.values() {
            *counts.entry(queue.clone()).or_default() += 1;
        }
        Some(Presence {
            owner: owner.to_string(),
            at: now_ms(),
            running: counts,
        })
    }

    /// The last presence of `owner`, which leaves: nothing running.
    pub fn leave(&self, owner: &str) -> Presence {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
        Presence {
            owner: owner.to_string(),
            at: now_ms(),
            running: BTreeMap::new(),
        }
    }
}

/// Jobs running now per queue: the latest fresh presence record of each worker, added up.
pub(crate) fn running(
    config: &KafkaConfig,
    scanner: &Scanner,
) -> Result<HashMap<String, u64>, Error> {
    let topic = config.topics.workers();
    let now = now_ms();
    let Some(offsets) = scanner.watermarks(&[(topic.clone(), vec![0])])?.pop() else {
        return Ok(HashMap::new());
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
    let mut counts: HashMap<String, u64> = HashMap::new();
    for presence in latest.into_values().filter(|p| p.at >= now - FRESH_MS) {
        for (queue, n) in presence.running {
            *counts.entry(queue).or_default() += n;
        }
    }
    Ok(counts)
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
        assert!(roster.leave("w1").running.is_empty());
    }
}
