use std::time::Duration;

use serde::Serialize;

use crate::JobId;

/// Lifecycle events a worker publishes (subscribe with [`crate::Worker::events`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// An attempt started.
    Started {
        /// Job.
        id: JobId,
        /// Kind.
        kind: String,
        /// Queue.
        queue: String,
        /// Attempt number.
        attempt: u32,
    },
    /// The job completed.
    Completed {
        /// Job.
        id: JobId,
        /// Kind.
        kind: String,
        /// Queue.
        queue: String,
        /// How long the attempt ran.
        #[serde(with = "duration_ms")]
        took: Duration,
    },
    /// An attempt failed and the job will be retried.
    Failed {
        /// Job.
        id: JobId,
        /// Kind.
        kind: String,
        /// Queue.
        queue: String,
        /// Attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
    },
    /// The job went to the dead-letter list.
    Dead {
        /// Job.
        id: JobId,
        /// Kind.
        kind: String,
        /// Queue.
        queue: String,
        /// The last error.
        error: String,
    },
    /// The job was cancelled while it ran.
    Cancelled {
        /// Job.
        id: JobId,
        /// Kind.
        kind: String,
        /// Queue.
        queue: String,
    },
}

impl JobEvent {
    /// The job the event is about.
    pub fn id(&self) -> JobId {
        match self {
            JobEvent::Started { id, .. }
            | JobEvent::Completed { id, .. }
            | JobEvent::Failed { id, .. }
            | JobEvent::Dead { id, .. }
            | JobEvent::Cancelled { id, .. } => *id,
        }
    }
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}
