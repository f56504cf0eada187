use std::sync::Arc;

use conveyor_core::{JobId, NewJob};
use serde_json::json;

use super::*;

fn tp(p: i32) -> Tp {
    (Arc::from("conveyor.queue.default"), p)
}

fn pending(p: i32, offset: i64, key: Option<&str>, not_before: Option<i64>) -> Pending {
    let mut job = NewJob::new("noop", json!({}));
    if let Some(k) = key {
        job = job.ordering_key(k);
    }
    let mut envelope = Envelope::from_new_job(&job, "{}".into(), 0);
    envelope.not_before = not_before;
    Pending {
        tp: tp(p),
        offset,
        envelope,
    }
}

fn ids(jobs: &[Pending]) -> Vec<i64> {
    jobs.iter().map(|p| p.offset).collect()
}

#[test]
fn one_job_per_ordering_key_in_offset_order() {
    let mut s = State::default();
    assert_eq!(s.accept(pending(0, 0, Some("k"), None), 0), Accepted::Ready);
    assert_eq!(
        s.accept(pending(0, 1, Some("k"), None), 0),
        Accepted::Waiting
    );
    assert_eq!(s.accept(pending(0, 2, None, None), 0), Accepted::Ready);
    assert_eq!(
        s.accept(pending(0, 3, Some("k"), None), 0),
        Accepted::Waiting
    );
    let first = s.take(10);
    assert_eq!(ids(&first), [0, 2]);
    assert_eq!(s.commits(), [(tp(0), 0)]);
    let job0 = s.unlease(first[0].envelope.id).expect("leased");
    s.finish(&job0, u32::MAX);
    assert_eq!(ids(&s.take(10)), [1], "the next job of the key");
    assert_eq!(s.commits(), [(tp(0), 1)]);
}

#[test]
fn the_commit_waits_for_the_slowest_job() {
    let mut s = State::default();
    for o in 0..4 {
        s.accept(pending(1, o, None, None), 0);
    }
    let jobs = s.take(10);
    for p in &jobs[1..] {
        let p = s.unlease(p.envelope.id).expect("leased");
        s.finish(&p, u32::MAX);
    }
    assert_eq!(s.commits(), [(tp(1), 0)], "offset 0 is still running");
    let p = s.unlease(jobs[0].envelope.id).expect("leased");
    s.finish(&p, u32::MAX);
    assert_eq!(s.commits(), [(tp(1), 4)]);
    assert_eq!(s.buffered(Lane::Fresh), 0);
}

#[test]
fn retry_records_wait_until_due_without_holding_other_partitions() {
    let mut s = State::default();
    assert_eq!(
        s.accept(pending(2, 0, None, Some(1_000)), 0),
        Accepted::Delayed { due_ms: 1_000 }
    );
    assert_eq!(
        s.accept(pending(2, 1, None, Some(500)), 0),
        Accepted::Delayed { due_ms: 1_000 }
    );
    assert_eq!(
        s.accept(pending(3, 0, None, None), 0),
        Accepted::Ready,
        "other partitions flow"
    );
    assert_eq!(ids(&s.take(10)), [0]);
    assert_eq!(s.release_due(999), Some(1_000));
    assert!(s.take(10).is_empty(), "never early");
    assert_eq!(s.release_due(1_000), None);
    assert_eq!(ids(&s.take(10)), [0, 1]);
}

#[test]
fn a_keyed_retry_holds_its_key_and_offset() {
    let mut s = State::default();
    s.accept(pending(0, 0, Some("k"), None), 0);
    s.accept(pending(0, 1, Some("k"), None), 0);
    let first = s.take(10);
    let mut retry = s.unlease(first[0].envelope.id).expect("leased");
    retry.envelope.not_before = Some(100);
    s.hold(retry);
    assert!(
        s.take(10).is_empty(),
        "the next job of the key must wait for the retry"
    );
    assert_eq!(s.release_due(50), Some(100));
    s.release_due(100);
    let again = s.take(10);
    assert_eq!(
        ids(&again),
        [0],
        "the retried job runs before the rest of its key"
    );
    assert_eq!(s.commits(), [(tp(0), 0)]);
}

#[test]
fn revoking_forgets_the_partition_and_frees_its_keys() {
    let mut s = State::default();
    s.accept(pending(0, 0, Some("k"), None), 0);
    s.accept(pending(0, 1, Some("k"), None), 0);
    s.accept(pending(1, 0, None, None), 0);
    let taken = s.take(1);
    let p = s.unlease(taken[0].envelope.id).expect("leased");
    s.finish(&p, u32::MAX);
    let commits = s.revoke(&[tp(0)]);
    assert_eq!(
        commits,
        [(tp(0), 1)],
        "finished work is committed before the partition goes"
    );
    assert_eq!(ids(&s.take(10)), [0]);
    assert!(s.unlease(JobId::new()).is_none());
    assert_eq!(s.buffered(Lane::Fresh), 1, "only partition 1's job remains");
}

#[test]
fn queues_take_turns() {
    let mut s = State::default();
    for o in 0..3 {
        let mut burst = pending(0, o, None, None);
        burst.envelope.queue = "storm".into();
        s.accept(burst, 0);
    }
    s.accept(pending(1, 0, None, None), 0);
    assert_eq!(
        s.take(2)
            .iter()
            .map(|p| p.envelope.queue.as_str())
            .collect::<Vec<_>>(),
        ["storm", "default"],
        "a burst in one queue does not hold back another"
    );
    assert_eq!(ids(&s.take(5)), [1, 2]);
}

#[test]
fn fresh_jobs_and_retries_take_turns() {
    let mut s = State::default();
    let retry_tier: Tp = (Arc::from("conveyor.retry.1s"), 0);
    s.assign(&[tp(0)], Lane::Fresh);
    s.assign(std::slice::from_ref(&retry_tier), Lane::Retry);
    for o in 0..3 {
        let mut retry = pending(0, o, None, None);
        retry.tp = retry_tier.clone();
        s.accept(retry, 0);
    }
    for o in 10..13 {
        s.accept(pending(0, o, None, None), 0);
    }
    assert_eq!(s.buffered(Lane::Retry), 3);
    assert_eq!(s.buffered(Lane::Fresh), 3);
    assert_eq!(
        ids(&s.take(4)),
        [0, 10, 1, 11],
        "a retry storm cannot starve fresh jobs"
    );
    assert_eq!(ids(&s.take(4)), [2, 12]);
    assert_eq!(s.commits_of(Lane::Retry), [(retry_tier, 0)]);
    assert_eq!(s.commits_of(Lane::Fresh), [(tp(0), 10)]);
}

#[test]
fn a_key_shared_by_two_topics_goes_on_when_one_is_revoked() {
    let mut s = State::default();
    let other: Tp = (Arc::from("conveyor.queue.other"), 0);
    s.assign(&[tp(0), other.clone()], Lane::Fresh);
    s.accept(pending(0, 0, Some("k"), None), 0);
    let mut behind = pending(0, 7, Some("k"), None);
    behind.tp = other.clone();
    assert_eq!(s.accept(behind, 0), Accepted::Waiting);
    let running = s.take(10);
    assert_eq!(ids(&running), [0]);
    s.revoke(&[tp(0)]);
    assert!(
        s.take(10).is_empty(),
        "the revoked job still runs in this worker: its key stays busy"
    );
    let late = s.unlease(running[0].envelope.id).expect("still leased");
    s.finish(&late, u32::MAX);
    let next = s.take(10);
    assert_eq!(
        ids(&next),
        [7],
        "the other topic's job of the key is not dropped"
    );
    assert_eq!(next[0].tp, other);
    assert_eq!(s.buffered(Lane::Fresh), 1);
}

#[test]
fn a_partition_with_a_backlog_is_paused_until_it_drains() {
    const PAUSE_AT: usize = 512;
    const RESUME_AT: usize = PAUSE_AT / 2;
    let mut s = State::default();
    let other: Tp = (Arc::from("conveyor.queue.other"), 0);
    s.assign(&[tp(0), tp(1), other.clone()], Lane::Fresh);
    for o in 0..PAUSE_AT as i64 {
        s.accept(pending(0, o, None, None), 0);
    }
    s.accept(pending(1, 0, None, None), 0);
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, |_| false),
        (vec![], vec![]),
        "the other topic gave no record: nothing to protect"
    );
    let mut light = pending(0, 0, None, None);
    light.tp = other;
    s.accept(light, 0);
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, |_| false),
        (vec![tp(0)], vec![]),
        "only the full partition, while another topic is light"
    );
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, |_| false),
        (vec![], vec![]),
        "paused once"
    );
    assert_eq!(
        s.flow(Lane::Retry, PAUSE_AT, 0, |_| false),
        (vec![], vec![]),
        "the other lane is untouched"
    );
    let jobs = s.take(PAUSE_AT - RESUME_AT);
    for job in &jobs {
        let job = s.unlease(job.envelope.id).expect("leased");
        s.finish(&job, u32::MAX);
    }
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, |_| false),
        (vec![], vec![tp(0)]),
        "resumed once drained"
    );
    s.accept(pending(0, PAUSE_AT as i64, None, None), 0);
    s.revoke(&[tp(0)]);
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, |_| false),
        (vec![], vec![]),
        "a revoked partition is forgotten"
    );
}

#[test]
fn one_queue_draining_its_backlog_is_never_paused() {
    const PAUSE_AT: usize = 4;
    let mut s = State::default();
    s.assign(&[tp(0), tp(1)], Lane::Fresh);
    for o in 0..PAUSE_AT as i64 {
        s.accept(pending(0, o, None, None), 0);
    }
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, |_| false),
        (vec![], vec![]),
        "its other partition is light, but pausing would only cost refetches"
    );
}

#[test]
fn ready_jobs_go_out_highest_priority_first_and_in_turns_within_one() {
    let mut s = State::default();
    let with_priority = |offset: i64, priority: i32| {
        let mut p = pending(0, offset, None, None);
        p.envelope.priority = priority;
        p
    };
    for (offset, priority) in [(0, 0), (1, -10), (2, 0), (3, 10), (4, 5), (5, 10)] {
        assert_eq!(
            s.accept(with_priority(offset, priority), 0),
            Accepted::Ready
        );
    }
    assert_eq!(
        ids(&s.take(1)),
        [3],
        "the first job of the highest priority"
    );
    assert_eq!(ids(&s.take(10)), [5, 4, 0, 2, 1]);
}

#[test]
fn a_low_priority_backlog_yields_to_any_busy_normal_partition_and_never_pauses_one() {
    const PAUSE_AT: usize = 4;
    let low: Tp = (Arc::from("conveyor.queue-low.default"), 0);
    let is_low = |topic: &str| topic.contains("queue-low.");
    let at = |tp: &Tp, offset: i64| {
        let mut p = pending(0, offset, None, None);
        p.tp = tp.clone();
        p
    };
    let mut s = State::default();
    s.assign(&[tp(0), low.clone()], Lane::Fresh);
    for o in 0..PAUSE_AT as i64 {
        s.accept(at(&tp(0), o), 0);
    }
    s.accept(at(&low, 0), 0);
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, is_low),
        (vec![], vec![]),
        "a light low partition is nothing to protect a normal backlog for"
    );
    for o in 1..PAUSE_AT as i64 {
        s.accept(at(&low, o), 0);
    }
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 0, is_low),
        (vec![low.clone()], vec![]),
        "a low backlog pauses while a normal partition is active, even a busy one"
    );
    assert_eq!(
        s.flow(Lane::Fresh, PAUSE_AT, 60_000, is_low),
        (vec![], vec![low]),
        "and resumes once no normal partition gave a record for a while"
    );
}

/// A broker that skips records (a forward gap) and then gives a range again (a backward
/// jump), as tansu's memory storage did under load: the commit never passes the gap, the
/// partition is re-fetched from it, and no record runs twice.
#[test]
fn a_gap_holds_the_commit_and_a_repeat_runs_nothing_twice() {
    let mut s = State::default();
    s.assign(&[tp(0)], Lane::Fresh);
    s.start_at(&tp(0), 0);
    let jobs: Vec<Pending> = (0..8).map(|o| pending(0, o, None, None)).collect();
    for o in [0, 1, 2, 6, 7] {
        assert_eq!(s.accept(jobs[o].clone(), 0), Accepted::Ready);
    }
    finish_all(&mut s);
    assert_eq!(s.commits(), [(tp(0), 3)], "the commit stops at the gap");
    assert_eq!(s.take_refetches(Lane::Fresh), [(tp(0), 3)]);
    for (o, job) in jobs.iter().enumerate().skip(3) {
        let expected = if o < 6 {
            Accepted::Ready
        } else {
            Accepted::Repeat
        };
        assert_eq!(s.accept(job.clone(), 0), expected, "offset {o}");
        assert!(s.is_repeat(&tp(0), o as i64));
    }
    assert_eq!(
        finish_all(&mut s),
        [3, 4, 5],
        "only the missing records run"
    );
    assert_eq!(s.commits(), [(tp(0), 8)]);
}

/// Hands out every ready job and finishes it; returns their offsets.
fn finish_all(s: &mut State) -> Vec<i64> {
    let jobs = s.take(100);
    for p in &jobs {
        let p = s.unlease(p.envelope.id).expect("leased");
        s.finish(&p, u32::MAX);
    }
    ids(&jobs)
}

/// A copy of `p` (the same job id) read at `offset` of partition `part`.
fn copy_of(p: &Pending, part: i32, offset: i64) -> Pending {
    Pending {
        tp: tp(part),
        offset,
        envelope: p.envelope.clone(),
    }
}

#[test]
fn a_job_read_twice_in_one_partition_runs_once_and_both_offsets_finish() {
    let mut s = State::default();
    let first = pending(0, 0, None, None);
    assert_eq!(s.accept(first.clone(), 0), Accepted::Ready);
    assert_eq!(s.accept(copy_of(&first, 0, 1), 0), Accepted::Twin);
    s.accept(pending(0, 2, None, None), 0);
    let taken = s.take(10);
    assert_eq!(ids(&taken), [0, 2], "the copy is not handed out");
    for job in taken {
        let job = s.unlease(job.envelope.id).expect("leased");
        s.finish(&job, u32::MAX);
    }
    assert_eq!(
        s.commits(),
        [(tp(0), 3)],
        "the copy's offset finished with it"
    );
    assert_eq!(
        s.accept(copy_of(&first, 0, 3), 0),
        Accepted::Done,
        "a copy arriving after the job finished is done at once"
    );
    assert_eq!(s.commits(), [(tp(0), 4)]);
}

#[test]
fn a_copy_on_another_partition_waits_for_the_job_and_a_retry_record_still_runs() {
    let mut s = State::default();
    let first = pending(0, 0, None, None);
    s.accept(first.clone(), 0);
    assert_eq!(s.accept(copy_of(&first, 1, 0), 0), Accepted::Twin);
    let job = s.take(10).pop().expect("one job");
    assert!(s.take(10).is_empty(), "the copy waits while the job runs");
    // It fails and goes to a retry tier with attempt 1: both records are done, the tier's
    // record of attempt 1 is the job's next.
    let job = s.unlease(job.envelope.id).expect("leased");
    s.finish(&job, 1);
    let mut commits = s.commits();
    commits.sort();
    assert_eq!(commits, [(tp(0), 1), (tp(1), 1)]);
    let mut retry = copy_of(&first, 2, 0);
    retry.envelope.attempt = 1;
    assert_eq!(s.accept(retry, 0), Accepted::Ready, "the retry record runs");
    assert_eq!(s.accept(copy_of(&first, 0, 1), 0), Accepted::Done);
}

#[test]
fn a_revoked_running_keyed_job_keeps_its_key_until_it_reports() {
    let mut s = State::default();
    s.assign(&[tp(0)], Lane::Fresh);
    let first = pending(0, 0, Some("k"), None);
    let second = pending(0, 1, Some("k"), None);
    s.accept(first.clone(), 0);
    s.accept(second.clone(), 0);
    let running = s.take(10).pop().expect("the key's first job");
    s.revoke(&[tp(0)]);
    // The partition comes back: both records are read again.
    s.assign(&[tp(0)], Lane::Fresh);
    assert_eq!(s.accept(copy_of(&first, 0, 0), 0), Accepted::Twin);
    assert_eq!(s.accept(copy_of(&second, 0, 1), 0), Accepted::Waiting);
    assert!(
        s.take(10).is_empty(),
        "nothing of the key runs beside the revoked job"
    );
    // Its late report finishes the copy read again and lets the key go on.
    let late = s.unlease(running.envelope.id).expect("still leased");
    assert!(s.is_orphan(late.envelope.id));
    s.finish(&late, u32::MAX);
    assert_eq!(ids(&s.take(10)), [1]);
    assert_eq!(s.commits(), [(tp(0), 1)]);
}

#[test]
fn a_revoked_job_that_is_released_hands_over_to_its_copy() {
    let mut s = State::default();
    s.assign(&[tp(0)], Lane::Fresh);
    let first = pending(0, 0, Some("k"), None);
    s.accept(first.clone(), 0);
    let running = s.take(10).pop().expect("job");
    s.revoke(&[tp(0)]);
    s.assign(&[tp(0)], Lane::Fresh);
    s.accept(copy_of(&first, 0, 0), 0);
    let late = s.unlease(running.envelope.id).expect("leased");
    s.give_up(&late, None);
    assert_eq!(ids(&s.take(10)), [0], "the copy runs now");
}

/// A job's retry-tier record read before the failed attempt's outcome was stored (the tier
/// record is produced first) is the job's next attempt, not a copy: it runs when due.
#[test]
fn a_retry_record_read_before_the_outcome_is_stored_still_runs() {
    let mut s = State::default();
    let first = pending(0, 0, None, None);
    s.accept(first.clone(), 0);
    let running = s.take(1).remove(0);
    let mut tier = copy_of(&first, 1, 0);
    tier.envelope.attempt = 1;
    tier.envelope.not_before = Some(50);
    assert_eq!(s.accept(tier, 10), Accepted::Twin);
    let failed = s.unlease(running.envelope.id).expect("leased");
    assert!(s.finish(&failed, 1), "the tier record is placed");
    assert!(s.take(10).is_empty(), "not before its retry time");
    assert_eq!(s.release_due(100), None);
    let retried = s.take(10);
    assert_eq!(retried.len(), 1, "the retry runs");
    assert_eq!(retried[0].envelope.attempt, 1);
}

#[test]
fn taking_leaves_other_queues_jobs_for_moving() {
    let mut s = State::default();
    let mut foreign = pending(0, 0, None, None);
    foreign.envelope.queue = "sms".into();
    s.accept(foreign, 0);
    s.accept(pending(0, 1, None, None), 0);
    assert_eq!(ids(&s.take_where(10, |q| q == "default")), [1]);
    assert_eq!(ids(&s.take_where(10, |q| q != "default")), [0]);
}
