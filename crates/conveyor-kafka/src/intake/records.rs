//! What a record becomes: a job (decoded by its topic's ingest entry or as Conveyor's
//! envelope) or a dead letter with the decode error and the seeds' provenance headers.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use conveyor_core::now_ms;
use rdkafka::message::{Headers as _, Message};

use super::Shared;
use crate::state::Tp;
use crate::{Envelope, Error, KafkaConfig, Record};

/// The job a record read from `topic` carries: decoded by the topic's ingest entry, else as
/// Conveyor's envelope, at the priority of the topic's level. Pure (no client), so what a
/// hostile or malformed record becomes is tested without a broker (`decode_props.rs`).
pub(crate) fn decode(
    config: &KafkaConfig,
    topic: &str,
    record: &Record,
    now_ms: i64,
) -> Result<Envelope, Error> {
    let decoded = match config.ingest.iter().find(|i| i.topic == topic) {
        Some(ingest) => ingest.decoder.decode(record, now_ms),
        None => Envelope::from_record(record, &queue_of(config, topic)),
    };
    decoded.map(|envelope| at_level_of(config, topic, envelope))
}

/// The dead letter of a record that is not a job: the record as it was read, with the
/// provenance headers and the decode error (which names the field) as its error message.
pub(crate) fn poison_letter(mut record: Record, tp: &Tp, offset: i64, err: &Error) -> Record {
    provenance(
        &mut record,
        tp,
        offset,
        &format!("undecodable record: {err}"),
    );
    record
}

/// A poison letter goes to the dead-letter topic; retried until the broker takes it, so a
/// poison record is never silently dropped.
pub(super) async fn dead_letter_poison(
    shared: &Shared,
    tp: &Tp,
    offset: i64,
    letter: &Record,
    err: &Error,
) {
    // A record of an ingest topic goes to its entry's dead-letter topic when it names one.
    let dead = shared
        .config
        .ingest
        .iter()
        .find(|i| *i.topic == *tp.0)
        .and_then(|i| i.dead_letter_topic.clone())
        .unwrap_or_else(|| shared.config.topics.dead());
    let mut delay = Duration::from_millis(100);
    loop {
        match shared.producer.send(&dead, letter).await {
            Ok(_) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, offset, error = %err, "undecodable record dead-lettered");
                return;
            }
            Err(send_err) => {
                tracing::error!(error = %send_err, "cannot dead-letter a poison record yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sets header `name` to `value`, replacing any header of that name.
fn put(record: &mut Record, name: &str, value: String) {
    record.headers.retain(|(n, _)| n != name);
    record.headers.push((name.to_string(), value.into_bytes()));
}

/// Adds the seeds' headers naming where a record was read.
pub(crate) fn origin(record: &mut Record, (topic, partition): &Tp, offset: i64) {
    put(
        record,
        crate::envelope::header::ORIGINAL_TOPIC,
        topic.to_string(),
    );
    put(
        record,
        crate::envelope::header::ORIGINAL_PARTITION,
        partition.to_string(),
    );
    put(
        record,
        crate::envelope::header::ORIGINAL_OFFSET,
        offset.to_string(),
    );
}

/// Adds the seeds' provenance headers: where the record was read, and its error.
pub(crate) fn provenance(record: &mut Record, tp: &Tp, offset: i64, error: &str) {
    origin(record, tp, offset);
    put(
        record,
        crate::envelope::header::ERROR_MESSAGE,
        error.to_string(),
    );
    put(
        record,
        crate::envelope::header::ERROR_TIMESTAMP,
        now_ms().to_string(),
    );
}

/// A consumed message as a [`Record`], for reading (inspection, tests). A header whose name
/// cannot be read (see [`read_message`]) is left out; the engine dead-letters such a record.
pub fn record_of<M: Message>(message: &M) -> Record {
    read_message(message).0
}

/// A consumed message as a [`Record`], and why it is not a faithful copy when it is not.
///
/// librdkafka hands header names over as C strings, and rdkafka (0.39, `BorrowedHeaders::
/// try_get`) panics on a name that is not UTF-8: a producer could stop a lane's poll loop for
/// good with one such header (the panic ends the loop's task, the worker keeps running and
/// reads nothing more). So each header is read on its own, and a panic in reading it is caught:
/// the header is left out and the error says which one (its name cannot be shown). The job
/// is not run without it: a header Conveyor cannot read is one it cannot forward to a retry
/// tier either, so the record goes to the dead-letter topic where it can be seen.
pub(crate) fn read_message<M: Message>(message: &M) -> (Record, Option<Error>) {
    let mut headers = Vec::new();
    let mut unreadable = Vec::new();
    if let Some(all) = message.headers() {
        for index in 0..all.count() {
            let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
                all.try_get(index)
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
            }));
            match read {
                Ok(Some(header)) => headers.push(header),
                // Out of range: the client said there are `count()`; nothing to read.
                Ok(None) => {}
                Err(_) => unreadable.push(index),
            }
        }
    }
    let error = (!unreadable.is_empty()).then(|| {
        let list: Vec<String> = unreadable.iter().map(|i| format!("#{i}")).collect();
        Error::invalid(
            format!("header {}", list.join(", ")),
            "the name is not UTF-8, so the header cannot be read (left out of this record)",
        )
    });
    let record = Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    };
    (record, error)
}

/// A job read from the high or low topic without a priority (no `conveyor-priority` header:
/// a plain producer wrote it there) gets that level's priority. A priority the record states
/// is kept, also when it names another level (a record an older producer wrote).
fn at_level_of(config: &KafkaConfig, topic: &str, mut envelope: Envelope) -> Envelope {
    if let Some((_, level)) = config.topics.level_of(topic) {
        if envelope.priority == 0 {
            envelope.priority = level.priority();
        }
    }
    envelope
}

fn queue_of(config: &KafkaConfig, topic: &str) -> String {
    config
        .topics
        .queue_of(topic)
        .unwrap_or(conveyor_core::DEFAULT_QUEUE)
        .to_string()
}
