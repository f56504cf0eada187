//! The schedule lane's work: moving delayed jobs to their queues' topics when due.

use conveyor_core::now_ms;

use super::Shared;
use crate::state::{Lane, Pending};
use crate::{Error, Level};

/// Moves the delayed jobs due now to their queues' topics, concurrently; their schedule
/// records are then done. A job whose move the broker refused waits again and is tried at the
/// next pass. Returns the next due time.
pub(super) async fn move_due(shared: &Shared) -> Option<i64> {
    let due = shared.state().take_due_scheduled(now_ms());
    if !due.is_empty() {
        let moves = due.into_iter().map(|pending| async move {
            let sent = send_to_queue(shared, &pending).await;
            let mut state = shared.state();
            match sent {
                Ok(()) => state.scheduled_moved(&pending),
                Err(err) => {
                    tracing::warn!(error = %err, job = %pending.envelope.id, "cannot move a due job to its queue yet: trying again");
                    state.reschedule(pending);
                }
            }
        });
        futures::future::join_all(moves).await;
    }
    shared.state().next_scheduled()
}

/// A queue topic's record may start at most this long after it is read (ms) to be held in
/// memory until due; one due later goes to the schedule topic. (A job moved there at its time
/// by a worker whose clock runs a little ahead is held here, not sent back.)
const PARK_AFTER_MS: i64 = 1000;

/// A record of a queue or ingest topic that is not due for a while (a Java scheduler's
/// request for next week, say) is parked in the schedule topic, and its record here is done:
/// it must not hold its partition's commit, nor the jobs behind it, nor depend on the queue
/// topic's retention. Returns the record when it stays here (due soon, or it could not be
/// parked: then it waits in memory, never early either way).
pub(super) async fn park_if_not_due(shared: &Shared, pending: Pending) -> Option<Pending> {
    let lane = shared.state().lane_of(&pending.tp);
    let far = pending
        .envelope
        .not_before
        .is_some_and(|at| at > now_ms() + PARK_AFTER_MS);
    if !far || !matches!(lane, Some(Lane::Fresh | Lane::Urgent)) {
        return Some(pending);
    }
    let topic = shared.config.topics.scheduled();
    let mut record = pending.envelope.to_record();
    super::origin(&mut record, &pending.tp, pending.offset);
    match shared.producer.send(&topic, &record).await {
        Ok(_) => {
            tracing::debug!(job = %pending.envelope.id, from = %pending.tp.0, offset = pending.offset, "job not due yet: parked in the schedule topic");
            shared.state().skip(&pending.tp, pending.offset);
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, job = %pending.envelope.id, "cannot park a job that is not due yet in the schedule topic: it waits in memory");
            Some(pending)
        }
    }
}

/// Produces a job's record to its queue's topic, at its priority level.
pub(crate) async fn send_to_queue(shared: &Shared, pending: &Pending) -> Result<(), Error> {
    let envelope = &pending.envelope;
    let topic = shared
        .config
        .topics
        .queue_at(&envelope.queue, Level::of(envelope.priority));
    shared
        .producer
        .ensure_topics(std::slice::from_ref(&topic))
        .await?;
    tracing::debug!(job = %envelope.id, queue = %envelope.queue, %topic, from = %pending.tp.0, "job moved to its queue's topic");
    shared
        .producer
        .send(&topic, &envelope.to_record())
        .await
        .map(|_| ())
}
