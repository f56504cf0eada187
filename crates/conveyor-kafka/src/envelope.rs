//! Conveyor's own record format on Kafka (version 1), documented in `docs/kafka-wire-format.md`.
//!
//! - key: the ordering key, or the job id when there is none (so a partition holds a key's jobs
//!   in order, and jobs without a key spread evenly);
//! - value: the payload, JSON;
//! - headers: metadata as UTF-8 text, names in [`header`].

use std::time::Duration;

use conveyor_core::{Backoff, JobId, NewJob};

use crate::Error;

/// Record headers, in order, as (name, value) pairs.
pub type Headers = Vec<(String, Vec<u8>)>;

/// A record as a Kafka client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Headers,
}

impl Record {
    /// The first header called `name`, as text.
    pub fn header(&self, name: &str) -> Option<Result<&str, Error>> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| {
            std::str::from_utf8(v).map_err(|_| Error::invalid(name, "header is not UTF-8"))
        })
    }
}

/// A schedule topic marker: what became of delayed job `id` (`what`: `moved` or
/// `duplicate`), with the job's idempotency key when it has one (the key index reads it).
/// Markers are produced into their job's partition by number, whatever their record key.
pub fn schedule_marker(id: JobId, what: &str, idempotency_key: Option<&str>) -> Record {
    let mut headers = vec![
        (header::ID.to_string(), id.to_string().into_bytes()),
        (header::MARKER.to_string(), what.as_bytes().to_vec()),
    ];
    if let Some(key) = idempotency_key {
        headers.push((header::IDEMPOTENCY_KEY.to_string(), key.as_bytes().to_vec()));
    }
    Record {
        key: Some(id.to_string().into_bytes()),
        value: None,
        headers,
    }
}

/// Stable header names. Never rename one: producers in other languages write them.
pub mod header {
    /// Envelope version; its presence marks a record as Conveyor's own.
    pub const VERSION: &str = "conveyor-version";
    /// Job id (UUID).
    pub const ID: &str = "conveyor-id";
    /// Handler kind.
    pub const KIND: &str = "conveyor-kind";
    /// Queue the job belongs to (retry and schedule topics are shared by queues).
    pub const QUEUE: &str = "conveyor-queue";
    /// Attempts already made (0 for a new job).
    pub const ATTEMPT: &str = "conveyor-attempt";
    /// Attempts allowed.
    pub const MAX_ATTEMPTS: &str = "conveyor-max-attempts";
    /// Priority, an integer; higher first.
    pub const PRIORITY: &str = "conveyor-priority";
    /// Earliest run time, milliseconds since the Unix epoch.
    pub const NOT_BEFORE: &str = "conveyor-not-before";
    /// Enqueue time, milliseconds since the Unix epoch.
    pub const ENQUEUED_AT: &str = "conveyor-enqueued-at";
    /// Per-attempt timeout in milliseconds.
    pub const TIMEOUT_MS: &str = "conveyor-timeout-ms";
    /// Backoff, JSON `{"base":ms,"max":ms,"jitter":f}`.
    pub const BACKOFF: &str = "conveyor-backoff";
    /// Idempotency key.
    pub const IDEMPOTENCY_KEY: &str = "conveyor-idempotency-key";
    /// Ordering key (also the record key).
    pub const ORDERING_KEY: &str = "conveyor-ordering-key";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// Dead letters and retries: the topic the record was read from (seed-compatible name).
    pub const ORIGINAL_TOPIC: &str = "original-topic";
    /// Dead letters and retries: its partition.
    pub const ORIGINAL_PARTITION: &str = "original-partition";
    /// Dead letters and retries: its offset.
    pub const ORIGINAL_OFFSET: &str = "original-offset";
    /// Dead letters and retries: the last error.
    pub const ERROR_MESSAGE: &str = "error-message";
    /// Dead letters and retries: when it happened, milliseconds since the Unix epoch.
    pub const ERROR_TIMESTAMP: &str = "error-timestamp";
    /// Schedule topic only: a marker record (no value) saying what became of the delayed job
    /// named by [`ID`]: `moved` (to its queue's topic, when due) or `duplicate` (its
    /// idempotency key names another job: it never runs).
    pub const MARKER: &str = "conveyor-marker";
    /// The job a replayed job re-runs (`conveyor replay`): its provenance.
    pub const REPLAY_OF: &str = "conveyor-replay-of";
    /// The attempts a dead-letter retry gives: the attempts the job was enqueued with (set by
    /// its first retry, which raises `conveyor-max-attempts`).
    pub const ATTEMPT_BUDGET: &str = "conveyor-attempt-budget";
    /// `1` on the record of a keyed job whose idempotency key was checked (it won its key in
    /// the schedule topic): a worker runs it without checking again.
    pub const KEY_CHECKED: &str = "conveyor-key-checked";
}

/// The envelope version this build writes and reads.
pub const VERSION: &str = "1";

/// A job as carried by a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Job id.
    pub id: JobId,
    /// Handler kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Payload, JSON text.
    pub payload: String,
    /// Attempts already made.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Priority.
    pub priority: i32,
    /// Earliest run time (ms since epoch), if delayed.
    pub not_before: Option<i64>,
    /// Enqueue time (ms since epoch).
    pub enqueued_at: i64,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Backoff.
    pub backoff: Option<Backoff>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Ordering key.
    pub ordering_key: Option<String>,
    /// W3C `traceparent` of the producer's span.
    pub traceparent: Option<String>,
    /// The idempotency key won its check in the schedule topic (header
    /// [`header::KEY_CHECKED`]); a keyed job without it is checked before it runs.
    pub key_checked: bool,
    /// The job this one re-runs (header [`header::REPLAY_OF`]).
    pub replay_of: Option<JobId>,
    /// The attempts a dead-letter retry gives, once one happened (header
    /// [`header::ATTEMPT_BUDGET`]).
    pub attempt_budget: Option<u32>,
}

impl Envelope {
    /// The envelope of a new job whose payload was already validated and serialized.
    pub fn from_new_job(job: &NewJob, payload: String, now_ms: i64) -> Self {
        Envelope {
            id: job.id,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            payload,
            attempt: 0,
            max_attempts: job.max_attempts,
            priority: job.priority,
            not_before: job
                .run_at
                .map(|t| t.timestamp_millis())
                .filter(|t| *t > now_ms),
            enqueued_at: now_ms,
            timeout: job.timeout,
            backoff: job.backoff,
            idempotency_key: job.idempotency_key.clone(),
            ordering_key: job.ordering_key.clone(),
            traceparent: job.traceparent.clone(),
            key_checked: false,
            replay_of: job.replay_of,
            attempt_budget: None,
        }
    }

    /// True when the job has an idempotency key not checked yet: it must win its key in the
    /// schedule topic before it runs.
    pub fn needs_key_check(&self) -> bool {
        self.idempotency_key.is_some() && !self.key_checked
    }

    /// The record key: the ordering key, else the job id.
    pub fn key(&self) -> String {
        self.ordering_key
            .clone()
            .unwrap_or_else(|| self.id.to_string())
    }

    /// Encodes the job as a record.
    pub fn to_record(&self) -> Record {
        let mut headers: Headers = Vec::with_capacity(12);
        let mut put =
            |name: &str, value: String| headers.push((name.to_string(), value.into_bytes()));
        put(header::VERSION, VERSION.to_string());
        put(header::ID, self.id.to_string());
        put(header::KIND, self.kind.clone());
        put(header::QUEUE, self.queue.clone());
        put(header::ATTEMPT, self.attempt.to_string());
        put(header::MAX_ATTEMPTS, self.max_attempts.to_string());
        put(header::PRIORITY, self.priority.to_string());
        put(header::ENQUEUED_AT, self.enqueued_at.to_string());
        if let Some(at) = self.not_before {
            put(header::NOT_BEFORE, at.to_string());
        }
        if let Some(t) = self.timeout {
            put(header::TIMEOUT_MS, t.as_millis().to_string());
        }
        if let Some(b) = &self.backoff {
            put(
                header::BACKOFF,
                serde_json::to_string(b).unwrap_or_default(),
            );
        }
        if let Some(k) = &self.idempotency_key {
            put(header::IDEMPOTENCY_KEY, k.clone());
        }
        if let Some(k) = &self.ordering_key {
            put(header::ORDERING_KEY, k.clone());
        }
        if let Some(t) = &self.traceparent {
            put(header::TRACEPARENT, t.clone());
        }
        if self.key_checked {
            put(header::KEY_CHECKED, "1".to_string());
        }
        if let Some(id) = self.replay_of {
            put(header::REPLAY_OF, id.to_string());
        }
        if let Some(budget) = self.attempt_budget {
            put(header::ATTEMPT_BUDGET, budget.to_string());
        }
        Record {
            key: Some(self.key().into_bytes()),
            value: Some(self.payload.clone().into_bytes()),
            headers,
        }
    }

    /// The record of a job in the schedule topic: keyed by its idempotency key, so that every
    /// claim of one key lands in one partition (see `src/keys`), else by its job id (whatever
    /// its ordering key, which stays in its header). Its markers are produced into its
    /// partition by number.
    pub fn to_schedule_record(&self) -> Record {
        let key = match &self.idempotency_key {
            Some(key) => key.clone(),
            None => self.id.to_string(),
        };
        Record {
            key: Some(key.into_bytes()),
            ..self.to_record()
        }
    }

    /// True when the record carries Conveyor's envelope (it has a version header).
    pub fn is_envelope(record: &Record) -> bool {
        record.headers.iter().any(|(n, _)| n == header::VERSION)
    }

    /// Decodes a Conveyor record. `default_queue` applies when the queue header is absent.
    pub fn from_record(record: &Record, default_queue: &str) -> Result<Self, Error> {
        match record.header(header::VERSION).transpose()? {
            Some(VERSION) => {}
            Some(other) => return Err(Error::Version(other.to_string())),
            None => return Err(Error::Missing(header::VERSION)),
        }
        let text = |name: &'static str| record.header(name).transpose();
        let required = |name: &'static str| text(name)?.ok_or(Error::Missing(name));
        let id = required(header::ID)?;
        let id = id
            .parse::<JobId>()
            .map_err(|_| Error::invalid(header::ID, format!("{id:?} is not a UUID")))?;
        let kind = required(header::KIND)?.to_string();
        conveyor_core::check_name("kind", &kind).map_err(|e| Error::invalid(header::KIND, e))?;
        let queue = text(header::QUEUE)?.unwrap_or(default_queue).to_string();
        let payload = payload_text(record)?;
        let backoff = text(header::BACKOFF)?
            .map(|b| {
                serde_json::from_str::<Backoff>(b).map_err(|e| Error::invalid(header::BACKOFF, e))
            })
            .transpose()?;
        Ok(Envelope {
            id,
            kind,
            queue,
            payload,
            attempt: number(record, header::ATTEMPT)?.unwrap_or(0),
            max_attempts: number(record, header::MAX_ATTEMPTS)?
                .unwrap_or(conveyor_core::DEFAULT_MAX_ATTEMPTS),
            priority: number(record, header::PRIORITY)?.unwrap_or(0),
            not_before: number(record, header::NOT_BEFORE)?,
            enqueued_at: number(record, header::ENQUEUED_AT)?.unwrap_or(0),
            timeout: number::<u64>(record, header::TIMEOUT_MS)?.map(Duration::from_millis),
            backoff,
            idempotency_key: text(header::IDEMPOTENCY_KEY)?.map(str::to_string),
            ordering_key: text(header::ORDERING_KEY)?.map(str::to_string),
            // A malformed trace context from a foreign producer is dropped, never handed on.
            traceparent: text(header::TRACEPARENT)?
                .filter(|t| conveyor_core::check_traceparent(t).is_ok())
                .map(str::to_string),
            key_checked: text(header::KEY_CHECKED)? == Some("1"),
            // Provenance only: an unreadable one is dropped, never a reason to refuse the job.
            replay_of: text(header::REPLAY_OF)?.and_then(|id| id.parse().ok()),
            // Like the provenance above: an unreadable budget falls back to max attempts.
            attempt_budget: number(record, header::ATTEMPT_BUDGET).ok().flatten(),
        })
    }
}

/// The record value as JSON text; an absent value is `null`.
pub(crate) fn payload_text(record: &Record) -> Result<String, Error> {
    let Some(value) = &record.value else {
        return Ok("null".to_string());
    };
    let text = std::str::from_utf8(value).map_err(|e| Error::NotJson(format!("not UTF-8: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Error::NotJson(e.to_string()))?;
    Ok(text.to_string())
}

fn number<T: std::str::FromStr>(record: &Record, name: &'static str) -> Result<Option<T>, Error>
where
    T::Err: std::fmt::Display,
{
    record
        .header(name)
        .transpose()?
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|e| Error::invalid(name, format!("{v:?}: {e}")))
        })
        .transpose()
}
