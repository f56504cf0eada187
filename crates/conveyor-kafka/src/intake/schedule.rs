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
use crate::keys::{DUPLICATE, MOVED};
use crate::state::{Dropped, Lane, Marker, Pending, Tp};
use crate::{Error, Level, Record};

/// Takes in a schedule topic marker (true), or says the record is no marker (false).
pub(super) fn take_marker(shared: &Shared, tp: &Tp, offset: i64, record: &Record) -> bool {
    let text = |name: &str| record.header(name).and_then(Result::ok);
    let Some(what) = text(header::MARKER) else {
        return false;
    };
    if shared.state().lane_of(tp) != Some(Lane::Schedule) {
        return false;
    }
    let id = text(header::ID).and_then(|id| JobId::from_str(id).ok());
    match id {
        Some(id) => {
            let key = text(header::IDEMPOTENCY_KEY);
            let marker = Marker { id, key, what };
            shared.state().schedule_marker(tp, offset, marker, now_ms());
        }
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

/// True when a user cancelled the job or purged its queue (the cancel wrote its status entry).
fn stopped(shared: &Shared, pending: &Pending) -> bool {
    let envelope = &pending.envelope;
    let (cancelled, purged) = shared
        .sidecars
        .control
        .with(|book| (book.is_cancelled(envelope.id), book.is_purged(envelope)));
    if cancelled {
        tracing::debug!(job = %envelope.id, "cancelled before its time: not moved to its queue");
    }
    cancelled || purged
}

/// Moves the delayed jobs due now to their queues' topics, and carries those due far ahead
/// that hold a partition's commit, concurrently. A job whose move or carry the broker refused
/// waits again and is tried at the next pass. Returns the next due time, and whether the
/// broker refused anything.
async fn move_due(shared: &Shared) -> (Option<i64>, bool) {
    let due = shared.state().take_due_scheduled(now_ms());
    let carries = shared.state().take_carries(now_ms());
    let moves = due.into_iter().map(|pending| async move {
        let sent = match stopped(shared, &pending) {
            // Cancelled or purged before its time: it never reaches its queue, and is done
            // here as if moved (its key stays held by it).
            true => Ok(()),
            false => send_to_queue(shared, &pending).await,
        };
        if sent.is_ok() {
            let envelope = &pending.envelope;
            mark(
                shared,
                &pending.tp,
                envelope.id,
                envelope.idempotency_key.as_deref(),
                MOVED,
            )
            .await;
        }
        settle(shared, pending, sent, Placed::Moved)
    });
    let carries = carries.into_iter().map(|pending| async move {
        let record = pending.envelope.to_schedule_record();
        let sent = shared
            .producer
            .send_to(&pending.tp.0, Some(pending.tp.1), &record)
            .await
            .map(|_| ());
        tracing::debug!(job = %pending.envelope.id, offset = pending.offset, "job due far ahead carried to its schedule partition's end");
        settle(shared, pending, sent, Placed::Carried)
    });
    let dropped = shared.state().take_dropped();
    let drops = dropped
        .into_iter()
        .map(|Dropped { tp, id, key }| async move {
            mark(shared, &tp, id, Some(&key), DUPLICATE).await;
        });
    futures::future::join_all(drops).await;
    let (moved, carried) = futures::future::join(
        futures::future::join_all(moves),
        futures::future::join_all(carries),
    )
    .await;
    let refused = moved.into_iter().chain(carried).any(|placed| !placed);
    (shared.state().next_scheduled(), refused)
}

/// Where a due or far-ahead job was sent.
#[derive(Debug, Clone, Copy)]
enum Placed {
    /// To its queue's topic.
    Moved,
    /// To its schedule partition's end.
    Carried,
}

/// Its schedule record is done once the job is elsewhere (true); else it waits again.
fn settle(shared: &Shared, pending: Pending, sent: Result<(), Error>, placed: Placed) -> bool {
    let mut state = shared.state();
    match (sent, placed) {
        (Ok(()), Placed::Moved) => {
            state.scheduled_moved(&pending);
            true
        }
        (Ok(()), Placed::Carried) => {
            state.scheduled_carried(&pending);
            true
        }
        (Err(err), _) => {
            let what = match placed {
                Placed::Moved => "move a due job to its queue",
                Placed::Carried => "carry a job due far ahead",
            };
            tracing::warn!(error = %err, job = %pending.envelope.id, "cannot {what} yet: trying again");
            state.reschedule(pending);
            false
        }
    }
}

/// Writes the marker of a moved (or dropped) job after its record, in its schedule partition.
/// Without it a later owner reading the partition again judges the job again: a moved job is
/// moved again (it runs twice), a dropped duplicate is dropped again unless that owner's key
/// index starts after the key's winner. That is all a failure costs, so it is logged, not
/// retried.
async fn mark(shared: &Shared, tp: &Tp, id: JobId, key: Option<&str>, what: &str) {
    let marker = schedule_marker(id, what, key);
    let sent = shared.producer.send_to(&tp.0, Some(tp.1), &marker).await;
    if let Err(err) = sent {
        tracing::warn!(error = %err, job = %id, what, "cannot write the marker of a job in the schedule topic: a later owner of its partition judges it again");
    }
}

/// A queue topic's record may start at most this long after it is read (ms) to be held in
/// memory until due; one due later goes to the schedule topic. (A job moved there at its time
/// by a worker whose clock runs a little ahead is held here, not sent back.)
const PARK_AFTER_MS: i64 = 1000;

/// A record of a queue or ingest topic that is not due for a while (a Java scheduler's
/// request for next week, say) is parked in the schedule topic, and its record here is done:
/// it must not hold its partition's commit, nor the jobs behind it, nor depend on the queue
/// topic's retention. So is a job whose idempotency key was not checked yet (a plain
/// producer's record with a key, a Go event): it runs only if it wins its key there (see
/// src/keys). Returns the record when it stays here (due soon and checked, or it could not be
/// parked: then it waits in memory, never early either way).
pub(super) async fn park_if_not_due(shared: &Shared, pending: Pending) -> Option<Pending> {
    let lane = shared.state().lane_of(&pending.tp);
    let far = pending
        .envelope
        .not_before
        .is_some_and(|at| at > now_ms() + PARK_AFTER_MS);
    let park = far || pending.envelope.needs_key_check();
    if !park || !matches!(lane, Some(Lane::Fresh | Lane::Urgent)) {
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
    let mut record = envelope.to_record();
    if envelope.needs_key_check() && pending.tp.0.as_ref() == shared.config.topics.scheduled() {
        // It won its key here: its queue's workers run it without checking again.
        let checked = crate::Envelope {
            key_checked: true,
            ..envelope.clone()
        };
        record = checked.to_record();
    }
    shared.producer.send(&topic, &record).await.map(|_| ())
}
