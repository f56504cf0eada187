//! Reading offsets and records from outside the workers' group: what statistics and the
//! dead-letter list are built from. Nothing here joins a group, and only the dead-letter
//! admin commits (to a group of its own), so inspecting a queue never disturbs the workers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::intake::record_of;
use crate::producer::client_config;
use crate::{Error, KafkaConfig, Record};

/// How long one metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading may go without a record before it is reported as an error (the time a
/// whole read takes grows with the ranges: a long dead-letter topic is fine while it moves).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the workers' group stands in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset still in the log.
    pub low: i64,
    /// Log end offset (the next record's offset).
    pub high: i64,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// The group's position, inside the log: records from here on are not finished.
    pub fn position(&self) -> i64 {
        self.committed
            .unwrap_or(self.low)
            .clamp(self.low, self.high)
    }

    /// Records not finished by the group.
    pub fn unfinished(&self) -> u64 {
        (self.high - self.position()) as u64
    }

    /// Records the group finished that are still in the log.
    pub fn finished(&self) -> u64 {
        (self.position() - self.low) as u64
    }
}

/// A consumer that reads offsets and records without joining the group.
pub(crate) struct Scanner {
    consumer: BaseConsumer,
}

impl Scanner {
    /// A scanner for `config`'s cluster; offsets it reports are those of `group`.
    pub fn new(config: &KafkaConfig, group: &str) -> Result<Self, Error> {
        let consumer = client_config(config, |c| {
            // The group id only names whose committed offsets are read: this consumer never
            // subscribes (so never joins) and never commits.
            c.set("group.id", group)
                // A range start removed by retention meanwhile reads from the log start.
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false");
        })
        .create()?;
        Ok(Scanner { consumer })
    }

    /// Every topic of the cluster with its partitions.
    pub fn topics(&self) -> Result<Vec<(String, Vec<i32>)>, Error> {
        let metadata = self.consumer.fetch_metadata(None, REQUEST_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| {
                let partitions = t.partitions().iter().map(|p| p.id()).collect();
                (t.name().to_string(), partitions)
            })
            .collect())
    }

    /// Watermarks and the group's committed offset of every partition of one topic (none when
    /// the topic does not exist yet).
    pub fn offsets_of(&self, topic: &str) -> Result<Vec<PartitionOffsets>, Error> {
        // This topic's metadata only: a cluster may hold thousands of topics.
        let partitions = self.partitions_of(topic)?;
        self.offsets(&[(topic.to_string(), partitions)])
    }

    /// The partitions of one topic (none when it does not exist yet), from its metadata alone.
    pub fn partitions_of(&self, topic: &str) -> Result<Vec<i32>, Error> {
        let metadata = self.consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default())
    }

    /// Watermarks of every partition of `topics`, without the group's offsets (`committed` is
    /// `None`): one request per partition.
    pub fn watermarks(
        &self,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<PartitionOffsets>, Error> {
        let mut out = Vec::new();
        for (topic, partitions) in topics {
            for partition in partitions {
                let (low, high) =
                    self.consumer
                        .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)?;
                out.push(PartitionOffsets {
                    topic: topic.clone(),
                    partition: *partition,
                    low,
                    high,
                    committed: None,
                });
            }
        }
        Ok(out)
    }

    /// Watermarks and the group's committed offset of every partition of `topics`.
    pub fn offsets(&self, topics: &[(String, Vec<i32>)]) -> Result<Vec<PartitionOffsets>, Error> {
        let mut list = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for partition in partitions {
                list.add_partition(topic, *partition);
            }
        }
        if list.count() == 0 {
            return Ok(Vec::new());
        }
        let committed = self.consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
        let mut out = Vec::with_capacity(committed.count());
        for element in committed.elements() {
            let (low, high) = self.consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                REQUEST_TIMEOUT,
            )?;
            out.push(PartitionOffsets {
                topic: element.topic().to_string(),
                partition: element.partition(),
                low,
                high,
                committed: match element.offset() {
                    Offset::Offset(at) => Some(at),
                    _ => None,
                },
            });
        }
        Ok(out)
    }

    /// The first offset of `topic`'s `partition` holding a record written at or after `ms`
    /// (ms since the epoch): the log end when there is none, the log start when the broker
    /// cannot look offsets up by time.
    pub fn offset_at_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64, Error> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(ms))?;
        let found = match self.consumer.offsets_for_times(list, REQUEST_TIMEOUT) {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!(error = %err, topic, partition, "no offset lookup by time: reading from the log start");
                return Ok(low);
            }
        };
        let offset = found
            .elements()
            .first()
            .filter(|e| e.error().is_ok())
            .map(|e| e.offset());
        Ok(match offset {
            Some(Offset::Offset(at)) => at.clamp(low, high),
            Some(Offset::End) => high,
            _ => low,
        })
    }

    /// For each partition of `within`, the first offset holding a record written at or after
    /// `ms`, in one request: its log end when there is none, its log start when the broker
    /// cannot look offsets up by time. Only a place to start reading from: tansu 0.6 answers
    /// a time after its last record with offset 0, so an answer is never an end bound.
    pub fn offsets_at_time(
        &self,
        within: &[PartitionOffsets],
        ms: i64,
    ) -> Result<HashMap<(String, i32), i64>, Error> {
        let mut list = TopicPartitionList::new();
        for p in within {
            list.add_partition_offset(&p.topic, p.partition, Offset::Offset(ms))?;
        }
        let mut out: HashMap<(String, i32), i64> = within
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.low))
            .collect();
        if list.count() == 0 {
            return Ok(out);
        }
        let found = match self.consumer.offsets_for_times(list, REQUEST_TIMEOUT) {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!(error = %err, "no offset lookup by time: reading from the log starts");
                return Ok(out);
            }
        };
        for e in found.elements() {
            let Some(p) = within
                .iter()
                .find(|p| p.topic == e.topic() && p.partition == e.partition())
            else {
                continue;
            };
            let at = match (e.error(), e.offset()) {
                (Ok(()), Offset::Offset(at)) => at.clamp(p.low, p.high),
                (Ok(()), Offset::End) => p.high,
                _ => p.low,
            };
            out.insert((p.topic.clone(), p.partition), at);
        }
        Ok(out)
    }

    /// When the first record of `topic`'s `partition` at or after `offset` was written (ms
    /// since the epoch, the record's timestamp); `None` when the partition has no record there.
    pub fn timestamp_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<i64>, Error> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let from = offset.max(low);
        if from >= high {
            return Ok(None);
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(from))?;
        self.consumer.assign(&list)?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let found = loop {
            if Instant::now() > deadline {
                break Err(Error::Incomplete(format!(
                    "no record of {topic}/{partition} at offset {from} within {READ_TIMEOUT:?}"
                )));
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            // A fetch error right after the assignment (a leader not known yet) passes: the
            // client fetches again until the deadline.
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::debug!(error = %err, topic, partition, "fetching one record failed; trying again");
                    continue;
                }
            };
            if message.topic() == topic && message.partition() == partition {
                break Ok(message.timestamp().to_millis());
            }
        };
        self.consumer.unassign()?;
        found
    }

    /// Commits `positions` (topic, partition, offset) for this scanner's group without joining
    /// it: only for groups nobody consumes in (the dead-letter purge position).
    pub fn commit(&self, positions: &[(String, i32, i64)]) -> Result<(), Error> {
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in positions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        if list.count() > 0 {
            self.consumer.commit(&list, CommitMode::Sync)?;
        }
        Ok(())
    }

    /// Reads every record in `[start, end)` of each range and hands it to `each` with its
    /// partition and offset. Fails if the ranges cannot be read within a bounded time.
    pub fn read(
        &self,
        ranges: &[(String, i32, i64, i64)],
        mut each: impl FnMut(&str, i32, i64, Record),
    ) -> Result<(), Error> {
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        let mut list = TopicPartitionList::new();
        for (topic, partition, start, end) in ranges {
            if start < end {
                ends.insert((topic.clone(), *partition), *end);
                list.add_partition_offset(topic, *partition, Offset::Offset(*start))?;
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        self.consumer.assign(&list)?;
        let mut deadline = Instant::now() + READ_TIMEOUT;
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::Incomplete(format!(
                    "{} partitions were not read to their end: no record for {READ_TIMEOUT:?}",
                    ends.len()
                )));
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            deadline = Instant::now() + READ_TIMEOUT;
            let key = (message.topic().to_string(), message.partition());
            let Some(end) = ends.get(&key).copied() else {
                continue;
            };
            if message.offset() < end {
                each(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    record_of(&message),
                );
            }
            if message.offset() + 1 >= end {
                ends.remove(&key);
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(low: i64, high: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            topic: "t".into(),
            partition: 0,
            low,
            high,
            committed,
        }
    }

    #[test]
    fn nothing_committed_means_everything_is_unfinished() {
        assert_eq!(at(0, 10, None).unfinished(), 10);
        assert_eq!(at(0, 10, None).finished(), 0);
    }

    #[test]
    fn the_position_stays_inside_the_log() {
        // Retention moved the log start past the committed offset.
        assert_eq!(at(5, 10, Some(2)).position(), 5);
        assert_eq!(at(5, 10, Some(2)).finished(), 0);
        assert_eq!(at(0, 10, Some(7)).unfinished(), 3);
        assert_eq!(at(0, 10, Some(7)).finished(), 7);
    }
}
