//! [`ControlTail`]: reads the control topic from its start, then every new mark, on a thread
//! of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Book, Mark};
use crate::producer::client_config;
use crate::{record_of, Error, KafkaConfig};

/// How long a handle that cannot read the control topic waits before it runs jobs anyway
/// (with an error in its log): a broker that hides one topic must not stop every queue.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// The marks of the control topic, kept up to date by a reader thread.
pub(crate) struct ControlTail {
    book: Arc<RwLock<Book>>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl ControlTail {
    /// Starts reading `config`'s control topic from its start.
    pub fn start(config: &KafkaConfig) -> Result<Self, Error> {
        let consumer: BaseConsumer = client_config(config, |c| {
            // Named only because the client wants a group: it never joins nor commits.
            c.set("group.id", format!("{}.control", config.group))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "100");
        })
        .create()?;
        let topic = config.topics.control();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&list)?;
        let tail = ControlTail {
            book: Arc::new(RwLock::new(Book::default())),
            ready: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let reader = Reader {
            consumer,
            topic,
            book: tail.book.clone(),
            ready: tail.ready.clone(),
            stop: tail.stop.clone(),
        };
        std::thread::Builder::new()
            .name("conveyor-control".into())
            .spawn(move || reader.run())
            .map_err(|e| Error::Incomplete(format!("cannot start the control reader: {e}")))?;
        Ok(tail)
    }

    /// True once the marks written before this handle started were read.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits (up to `limit`) until [`ControlTail::is_ready`]: a lookup or an admin step
    /// answers with every mark written before this handle started.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asks `question` of the marks read so far.
    pub fn with<R>(&self, question: impl FnOnce(&Book) -> R) -> R {
        let book = self.book.read().unwrap_or_else(|e| e.into_inner());
        question(&book)
    }

    /// Takes a mark this handle wrote into account at once (its reader sees it later too).
    pub fn add(&self, mark: Mark) {
        self.book
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(mark);
    }
}

impl Drop for ControlTail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Reader {
    consumer: BaseConsumer,
    topic: String,
    book: Arc<RwLock<Book>>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(self) {
        let started = Instant::now();
        let mut target = None;
        while !self.stop.load(Ordering::Acquire) {
            if target.is_none() {
                target = self.log_end();
                if target.is_none() && started.elapsed() > CATCH_UP_LIMIT {
                    tracing::error!(topic = %self.topic, "cannot read the control topic: cancels, purges and cleanups written before this start are not known here");
                    target = Some(0);
                }
            }
            let position = match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    if let Some(mark) = Mark::from_record(&record_of(&message)) {
                        self.book
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .add(mark);
                    }
                    Some(rdkafka::Message::offset(&message) + 1)
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "reading the control topic; trying again");
                    None
                }
                None => None,
            };
            if let (Some(end), false) = (target, self.ready.load(Ordering::Acquire)) {
                if end == 0 || position.is_some_and(|p| p >= end) || self.at_end(end) {
                    self.ready.store(true, Ordering::Release);
                }
            }
        }
    }

    /// The control topic's log end now, if the broker answers.
    fn log_end(&self) -> Option<i64> {
        self.consumer
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(5))
            .map(|(low, high)| if high <= low { 0 } else { high })
            .ok()
    }

    /// True when the consumer's position reached `end` (all marks before it were read).
    fn at_end(&self, end: i64) -> bool {
        self.consumer.position().ok().is_some_and(|list| {
            list.elements()
                .first()
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(at) if at >= end))
        })
    }
}
