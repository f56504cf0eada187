use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::{Engine, Job, JobId, Result};

/// How a handler's attempt ended. A type, not a string: the runtime maps it to the next state.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job is done.
    Complete,
    /// The attempt failed; retry after the job's backoff (or dead-letter when out of attempts).
    Retry(String),
    /// The attempt failed; retry after exactly `delay` (or dead-letter when out of attempts).
    RetryAfter {
        /// Wait before the next attempt.
        delay: Duration,
        /// Why the attempt failed.
        error: String,
    },
    /// The job can never succeed: dead-letter it now, whatever attempts remain.
    Discard(String),
}

impl<E: fmt::Display> From<std::result::Result<(), E>> for Outcome {
    /// `Ok` completes; `Err` retries with the error's text.
    fn from(result: std::result::Result<(), E>) -> Self {
        match result {
            Ok(()) => Outcome::Complete,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

/// What a handler receives: the job and a way to report progress.
#[derive(Clone)]
pub struct JobContext {
    job: Arc<Job>,
    engine: Arc<dyn Engine>,
    owner: Arc<str>,
}

impl JobContext {
    pub(crate) fn new(job: Arc<Job>, engine: Arc<dyn Engine>, owner: Arc<str>) -> Self {
        JobContext { job, engine, owner }
    }

    /// The job being run.
    pub fn job(&self) -> &Job {
        &self.job
    }
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }
    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }
    /// The W3C trace context of the job's enqueue, to continue its trace in the handler.
    pub fn traceparent(&self) -> Option<&str> {
        self.job.traceparent.as_deref()
    }

    /// Decodes the payload into `T`. A payload that does not decode can never succeed, so the
    /// error is an [`Outcome::Discard`] naming the type and the decode error: return it.
    pub fn payload<T: DeserializeOwned>(&self) -> std::result::Result<T, Outcome> {
        serde_json::from_str(&self.job.payload).map_err(|e| {
            Outcome::Discard(format!(
                "payload of {} job does not decode as {}: {e}",
                self.job.kind,
                std::any::type_name::<T>()
            ))
        })
    }

    /// Stores `progress` (any JSON) on the job; `conveyor job ID` shows the latest.
    pub async fn progress(&self, progress: serde_json::Value) -> Result<()> {
        self.engine
            .set_progress(&self.owner, self.job.id, progress)
            .await
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The stable kind name this handler serves (a wire name: never rename it casually).
    fn kind(&self) -> &str;
    /// Runs one attempt.
    async fn handle(&self, ctx: JobContext) -> Outcome;
}

struct FnHandler<F> {
    kind: String,
    f: F,
}

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn kind(&self) -> &str {
        &self.kind
    }
    async fn handle(&self, ctx: JobContext) -> Outcome {
        (self.f)(ctx).await
    }
}

/// A handler from a closure: `handler_fn("resize", |ctx| async move { Outcome::Complete })`.
pub fn handler_fn<F, Fut>(kind: impl Into<String>, f: F) -> Arc<dyn Handler>
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(FnHandler {
        kind: kind.into(),
        f,
    })
}

/// The handlers a worker serves, by kind, and by queue for handlers that serve every kind of
/// a queue (a configured pool serving a RoadRunner pipeline, say).
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    queues: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in kinds (`noop`, `sleep`, `fail`, `echo`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        crate::register_builtins(&mut registry);
        registry
    }

    /// Adds (or replaces) the handler of its kind.
    pub fn register(&mut self, handler: Arc<dyn Handler>) -> &mut Self {
        self.handlers.insert(handler.kind().to_string(), handler);
        self
    }

    /// Makes `handler` run every job of `queue` whose kind has no handler of its own.
    pub fn register_queue(
        &mut self,
        queue: impl Into<String>,
        handler: Arc<dyn Handler>,
    ) -> &mut Self {
        self.queues.insert(queue.into(), handler);
        self
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// The handler of a job: the one of its kind, else the one of its queue.
    pub fn handler_for(&self, job: &Job) -> Option<&Arc<dyn Handler>> {
        self.handlers
            .get(&job.kind)
            .or_else(|| self.queues.get(&job.queue))
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Queues served whatever the kind, sorted.
    pub fn queues(&self) -> Vec<&str> {
        let mut queues: Vec<&str> = self.queues.keys().map(String::as_str).collect();
        queues.sort_unstable();
        queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_handler_wins_over_its_queue_handler() {
        let mut registry = Registry::new();
        registry.register(handler_fn("a", |_| async { Outcome::Complete }));
        registry.register_queue("q", handler_fn("q-pool", |_| async { Outcome::Complete }));
        let job = |kind: &str, queue: &str| Job {
            id: JobId::new(),
            kind: kind.into(),
            queue: queue.into(),
            payload: "{}".into(),
            attempt: 1,
            max_attempts: 1,
            timeout: None,
            backoff: None,
            traceparent: None,
        };
        let kind_of = |j: &Job| registry.handler_for(j).map(|h| h.kind().to_string());
        assert_eq!(kind_of(&job("a", "q")).as_deref(), Some("a"));
        assert_eq!(kind_of(&job("b", "q")).as_deref(), Some("q-pool"));
        assert_eq!(kind_of(&job("b", "other")), None);
        assert_eq!(registry.queues(), ["q"]);
    }
}
