//! The pool's wire protocol, version 1: JSON lines on the worker process's stdin and stdout
//! (`docs/worker-protocol.md` is the reference for worker authors).
//!
//! Conveyor → worker: one `job` line per job, only once the previous job's result was read.
//! Worker → Conveyor: a `ready` line once at start-up, then per job any number of `progress`
//! lines and exactly one `complete` or `fail` line.

use std::time::Duration;

use conveyor_core::{Job, Outcome};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; a worker announcing another one is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// A job as sent to a worker process (one line).
#[derive(Debug, Serialize)]
pub struct JobLine<'a> {
    /// Always `"job"`.
    #[serde(rename = "type")]
    pub kind_of_line: &'static str,
    /// The job id (a UUID).
    pub id: String,
    /// The job's kind.
    pub kind: &'a str,
    /// The job's queue.
    pub queue: &'a str,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The attempts the job may take.
    pub max_attempts: u32,
    /// The payload, as JSON.
    pub payload: serde_json::Value,
    /// Job headers (reserved: empty in this version).
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// When Conveyor stops waiting for the result, in milliseconds since the Unix epoch.
    pub deadline_ms: i64,
}

impl<'a> JobLine<'a> {
    /// The line for `job`, whose attempt must end by `deadline_ms`.
    pub fn new(job: &'a Job, deadline_ms: i64) -> Self {
        // The stored payload is JSON text, maybe pretty-printed: re-encoding it keeps the line
        // on one line whatever the producer wrote.
        let payload = serde_json::from_str(&job.payload)
            .unwrap_or_else(|_| serde_json::Value::String(job.payload.clone()));
        JobLine {
            kind_of_line: "job",
            id: job.id.to_string(),
            kind: &job.kind,
            queue: &job.queue,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            payload,
            headers: serde_json::Map::new(),
            deadline_ms,
        }
    }

    /// The line, newline included.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and a `Value` cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A line a worker process writes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WorkerLine {
    /// Start-up is done; the process waits for its first job.
    Ready {
        /// The protocol version the worker speaks.
        protocol: u32,
    },
    /// Progress of the current job (any JSON), stored on the job.
    Progress {
        /// The progress value.
        #[serde(default)]
        progress: serde_json::Value,
    },
    /// The current job is done.
    Complete,
    /// The current job failed.
    Fail {
        /// Why.
        #[serde(default)]
        error: String,
        /// Whether to retry (default true); false dead-letters the job now.
        #[serde(default = "yes")]
        retry: bool,
        /// Retry after exactly this long instead of the job's backoff.
        #[serde(default)]
        delay_ms: Option<u64>,
    },
}

fn yes() -> bool {
    true
}

impl WorkerLine {
    /// Parses one line, or says in a sentence why it is not in the protocol.
    pub fn parse(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| {
            let shown: String = line.chars().take(200).collect();
            format!("not a protocol line ({e}): {shown:?}")
        })
    }

    /// The job's outcome when this line ends a job (`complete` or `fail`).
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            WorkerLine::Complete => Some(Outcome::Complete),
            WorkerLine::Fail {
                error,
                retry: false,
                ..
            } => Some(Outcome::Discard(error.clone())),
            WorkerLine::Fail {
                error,
                delay_ms: Some(ms),
                ..
            } => Some(Outcome::RetryAfter {
                delay: Duration::from_millis(*ms),
                error: error.clone(),
            }),
            WorkerLine::Fail { error, .. } => Some(Outcome::Retry(error.clone())),
            WorkerLine::Ready { .. } | WorkerLine::Progress { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::JobId;

    #[test]
    fn a_job_is_one_line_with_its_fields() {
        let job = Job {
            id: JobId::new(),
            kind: "face-comparison".into(),
            queue: "q".into(),
            payload: "{\n  \"match\": true\n}".into(),
            attempt: 2,
            max_attempts: 5,
            timeout: None,
            backoff: None,
            traceparent: None,
        };
        let line = JobLine::new(&job, 42).encode();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(value["type"], "job");
        assert_eq!(value["payload"]["match"], true);
        assert_eq!(
            (value["attempt"].as_u64(), value["deadline_ms"].as_i64()),
            (Some(2), Some(42))
        );
    }

    #[test]
    fn results_map_to_outcomes() {
        let parse = |s: &str| WorkerLine::parse(s).expect(s).outcome();
        assert_eq!(parse(r#"{"type":"complete"}"#), Some(Outcome::Complete));
        assert_eq!(
            parse(r#"{"type":"fail","error":"e"}"#),
            Some(Outcome::Retry("e".into()))
        );
        assert_eq!(
            parse(r#"{"type":"fail","error":"e","retry":false}"#),
            Some(Outcome::Discard("e".into()))
        );
        assert_eq!(
            parse(r#"{"type":"fail","error":"e","delay_ms":1500}"#),
            Some(Outcome::RetryAfter {
                delay: Duration::from_millis(1500),
                error: "e".into()
            })
        );
        assert_eq!(parse(r#"{"type":"progress","progress":{"p":1}}"#), None);
        let err = WorkerLine::parse("hello world").expect_err("garbage");
        assert!(err.contains("hello world"), "{err}");
    }
}
