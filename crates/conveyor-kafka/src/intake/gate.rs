//! [`StartGate`]: a worker that starts while high-priority jobs wait runs none of the ordinary
//! jobs its fresh lane reads before its urgent lane has read the high topics to their ends.
//! Each lane is a consumer group of its own and the groups finish joining in any order: without
//! the gate, the first jobs handed out were whichever lane joined first, not the best ones.
//! The gate opens at once when no high topic of the worker's queues exists, and after
//! [`GATE_LIMIT`] whatever happens (a group that cannot be joined must not stop the queue).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use super::refetch::cached_log_end;
use super::LaneConsumer;
use crate::state::Tp;

/// Longest the gate stays shut after the session started: a group join on a loaded broker
/// takes seconds; the gate normally opens as soon as the urgent lane joined and read.
pub(crate) const GATE_LIMIT: Duration = Duration::from_secs(15);

/// See the module documentation.
pub(crate) struct StartGate {
    deadline: Instant,
    open: AtomicBool,
    urgent_joined: AtomicBool,
}

impl StartGate {
    /// A gate, shut when high-priority topics of the worker's queues exist.
    pub fn new(high_topics_exist: bool) -> Self {
        StartGate {
            deadline: Instant::now() + GATE_LIMIT,
            open: AtomicBool::new(!high_topics_exist),
            urgent_joined: AtomicBool::new(false),
        }
    }

    /// The urgent lane's group gave it its partitions.
    pub fn urgent_joined(&self) {
        self.urgent_joined.store(true, Ordering::Release);
    }

    /// True once jobs may be handed out: the urgent lane read every partition it was given
    /// to the end its last fetch saw (or the gate's time ran out).
    pub fn is_open(&self, urgent: Option<&LaneConsumer>) -> bool {
        if self.open.load(Ordering::Acquire) {
            return true;
        }
        let caught_up =
            self.urgent_joined.load(Ordering::Acquire) && urgent.is_none_or(read_to_the_end);
        if caught_up || Instant::now() > self.deadline {
            if !caught_up {
                tracing::debug!("the urgent lane did not catch up in time: jobs are handed out");
            }
            self.open.store(true, Ordering::Release);
            return true;
        }
        false
    }
}

/// True when the consumer's position in each assigned partition reached its log end.
fn read_to_the_end(consumer: &LaneConsumer) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    positions.elements().iter().all(|e| {
        let tp: Tp = (std::sync::Arc::from(e.topic()), e.partition());
        let Some(end) = cached_log_end(consumer, &tp) else {
            return false; // no fetch answer yet
        };
        match e.offset() {
            Offset::Offset(at) => at >= end,
            // Nothing consumed yet: only an empty partition is read to its end.
            _ => end == 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_high_topics_the_gate_is_open() {
        assert!(StartGate::new(false).is_open(None));
    }

    #[test]
    fn the_gate_opens_when_the_urgent_lane_joined() {
        let gate = StartGate::new(true);
        assert!(!gate.is_open(None));
        gate.urgent_joined();
        assert!(gate.is_open(None));
    }
}
