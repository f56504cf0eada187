//! [`KafkaEngine`]: the core [`Engine`] on a Kafka-protocol broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{
    now_ms, Engine, Enqueued, Fetch, Job, JobId, JobState, NewJob, Renewal, Report,
};
use tokio::sync::Notify;

use crate::control::ControlTail;
use crate::keys::ledger::Ledger;
use crate::keys::Verdict;
use crate::producer::Producer;
use crate::session::{Session, Sidecars, Subscription};
use crate::status::{Entry, Journal, Step};
use crate::{Envelope, Error, KafkaConfig, Level};

/// Jobs on a Kafka-protocol broker: enqueue produces, workers consume through a group.
pub struct KafkaEngine {
    config: KafkaConfig,
    pub(crate) producer: Arc<Producer>,
    sessions: tokio::sync::Mutex<HashMap<String, Arc<Session>>>,
    waker: Arc<Notify>,
    /// Resolves keyed enqueues: which job holds an idempotency key (see src/keys).
    ledger: Ledger,
    /// This handle's copy of the cron entries (see src/cron.rs).
    pub(crate) cron: Arc<std::sync::Mutex<crate::cron::CronBook>>,
    /// The cancel, purge and cleanup marks (see src/control).
    pub(crate) control: Arc<ControlTail>,
    /// Writes the status journal (see src/status).
    pub(crate) journal: Journal,
    /// Ids this handle enqueued lately (see src/sent.rs).
    sent: crate::sent::SentIds,
    /// Idle clients of status lookups.
    pub(crate) scanners: Arc<std::sync::Mutex<Vec<crate::scan::Scanner>>>,
    /// The import journal, once an import read it (see src/import.rs).
    pub(crate) imports: std::sync::Mutex<Option<crate::import::Listed>>,
    /// What this handle's workers run, for their presence records (see src/presence.rs).
    roster: Arc<crate::presence::Roster>,
}

/// How long a start-up waits for a broker that drops its connections (a busy or restarting
/// broker) before it gives up.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// Creates `topics` if missing; a client error (a connection reset, a broker restarting) is
/// tried again for [`START_PATIENCE`], so a worker started at a bad moment does not exit.
async fn ensure_at_start(producer: &Producer, topics: &[String]) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    let mut pause = Duration::from_millis(200);
    loop {
        match producer.ensure_topics(topics).await {
            Err(Error::Client(err)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "cannot create the shared topics yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

impl KafkaEngine {
    /// Connects and creates the shared topics (retry tiers, dead letters and their retry marks,
    /// status, schedule, attempt notes, cron) if missing.
    pub async fn connect(config: KafkaConfig) -> Result<Self, Error> {
        let producer = Arc::new(Producer::new(&config)?);
        let layout = &config.topics;
        let mut shared = layout.retry_topics();
        shared.push(layout.dead());
        shared.push(layout.status());
        shared.push(layout.scheduled());
        shared.push(layout.attempts());
        shared.push(layout.dead_retried());
        shared.push(layout.cron());
        shared.push(layout.control());
        shared.push(layout.imports());
        shared.push(layout.workers());
        ensure_at_start(&producer, &shared).await?;
        Ok(KafkaEngine {
            ledger: Ledger::new(&config),
            cron: crate::cron::book(),
            control: Arc::new(ControlTail::start(&config)?),
            journal: Journal::start(producer.clone(), layout.status()),
            scanners: Arc::default(),
            imports: std::sync::Mutex::new(None),
            roster: Arc::default(),
            sent: crate::sent::SentIds::default(),
            config,
            producer,
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            waker: Arc::new(Notify::new()),
        })
    }

    /// Every capability: the Kafka engine is a full [`conveyor_core::Backend`], and takes in
    /// jobs moved from another engine.
    pub fn capabilities(self: &Arc<Self>) -> conveyor_core::Capabilities {
        let backend: Arc<dyn conveyor_core::Backend> = self.clone();
        conveyor_core::Capabilities {
            import: Some(self.clone()),
            ..conveyor_core::Capabilities::all(&backend)
        }
    }

    /// The settings this engine uses.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn envelope(&self, job: &NewJob, now: i64) -> conveyor_core::Result<Envelope> {
        let payload = job.validate(self.config.max_payload_bytes)?;
        Ok(Envelope::from_new_job(job, payload, now))
    }

    /// The topic of a job: the schedule topic while it is not due (its workers move it to its
    /// queue's topic at its time) or while its idempotency key is not checked (it moves only if
    /// it wins the key), else its queue's topic at its priority level.
    pub(crate) fn topic_of(&self, envelope: &Envelope, now: i64) -> String {
        let layout = &self.config.topics;
        if goes_to_schedule(envelope, now) {
            return layout.scheduled();
        }
        layout.queue_at(&envelope.queue, Level::of(envelope.priority))
    }

    async fn produce(&self, envelopes: Vec<Envelope>) -> conveyor_core::Result<Vec<Enqueued>> {
        let now = now_ms();
        let mut topics: Vec<String> = envelopes.iter().map(|e| self.topic_of(e, now)).collect();
        topics.sort_unstable();
        topics.dedup();
        self.producer.ensure_topics(&topics).await?;
        let sends = envelopes.iter().map(|e| self.produce_one(e, now));
        let enqueued = futures::future::join_all(sends)
            .await
            .into_iter()
            .collect::<conveyor_core::Result<Vec<_>>>()?;
        self.waker.notify_waiters();
        Ok(enqueued)
    }

    /// Produces one job once per id (see src/sent.rs); a keyed one's answer is its key's
    /// verdict (see src/keys).
    async fn produce_one(&self, e: &Envelope, now: i64) -> conveyor_core::Result<Enqueued> {
        let state = if is_delayed(e, now) {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        if !self.sent.claim(e.id) {
            return Ok(Enqueued {
                id: e.id,
                state,
                duplicate: true,
            });
        }
        let sent = self.produce_new(e, now, state).await;
        if sent.is_err() {
            self.sent.release(e.id);
        }
        sent
    }

    async fn produce_new(
        &self,
        e: &Envelope,
        now: i64,
        state: JobState,
    ) -> conveyor_core::Result<Enqueued> {
        let topic = self.topic_of(e, now);
        if e.idempotency_key.is_none() {
            let record = if is_delayed(e, now) {
                e.to_schedule_record()
            } else {
                e.to_record()
            };
            self.producer.send(&topic, &record).await?;
            return Ok(Enqueued {
                id: e.id,
                state,
                duplicate: false,
            });
        }
        self.ledger.expect(e.id);
        let delivered = match self.producer.send(&topic, &e.to_schedule_record()).await {
            Ok(delivered) => delivered,
            Err(err) => {
                self.ledger.forget(e.id);
                return Err(err.into());
            }
        };
        let (id, duplicate) = match self.ledger.verdict(e.id, delivered).await? {
            Verdict::Wins => (e.id, false),
            Verdict::Copy { .. } => (e.id, true),
            Verdict::Duplicate { winner } => (winner, true),
        };
        // A duplicate's answer is the job that holds the key, as it is now.
        let state = match (duplicate, id != e.id) {
            (true, true) => self.state_of(id).await.unwrap_or(state),
            _ => state,
        };
        Ok(Enqueued {
            id,
            state,
            duplicate,
        })
    }

    async fn session(&self, fetch: &Fetch) -> conveyor_core::Result<Arc<Session>> {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(&fetch.owner) {
            return Ok(session.clone());
        }
        let layout = &self.config.topics;
        // Every queue (`*`) or the worker's list. Each listed queue's normal topic is created
        // up front, so the worker finds it at once; other levels' topics are matched by
        // pattern whenever a producer creates them.
        let pattern = |level: Level| match fetch.queues.as_slice() {
            [] => vec![layout.queue_pattern(level)],
            queues => queues
                .iter()
                .map(|q| layout.queue_pattern_of(q, level))
                .collect(),
        };
        let mut fresh: Vec<String> = if fetch.queues.is_empty() {
            pattern(Level::Normal)
        } else {
            let queues: Vec<String> = fetch.queues.iter().map(|q| layout.queue(q)).collect();
            self.producer.ensure_topics(&queues).await?;
            queues
        };
        fresh.extend(pattern(Level::Low));
        // An ingest topic's jobs go to its entry's queue: only that queue's workers read it.
        let serves =
            |queue: &str| fetch.queues.is_empty() || fetch.queues.iter().any(|q| q == queue);
        let ingest: Vec<String> = self
            .config
            .ingest
            .iter()
            .filter(|i| serves(&i.decoder.queue))
            .map(|i| i.topic.clone())
            .collect();
        let dead_letters: Vec<String> = self
            .config
            .ingest
            .iter()
            .filter_map(|i| i.dead_letter_topic.clone())
            .collect();
        self.producer.ensure_topics(&ingest).await?;
        self.producer.ensure_topics(&dead_letters).await?;
        fresh.extend(ingest);
        let high_topics_exist = self.high_topics_exist(&fetch.queues).await;
        let subscription = Subscription {
            fresh,
            retry: layout.retry_topics(),
            urgent: pattern(Level::High),
            schedule: vec![layout.scheduled()],
            queues: fetch.queues.clone(),
            high_topics_exist,
        };
        let session = Arc::new(Session::start(
            &self.config,
            self.producer.clone(),
            self.waker.clone(),
            &subscription,
            Sidecars {
                journal: self.journal.clone(),
                control: self.control.clone(),
            },
        )?);
        sessions.insert(fetch.owner.clone(), session.clone());
        Ok(session)
    }
}

impl KafkaEngine {
    /// Writes a worker's presence in the background: a slow broker must not delay the worker.
    fn write_presence(&self, presence: crate::presence::Presence) {
        let producer = self.producer.clone();
        let topic = self.config.topics.workers();
        tokio::spawn(async move {
            if let Err(err) = producer
                .send_to(&topic, Some(0), &presence.to_record())
                .await
            {
                tracing::debug!(error = %err, "cannot write the worker's presence");
            }
        });
    }

    /// True when a high-priority topic of `queues` (empty: any queue) exists; true also when
    /// the broker's topics cannot be listed (the start gate then waits its bounded time).
    async fn high_topics_exist(&self, queues: &[String]) -> bool {
        let names = match self.producer.topic_names().await {
            Ok(names) => names,
            Err(err) => {
                tracing::debug!(error = %err, "cannot list the topics: assuming high-priority ones exist");
                return true;
            }
        };
        let layout = &self.config.topics;
        names.iter().any(|t| match layout.level_of(t) {
            Some((queue, Level::High)) => queues.is_empty() || queues.iter().any(|q| q == queue),
            _ => false,
        })
    }
}

/// True when the job may not start yet at `now` (ms): it waits in the schedule topic.
fn is_delayed(envelope: &Envelope, now: i64) -> bool {
    envelope.not_before.is_some_and(|at| at > now)
}

/// True when the job is produced to the schedule topic: not due yet, or its idempotency key is
/// to be checked there.
fn goes_to_schedule(envelope: &Envelope, now: i64) -> bool {
    is_delayed(envelope, now) || envelope.needs_key_check()
}

#[async_trait]
impl Engine for KafkaEngine {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn enqueue(&self, job: NewJob) -> conveyor_core::Result<Enqueued> {
        let envelope = self.envelope(&job, now_ms())?;
        let mut out = self.produce(vec![envelope]).await?;
        out.pop()
            .ok_or_else(|| conveyor_core::Error::Closed("produce returned nothing".into()))
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> conveyor_core::Result<Vec<Enqueued>> {
        let now = now_ms();
        let envelopes = jobs
            .iter()
            .map(|j| self.envelope(j, now))
            .collect::<conveyor_core::Result<Vec<_>>>()?;
        self.produce(envelopes).await
    }

    async fn exchange(
        &self,
        reports: Vec<Report>,
        fetch: &Fetch,
    ) -> conveyor_core::Result<Vec<Job>> {
        let session = self.session(fetch).await?;
        let finished: Vec<JobId> = reports.iter().map(|r| r.id).collect();
        let jobs = session.exchange(reports, fetch.limit).await?;
        if let Some(idle) = self.roster.finished(&fetch.owner, &finished) {
            self.write_presence(idle);
        }
        self.roster.handed(&fetch.owner, &jobs);
        Ok(jobs)
    }

    /// Kafka has no per-job leases: group membership is the lease, kept by the client. The
    /// heartbeat tells the worker which running jobs a user cancelled, and writes the worker's
    /// presence (what it runs, for `stats`) now and then.
    async fn heartbeat(&self, owner: &str, running: &[JobId]) -> conveyor_core::Result<Renewal> {
        if let Some(presence) = self.roster.due(owner, running) {
            self.write_presence(presence);
        }
        let cancel = self.control.with(|book| {
            running
                .iter()
                .copied()
                .filter(|id| book.is_cancelled(*id))
                .collect()
        });
        Ok(Renewal {
            cancel,
            lost: Vec::new(),
        })
    }

    /// Cheap (no broker request): often, so a cancelled job's handler is told soon.
    fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Progress is a status journal entry of the job (see src/status).
    async fn set_progress(
        &self,
        _owner: &str,
        id: JobId,
        progress: serde_json::Value,
    ) -> conveyor_core::Result<()> {
        let mut entry = Entry::new(id, Step::Progress);
        entry.progress = Some(progress);
        self.journal.write(entry);
        Ok(())
    }

    fn waker(&self) -> Arc<Notify> {
        self.waker.clone()
    }

    fn max_payload_bytes(&self) -> usize {
        self.config.max_payload_bytes
    }

    async fn leave(&self, owner: &str) -> conveyor_core::Result<()> {
        let session = self.sessions.lock().await.remove(owner);
        if let Some(session) = session {
            session.close().await;
        }
        let presence = self.roster.leave(owner);
        let topic = self.config.topics.workers();
        if let Err(err) = self
            .producer
            .send_to(&topic, Some(0), &presence.to_record())
            .await
        {
            tracing::debug!(error = %err, "cannot write the worker's last presence");
        }
        self.journal.flush().await;
        Ok(())
    }
}
