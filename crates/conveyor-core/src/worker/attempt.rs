//! One attempt of a job: run its handler under a timeout, catch panics, decide the next state.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::Shared;
use crate::{now_ms, Backoff, Completion, Job, JobContext, JobEvent, Outcome, Report};

/// Runs an attempt that stops by itself once its lease may have expired. `trust` holds the
/// deadline (the last confirmed renewal plus the trusted part of the lease), moved forward by
/// every successful heartbeat; `None` for engines whose leases do not expire by time. The
/// attempt checks it on its own, so a worker loop stuck on busy storage cannot keep it running
/// past its lease while the engine hands the job (or the next job of its key) to another
/// worker. A stopped attempt counts: it is retried now, or dead-lettered if it was the last.
pub(super) async fn run_guarded(
    shared: Arc<Shared>,
    handler: Arc<dyn crate::Handler>,
    job: Arc<Job>,
    trust: Option<watch::Receiver<tokio::time::Instant>>,
) -> Report {
    let Some(mut trust) = trust else {
        return run_attempt(&shared, handler, job).await;
    };
    let (id, attempt, max_attempts) = (job.id, job.attempt, job.max_attempts);
    let (kind, queue) = (job.kind.clone(), job.queue.clone());
    let run = run_attempt(&shared, handler, job);
    tokio::pin!(run);
    let mut renewals = true;
    loop {
        let deadline = *trust.borrow_and_update();
        tokio::select! {
            report = &mut run => return report,
            _ = tokio::time::sleep_until(deadline) => {
                if *trust.borrow() <= tokio::time::Instant::now() {
                    break;
                }
            }
            changed = trust.changed(), if renewals => renewals = changed.is_ok(),
        }
    }
    let error = "stopped: the lease could not be renewed in time (storage busy or unreachable), \
                 so another worker may take the job"
        .to_string();
    tracing::error!(job = %id, attempt, "{error}");
    let completion = if attempt >= max_attempts {
        Completion::Dead { error }
    } else {
        Completion::Retry {
            at_ms: now_ms(),
            error,
        }
    };
    // The event says what became of the job: dead after its last attempt, else failed.
    shared.emit(|| match &completion {
        Completion::Dead { error } => JobEvent::Dead {
            id,
            kind,
            queue,
            error: error.clone(),
        },
        _ => JobEvent::Failed {
            id,
            kind,
            queue,
            attempt,
            error: completion_error(&completion),
        },
    });
    Report {
        id,
        attempt,
        completion,
    }
}

pub(super) async fn run_attempt(
    shared: &Shared,
    handler: Arc<dyn crate::Handler>,
    job: Arc<Job>,
) -> Report {
    shared.emit(|| JobEvent::Started {
        id: job.id,
        kind: job.kind.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
    });
    let started = Instant::now();
    let timeout = job.timeout.unwrap_or(shared.default_timeout);
    let ctx = JobContext::new(job.clone(), shared.engine.clone(), shared.owner.clone());
    // The handler runs in a span naming the job and, when the enqueue had one, its trace
    // context: the handler's logs carry the producer's trace id.
    let span = tracing::info_span!(
        "job",
        id = %job.id,
        kind = %job.kind,
        queue = %job.queue,
        attempt = job.attempt,
        traceparent = job.traceparent.as_deref().unwrap_or(""),
    );
    crate::trace_hook::on_job_span(&span, job.traceparent.as_deref());
    let attempt = AssertUnwindSafe(handler.handle(ctx).instrument(span)).catch_unwind();
    let outcome = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Outcome::Retry(format!("handler panicked: {}", panic_message(&panic))),
        Err(_) => Outcome::Retry(format!("timed out after {}", humanize(timeout))),
    };
    let backoff = job.backoff.unwrap_or(shared.backoff);
    let completion = decide(&job, outcome, &backoff);
    shared.emit(|| event_for(&job, &completion, started.elapsed()));
    Report {
        id: job.id,
        attempt: job.attempt,
        completion,
    }
}

/// Maps a handler's outcome to the job's next state under its attempt limit and backoff.
fn decide(job: &Job, outcome: Outcome, backoff: &Backoff) -> Completion {
    let (delay, error) = match outcome {
        Outcome::Complete => return Completion::Completed,
        Outcome::Discard(error) => return Completion::Dead { error },
        Outcome::Retry(error) => (backoff.delay(job.attempt), error),
        Outcome::RetryAfter { delay, error } => (delay, error),
    };
    if job.attempt >= job.max_attempts {
        Completion::Dead { error }
    } else {
        Completion::Retry {
            at_ms: now_ms().saturating_add(delay.as_millis() as i64),
            error,
        }
    }
}

fn event_for(job: &Job, completion: &Completion, took: Duration) -> JobEvent {
    let (id, kind, queue) = (job.id, job.kind.clone(), job.queue.clone());
    match completion {
        Completion::Completed => JobEvent::Completed {
            id,
            kind,
            queue,
            took,
        },
        Completion::Retry { error, .. } => JobEvent::Failed {
            id,
            kind,
            queue,
            attempt: job.attempt,
            error: error.clone(),
        },
        Completion::Dead { error } => JobEvent::Dead {
            id,
            kind,
            queue,
            error: error.clone(),
        },
        Completion::Cancelled | Completion::Released => JobEvent::Cancelled { id, kind, queue },
    }
}

/// The error a failed attempt's completion carries.
fn completion_error(completion: &Completion) -> String {
    match completion {
        Completion::Retry { error, .. } | Completion::Dead { error } => error.clone(),
        _ => String::new(),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobId;

    fn job(attempt: u32, max: u32) -> Job {
        Job {
            id: JobId::new(),
            kind: "k".into(),
            queue: "q".into(),
            payload: "{}".into(),
            attempt,
            max_attempts: max,
            timeout: None,
            backoff: None,
            traceparent: None,
        }
    }

    #[test]
    fn outcomes_map_to_states() {
        let b = Backoff::default();
        assert_eq!(
            decide(&job(1, 3), Outcome::Complete, &b),
            Completion::Completed
        );
        assert!(matches!(
            decide(&job(1, 3), Outcome::Retry("x".into()), &b),
            Completion::Retry { .. }
        ));
        assert!(matches!(
            decide(&job(3, 3), Outcome::Retry("x".into()), &b),
            Completion::Dead { .. }
        ));
        assert!(matches!(
            decide(&job(1, 3), Outcome::Discard("x".into()), &b),
            Completion::Dead { .. }
        ));
    }

    #[test]
    fn retry_after_uses_the_given_delay() {
        let before = now_ms();
        let c = decide(
            &job(1, 3),
            Outcome::RetryAfter {
                delay: Duration::from_secs(60),
                error: "later".into(),
            },
            &Backoff::default(),
        );
        let Completion::Retry { at_ms, .. } = c else {
            panic!("expected retry, got {c:?}")
        };
        assert!(at_ms >= before + 60_000 && at_ms <= now_ms() + 60_000);
    }
}
