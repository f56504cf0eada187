//! The schedule lane's work: moving delayed jobs to their queues' topics when due, writing
//! the markers that say so, and carrying jobs due far ahead (see state/timetable.rs).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{now_ms, JobId};
use tokio::sync::watch;

use super::refetch::cached_log_end;
use super::{LaneConsumer, Shared};
use crate::envelope::{header, schedule_marker};
use crate::state::{Lane, Pending, Tp};
use crate::{Error, Level, Record};

/// The marker of a job moved to its queue's topic.
const MOVED: &str = "moved";

/// Takes in a schedule topic marker (true), or says the record is no marker (false).
pub(super) fn take_marker(shared: &Shared, tp: &Tp, offset: i64, record: &Record) -> bool {
    if record.header(header::MARKER).is_none() || shared.state().lane_of(tp) != Some(Lane::Schedule)
    {
        return false;
    }
    let id = record
        .header(header::ID)
        .and_then(Result::ok)
        .and_then(|id| JobId::from_str(id).ok());
    match id {
        Some(id) => shared.state().schedule_marker(tp, offset, id, now_ms()),
        None => {
            tracing::warn!(topic = %tp.0, partition = tp.1, offset, "a schedule marker without a job id: ignored");
            shared.state().skip(tp, offset);
        }
    }
    true
}

/// Longest the mover sleeps without being woken: how soon a partition whose reading reached
/// its end is found caught up when no record wakes the mover (ms).
const MOVER_NAP_MS: i64 = 200;

/// The schedule lane's mover, until `stop`: moves due jobs (and carries jobs due far ahead),
/// then sleeps until the next is due or a delayed job is read.
pub(super) async fn mover(
    consumer: Arc<LaneConsumer>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        catch_up(&consumer, &shared);
        let (next, refused) = move_due(&shared).await;
        let nap = match next {
            // The broker refused a move: not again at once (it would spin on the error).
            _ if refused => MOVER_NAP_MS,
            Some(at) => (at - now_ms()).clamp(0, MOVER_NAP_MS),
            None => MOVER_NAP_MS,
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = shared.schedule_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(nap as u64)) => {}
        }
    }
}

/// Marks the schedule partitions whose reading reached the log end the consumer last heard of
/// as caught up (see state/timetable.rs): from then on their due jobs are moved. An empty
/// partition is caught up at its first fetch answer.
fn catch_up(consumer: &LaneConsumer, shared: &Shared) {
    let catching_up = shared.state().catching_up();
    for (tp, at) in catching_up {
        let Some(end) = cached_log_end(consumer, &tp) else {
            continue;
        };
        if at.unwrap_or(0) >= end {
            shared.state().caught_up(&tp);
        }
    }
}

/// Moves the delayed jobs due now to their queues' topics, and carries those due far ahead
/// that hold a partition's commit, concurrently. A job whose move or carry the broker refused
/// waits again and is tried at the next pass. Returns the next due time, and whether the
/// broker refused anything.
async fn move_due(shared: &Shared) -> (Option<i64>, bool) {
    let due = shared.state().take_due_scheduled(now_ms());
    let carries = shared.state().take_carries(now_ms());
    let moves = due.into_iter().map(|pending| async move {
        let sent = send_to_queue(shared, &pending).await;
        if sent.is_ok() {
            mark(shared, &pending, MOVED).await;
        }
        settle(shared, pending, sent, "move a due job to its queue")
    });
    let carries = carries.into_iter().map(|pending| async move {
        let record = pending.envelope.to_schedule_record();
        let sent = shared
            .producer
            .send_to(&pending.tp.0, Some(pending.tp.1), &record)
            .await
            .map(|_| ());
        tracing::debug!(job = %pending.envelope.id, offset = pending.offset, "job due far ahead carried to its schedule partition's end");
        settle(shared, pending, sent, "carry a job due far ahead")
    });
    let (moved, carried) = futures::future::join(
        futures::future::join_all(moves),
        futures::future::join_all(carries),
    )
    .await;
    let refused = moved.into_iter().chain(carried).any(|placed| !placed);
    (shared.state().next_scheduled(), refused)
}

/// Its schedule record is done once the job is elsewhere (true); else it waits again.
fn settle(shared: &Shared, pending: Pending, sent: Result<(), Error>, what: &str) -> bool {
    let mut state = shared.state();
    match sent {
        Ok(()) => {
            state.scheduled_moved(&pending);
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, job = %pending.envelope.id, "cannot {what} yet: trying again");
            state.reschedule(pending);
            false
        }
    }
}

/// Writes the marker of a moved job after its record, in its schedule partition. Without it a
/// later owner reading the partition again moves the job again (it runs twice): that is all a
/// failure costs, so it is logged, not retried.
async fn mark(shared: &Shared, pending: &Pending, what: &str) {
    let marker = schedule_marker(pending.envelope.id, what);
    let sent = shared
        .producer
        .send_to(&pending.tp.0, Some(pending.tp.1), &marker)
        .await;
    if let Err(err) = sent {
        tracing::warn!(error = %err, job = %pending.envelope.id, "cannot write the marker of a moved job: a later owner of its schedule partition may move it again");
    }
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
    let mut record = pending.envelope.to_schedule_record();
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
