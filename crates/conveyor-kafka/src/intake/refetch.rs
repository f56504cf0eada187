//! The consumer's side of "Records the broker skips" (docs/kafka-engine.md): where a partition
//! starts, seeking back to re-read offsets never given, and noticing a tail the broker skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::now_ms;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{LaneConsumer, LaneContext, Shared};
use crate::state::{Lane, Tp};

/// Where the consumer starts reading newly assigned partitions: their committed offsets (a
/// partition without one starts at the log's start, whatever it is then: none is given). A
/// first record above that position means the broker skipped the records in between.
pub(super) fn starting_positions(
    consumer: &BaseConsumer<LaneContext>,
    list: &TopicPartitionList,
) -> Vec<(Tp, i64)> {
    match consumer.committed_offsets(list.clone(), Duration::from_secs(5)) {
        Ok(committed) => committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(position) => Some(((Arc::from(e.topic()), e.partition()), position)),
                _ => None,
            })
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the committed offsets of assigned partitions: a skip at their start goes unnoticed");
            Vec::new()
        }
    }
}

/// How long a partition gives no record before its consumer compares what it was given with
/// the broker's log end (records skipped at the tail), in ms.
pub(super) const IDLE_MS: i64 = 2000;

/// Seeks `tp` back to `from`: the broker skipped records there (docs/kafka-engine.md, "Records
/// the broker skips"). Offsets given again are ignored, so nothing runs twice.
pub(super) fn refetch(consumer: &LaneConsumer, shared: &Shared, tp: &Tp, from: i64) {
    tracing::warn!(topic = %tp.0, partition = tp.1, from, "offsets were never given by the broker: fetching the partition again from the first one missing");
    if let Err(err) = consumer.seek(&tp.0, tp.1, Offset::Offset(from), Duration::from_secs(1)) {
        tracing::warn!(error = %err, topic = %tp.0, partition = tp.1, "cannot seek to re-fetch; trying again");
        shared.state().refetch_failed(tp, from);
    }
}

/// For `lane`'s partitions that gave nothing for a while: ends re-fetches that read all there
/// was, and re-fetches a tail the broker skipped (the log end, cached from the last fetch
/// answer, is past the last record given). Partitions `held` back (paused: the buffer is full)
/// give nothing because they are paused, which says nothing about what the broker has.
pub(super) fn check_idle(consumer: &LaneConsumer, shared: &Shared, lane: Lane, held: &HashSet<Tp>) {
    let idle = shared.state().idle_partitions(lane, now_ms(), IDLE_MS);
    for tp in idle.into_iter().filter(|tp| !held.contains(tp)) {
        let Some(log_end) = cached_log_end(consumer, &tp) else {
            continue;
        };
        let seek_to = shared.state().idle(&tp, log_end);
        if let Some(from) = seek_to {
            tracing::debug!(topic = %tp.0, partition = tp.1, log_end, from, "idle partition behind its log end");
            refetch(consumer, shared, &tp, from);
        }
    }
}

/// The log end of `tp` as the consumer's last fetch answer gave it, without asking the broker
/// (rust-rdkafka only wraps the query that asks it: one request per idle partition per second
/// would load a broker that serves one request at a time).
pub(super) fn cached_log_end(consumer: &LaneConsumer, tp: &Tp) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.0.as_bytes()).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime (borrowed here), the
    // topic is a NUL-terminated string that outlives the call, and librdkafka only writes the
    // two integers it is given.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.1,
            &mut low,
            &mut high,
        )
    };
    (code == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
