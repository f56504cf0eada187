//! Conveyor's core: the job model, the handler trait, the retry policy, the worker runtime and
//! the engine traits every storage engine implements.
//!
//! This crate has no storage dependency. An engine (SQLite, Kafka, ...) implements [`Engine`]
//! (enqueue, fetch, record outcomes) plus the capability traits it can offer ([`Inspect`],
//! [`Statistics`], [`Control`], [`DeadLetterList`], [`DeadLetters`], [`Schedules`]; [`Export`]
//! and [`Import`] for moving jobs between engines); the [`Worker`] runtime drives any engine
//! through the core trait.

mod builtin;
mod capabilities;
mod cron;
mod engine;
mod error;
mod events;
mod handler;
mod job;
mod listing;
mod moving;
mod presence;
mod retry;
mod trace_hook;
mod worker;

pub use builtin::register_builtins;
pub use capabilities::{Capabilities, Opened};
pub use cron::{next_fire_after, run_scheduler, CronEntry};
pub use engine::{
    Backend, Control, DeadLetterList, DeadLetters, Engine, Fetch, Inspect, ListJobs, Progress,
    Renewal, Replay, Schedules, Statistics, Workers,
};
pub use error::{Error, Result};
pub use events::JobEvent;
pub use handler::{handler_fn, Handler, JobContext, Outcome, Registry};
pub use job::{
    check_name, check_traceparent, now_ms, Completion, DeadLetter, Enqueued, Job, JobId, JobInfo,
    JobState, NewJob, PartitionLag, QueueStats, Report, Stats, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_QUEUE,
};
pub use listing::{JobPage, JobQuery, MAX_LIST_PAGE};
pub use moving::{Export, Import, Imported, Transfer};
pub use presence::WorkerInfo;
pub use retry::Backoff;
pub use trace_hook::{set_job_span_hook, JobSpanHook};
pub use worker::{EventObserver, Worker, WorkerConfig};
