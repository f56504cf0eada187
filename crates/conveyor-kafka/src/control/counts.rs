//! What cancels and purges change in `conveyor stats` on Kafka: a stopped job's record stays
//! in its topic until a worker passes it (then it is finished like any other), so the counts
//! from offsets are corrected with the control marks:
//!
//! - `available` leaves out the stopped records not passed yet (a read of each queue
//!   partition from the group's position to its end, once any cancel or purge exists);
//! - `retryable` and `scheduled` leave out stopped records (they are read anyway);
//! - `cancelled` is the number of cancelled jobs of the queue;
//! - `completed` leaves out the stopped records workers passed: those the marks counted when
//!   written (a purge's jobs waiting in the queue's topics; a cancelled job that waited, ran or
//!   retried), less those still waiting.

use std::collections::HashMap;

use conveyor_core::Stats;

use super::Book;
use crate::scan::{PartitionOffsets, Scanner};
use crate::{Envelope, Error};

/// Per queue, the stopped records not passed yet in its topics: (purged, cancelled).
pub(crate) type Waiting = HashMap<String, (u64, u64)>;

/// Reads the queue partitions of `offsets` (each with `queue_of` its queue) from the group's
/// position to the latest stop, and counts the stopped records by queue.
pub(crate) fn stopped_waiting(
    scanner: &Scanner,
    book: &Book,
    offsets: &[PartitionOffsets],
    queue_of: impl Fn(&str) -> Option<String>,
) -> Result<Waiting, Error> {
    let mut waiting = Waiting::new();
    if book.latest_stop().is_none() {
        return Ok(waiting);
    }
    // To the log end: a broker's offset for a time is no end bound (see Scanner).
    let ranges: Vec<_> = offsets
        .iter()
        .filter(|p| p.unfinished() > 0 && queue_of(&p.topic).is_some())
        .map(|p| (p.topic.clone(), p.partition, p.position(), p.high))
        .collect();
    scanner.read(&ranges, |topic, _, _, record| {
        let (Some(queue), Ok(envelope)) = (
            queue_of(topic),
            Envelope::from_record(&record, conveyor_core::DEFAULT_QUEUE),
        ) else {
            return;
        };
        let counts = waiting.entry(queue).or_default();
        if book.is_cancelled(envelope.id) {
            counts.1 += 1;
        } else if book.is_purged(&envelope) {
            counts.0 += 1;
        }
    })?;
    Ok(waiting)
}

/// Corrects `stats` (counted from offsets) with the marks and the stopped records waiting.
pub(crate) fn adjust(stats: &mut Stats, book: &Book, waiting: &Waiting) {
    for q in &mut stats.queues {
        let (purged_waiting, cancelled_waiting) =
            waiting.get(&q.queue).copied().unwrap_or_default();
        let (cancelled, holding) = book
            .cancelled_in()
            .get(&q.queue)
            .copied()
            .unwrap_or_default();
        let purged = book
            .purged_waiting()
            .get(&q.queue)
            .copied()
            .unwrap_or_default();
        q.available = q
            .available
            .saturating_sub(purged_waiting + cancelled_waiting);
        q.cancelled = cancelled;
        let passed =
            purged.saturating_sub(purged_waiting) + holding.saturating_sub(cancelled_waiting);
        q.completed = q.completed.saturating_sub(passed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Mark;
    use conveyor_core::{JobId, QueueStats};

    fn queue(available: u64, completed: u64) -> Stats {
        Stats {
            queues: vec![QueueStats {
                queue: "q".into(),
                available,
                completed,
                ..QueueStats::default()
            }],
        }
    }

    #[test]
    fn stopped_jobs_leave_available_then_completed() {
        let mut book = Book::default();
        book.add(Mark::Purge {
            queue: "q".into(),
            before: 10,
            waiting: 3,
        });
        book.add(Mark::Cancel {
            id: JobId::new(),
            at: 11,
            queue: Some("q".into()),
            holds_record: true,
        });
        // Before any worker passed them: 4 stopped of 5 waiting.
        let mut stats = queue(5, 0);
        let waiting: Waiting = [("q".to_string(), (3, 1))].into();
        adjust(&mut stats, &book, &waiting);
        let q = &stats.queues[0];
        assert_eq!((q.available, q.completed, q.cancelled), (1, 0, 1));
        // A worker passed all five and ran the one left.
        let mut stats = queue(0, 5);
        adjust(&mut stats, &book, &Waiting::new());
        let q = &stats.queues[0];
        assert_eq!((q.available, q.completed, q.cancelled), (0, 1, 1));
    }
}
