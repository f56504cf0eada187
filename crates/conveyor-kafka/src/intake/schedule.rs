//! The schedule lane's work: moving delayed jobs to their queues' topics when due.

use conveyor_core::now_ms;

use super::Shared;
use crate::state::Pending;
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
