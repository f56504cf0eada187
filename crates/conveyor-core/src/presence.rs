//! Who is connected: the workers an engine heard from lately, and what each runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One connected worker, as its engine last heard of it (its heartbeats say it is alive,
/// whether it runs jobs or waits for them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The name its leases are held in (unique per worker process).
    pub owner: String,
    /// When it first said it was there.
    pub started_at: Option<DateTime<Utc>>,
    /// When it last said it was there.
    pub seen_at: DateTime<Utc>,
    /// Jobs it runs now, per queue (queues where it runs none are left out).
    pub running: BTreeMap<String, u64>,
}

impl WorkerInfo {
    /// Jobs it runs now, in every queue.
    pub fn running_total(&self) -> u64 {
        self.running.values().sum()
    }
}
