use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Backoff, Error, Result};

/// Queue used when a job names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Attempts a job gets when it names no limit.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;
/// Largest payload an engine accepts unless configured otherwise (1 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Milliseconds since the Unix epoch, the time unit engines store.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s.trim())
            .map(JobId)
            .map_err(|e| Error::invalid("id", format!("{s:?} is not a job id ({e})")))
    }
}

/// The one state vocabulary used by the CLI, the HTTP API, the dashboard and the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waits for its `run_at` time.
    Scheduled,
    /// Ready to run now.
    Available,
    /// Leased by a worker.
    Running,
    /// Failed, waits for its backoff before the next attempt.
    Retryable,
    /// Finished successfully.
    Completed,
    /// Out of attempts or discarded: in the dead-letter list.
    Dead,
    /// Cancelled by a user before it completed.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True once the job will not run again by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid("state", format!("unknown job state {s:?}")))
    }
}

/// A job to enqueue, built with chained options.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The id the job will have (generated; set it to make producer retries idempotent).
    pub id: JobId,
    /// Handler kind, e.g. `send_email`.
    pub kind: String,
    /// Queue name.
    pub queue: String,
    /// JSON payload handed to the handler.
    pub payload: serde_json::Value,
    /// Higher runs first among due jobs of a queue.
    pub priority: i32,
    /// Attempts before the job goes to the dead-letter list.
    pub max_attempts: u32,
    /// Earliest run time (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Per-attempt timeout (`None`: the worker's default).
    pub timeout: Option<Duration>,
    /// Backoff between attempts (`None`: the worker's default).
    pub backoff: Option<Backoff>,
    /// At most one live job per key within the retention window.
    pub idempotency_key: Option<String>,
    /// Jobs sharing a key run one at a time, in enqueue order.
    pub ordering_key: Option<String>,
    /// The job this one re-runs (`conveyor replay`): its provenance.
    pub replay_of: Option<JobId>,
    /// W3C trace context of the enqueue (`00-TRACEID-SPANID-FLAGS`), carried to the handler.
    pub traceparent: Option<String>,
}

impl NewJob {
    /// A job of `kind` with `payload` on the default queue, to run now.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        NewJob {
            id: JobId::new(),
            kind: kind.into(),
            queue: DEFAULT_QUEUE.to_string(),
            payload,
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at: None,
            timeout: None,
            backoff: None,
            idempotency_key: None,
            ordering_key: None,
            replay_of: None,
            traceparent: None,
        }
    }

    /// Puts the job on `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    /// Sets the number of attempts.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }
    /// Runs the job `delay` from now.
    pub fn run_in(mut self, delay: Duration) -> Self {
        // A delay beyond what time can represent means "never before the end of time".
        let at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.run_at = Some(at);
        self
    }
    /// Runs the job at `at` (a time in the past means now).
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    /// Sets the ordering key.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Checks every field and returns the serialized payload. Engines call this before storing.
    pub fn validate(&self, max_payload_bytes: usize) -> Result<String> {
        check_name("kind", &self.kind)?;
        check_name("queue", &self.queue)?;
        if self.max_attempts == 0 {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        for (field, key) in [
            ("idempotency_key", &self.idempotency_key),
            ("ordering_key", &self.ordering_key),
        ] {
            if matches!(key, Some(k) if k.is_empty() || k.len() > 255) {
                return Err(Error::invalid(field, "must be 1 to 255 bytes"));
            }
        }
        if let Some(trace) = &self.traceparent {
            check_traceparent(trace)?;
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid("timeout", "must be greater than zero"));
        }
        let payload =
            serde_json::to_string(&self.payload).map_err(|e| Error::invalid("payload", e))?;
        if payload.len() > max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                limit: max_payload_bytes,
            });
        }
        Ok(payload)
    }

    /// The state the job enters when enqueued at `now_ms`.
    pub fn initial_state(&self, now_ms: i64) -> JobState {
        match self.run_at {
            Some(at) if at.timestamp_millis() > now_ms => JobState::Scheduled,
            _ => JobState::Available,
        }
    }
}

/// Checks a kind or queue name: 1-128 characters of letters, digits, `_ - . : /`.
pub fn check_name(field: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{value:?} must be 1-128 characters of letters, digits, '_', '-', '.', ':' or '/'"
            ),
        ))
    }
}

/// What an enqueue returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The job's id (the existing job's id for a duplicate).
    pub id: JobId,
    /// Its state right after the call.
    pub state: JobState,
    /// True when the idempotency key matched an existing job and nothing new was stored.
    pub duplicate: bool,
}

/// A job leased to a worker.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// Handler kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// The payload as stored (JSON text; a handler decodes it).
    pub payload: String,
    /// This attempt's number, starting at 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-attempt timeout, if the job set one.
    pub timeout: Option<Duration>,
    /// Backoff, if the job set one.
    pub backoff: Option<Backoff>,
    /// W3C trace context of the enqueue, when it had one.
    pub traceparent: Option<String>,
}

/// How an attempt ended, decided by the worker runtime and recorded by the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Done.
    Completed,
    /// Failed; run again at `at`.
    Retry {
        /// Next run time (ms since epoch).
        at_ms: i64,
        /// The error of this attempt.
        error: String,
    },
    /// Failed for good; goes to the dead-letter list.
    Dead {
        /// The error of this attempt.
        error: String,
    },
    /// Cancelled while running.
    Cancelled,
    /// Not finished (shutdown): give the job back without counting the attempt.
    Released,
}

/// One finished attempt, reported by a worker to its engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The job.
    pub id: JobId,
    /// The attempt that ended.
    pub attempt: u32,
    /// How it ended.
    pub completion: Completion,
}

/// Everything known about one job, for `conveyor job` and the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Id.
    pub id: JobId,
    /// Handler kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// State.
    pub state: JobState,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Priority.
    pub priority: i32,
    /// When the job runs (or ran) next.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When that error happened.
    pub errored_at: Option<DateTime<Utc>>,
    /// The last progress the handler reported.
    pub progress: Option<serde_json::Value>,
    /// The payload.
    pub payload: serde_json::Value,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Ordering key.
    pub ordering_key: Option<String>,
    /// A user asked to cancel this running job; its worker stops it at the next heartbeat.
    pub cancel_requested: bool,
    /// The job this one re-runs, when `conveyor replay` made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<JobId>,
}

impl JobInfo {
    /// Converts stored milliseconds into the API's time type.
    pub fn time(ms: i64) -> DateTime<Utc> {
        from_ms(ms)
    }
}

/// A dead job with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job as it died.
    #[serde(flatten)]
    pub job: JobInfo,
    /// The queue it belonged to.
    pub original_queue: String,
    /// Kafka topic it was read from, when the engine has topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_topic: Option<String>,
    /// Kafka partition it was read from, when the engine has partitions.
    pub original_partition: Option<i32>,
    /// Kafka offset it was read from, when the engine has offsets.
    pub original_offset: Option<i64>,
}

/// Job counts of one queue by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Due now.
    pub available: u64,
    /// Waiting for their time.
    pub scheduled: u64,
    /// Leased.
    pub running: u64,
    /// Waiting for a retry.
    pub retryable: u64,
    /// Finished (until cleaned up).
    pub completed: u64,
    /// In the dead-letter list.
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Engines with partitions (Kafka): each partition's committed offset, end and lag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionLag>,
}

/// Where the workers' group stands in one partition of a queue's topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (the log start when it has committed nothing).
    pub committed: i64,
    /// The log end offset.
    pub end: i64,
    /// Records not yet finished: `end - committed`.
    pub lag: u64,
}

impl QueueStats {
    /// Adds `n` jobs in `state`.
    pub fn add(&mut self, state: JobState, n: u64) {
        let slot = match state {
            JobState::Available => &mut self.available,
            JobState::Scheduled => &mut self.scheduled,
            JobState::Running => &mut self.running,
            JobState::Retryable => &mut self.retryable,
            JobState::Completed => &mut self.completed,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
}

/// Counts of every queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// One entry per queue that has jobs, sorted by name.
    pub queues: Vec<QueueStats>,
}

impl Stats {
    /// The entry of `queue`, if it has jobs.
    pub fn queue(&self, queue: &str) -> Option<&QueueStats> {
        self.queues.iter().find(|q| q.queue == queue)
    }
}

/// Checks a W3C `traceparent` (`00-` 32 hex digits `-` 16 hex digits `-` 2 hex digits).
pub fn check_traceparent(text: &str) -> Result<()> {
    let parts: Vec<&str> = text.split('-').collect();
    // Lower-case hex only, and neither id all zeros, as the W3C format says.
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    let ok = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && !zeros(parts[1])
        && hex(parts[2], 16)
        && !zeros(parts[2])
        && hex(parts[3], 2);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "traceparent",
            format!(
                "{:?} is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)",
                text.chars().take(80).collect::<String>()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>().unwrap(), st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let err = NewJob::new("bad kind!", serde_json::json!({})).validate(100);
        assert!(matches!(
            err,
            Err(Error::InvalidInput { field: "kind", .. })
        ));
        let err = NewJob::new("k", serde_json::json!({}))
            .max_attempts(0)
            .validate(100);
        assert!(matches!(
            err,
            Err(Error::InvalidInput {
                field: "max_attempts",
                ..
            })
        ));
        let big = NewJob::new("k", serde_json::json!("x".repeat(200))).validate(100);
        assert!(matches!(
            big,
            Err(Error::PayloadTooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn future_jobs_start_scheduled() {
        let job = NewJob::new("k", serde_json::json!(null)).run_in(Duration::from_secs(60));
        assert_eq!(job.initial_state(now_ms()), JobState::Scheduled);
        assert_eq!(
            NewJob::new("k", serde_json::json!(null)).initial_state(now_ms()),
            JobState::Available
        );
    }
}
