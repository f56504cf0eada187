//! `conveyor.toml`: backend, listen address, worker settings, retry policy and cron entries.
//!
//! ```toml
//! backend = "sqlite://jobs.db"
//! listen = "127.0.0.1:7070"
//!
//! [worker]
//! concurrency = 32
//! queues = ["default", "mail"]
//! poll_interval = "100ms"
//! shutdown_grace = "30s"
//! default_timeout = "5m"
//!
//! [retry]
//! base = "1s"
//! max = "1h"
//! jitter = 0.2
//!
//! [[cron]]
//! name = "nightly-report"
//! expr = "0 3 * * *"
//! kind = "report"
//! queue = "reports"            # optional, default "default"
//! payload = { format = "pdf" } # optional TOML value, stored as JSON; default {}
//!
//! [[handlers]]                 # see crate::handlers
//! kinds = ["face-comparison"]
//! pool = { command = "php jobs-worker.php", workers = 2, max_memory_mb = 256 }
//!
//! [[ingest]]                   # Kafka only: a topic plain producers write to
//! topic = "scheduler.jobs.ingest"
//! format = "schedule-request"  # event, schedule-request, auto, conveyor
//! queue = "default"            # optional
//! dead_letter_topic = "scheduler.jobs.dlq"  # optional: its records that are not jobs
//! timezone = "Europe/Berlin"   # optional: zone of times without one (default: local)
//! ```
//!
//! Unknown keys are rejected, and every error names the file.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use conveyor::{Backoff, CronEntry, Error, WorkerConfig, DEFAULT_QUEUE};
use serde::{Deserialize, Deserializer};

/// The name looked for in the current folder when no file is named.
pub const DEFAULT_FILE: &str = "conveyor.toml";

/// The parsed contents of a configuration file (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Backend URL, used when neither `--backend` nor `CONVEYOR_BACKEND` is set.
    pub backend: Option<String>,
    /// Address of the HTTP API, used when neither `--listen` nor `CONVEYOR_LISTEN` is set.
    pub listen: Option<String>,
    /// Worker settings.
    #[serde(default)]
    pub worker: WorkerSection,
    /// Default retry policy of jobs that set none.
    #[serde(default)]
    pub retry: RetrySection,
    /// Recurring schedules `serve` upserts at start.
    #[serde(default)]
    pub cron: Vec<CronSection>,
    /// Kinds served by programs in any language (pools, exec, http).
    #[serde(default)]
    pub handlers: Vec<crate::handlers::HandlerSection>,
    /// Topics of plain producers that workers read as jobs (Kafka backends only).
    #[serde(default)]
    pub ingest: Vec<IngestSection>,
}

/// One `[[ingest]]` entry: the file form of `conveyor worker --ingest TOPIC=FORMAT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// The producers' topic, used as it is (no prefix).
    pub topic: String,
    /// The shape of its records: `event`, `schedule-request`, `auto` or `conveyor`.
    pub format: String,
    /// Queue of its jobs (default `default`).
    pub queue: Option<String>,
    /// Where its records that are not jobs go (default: the engine's dead-letter topic).
    pub dead_letter_topic: Option<String>,
    /// Zone of times written without one (default: the machine's local zone).
    pub timezone: Option<String>,
}

impl IngestSection {
    /// The entry as the Kafka backend URL's `ingest` option value.
    pub fn url_value(&self) -> String {
        format!("{}:{}{}", self.topic, self.format, self.settings())
    }

    /// The entry as a `--ingest` flag value: `TOPIC=FORMAT` and its settings.
    pub fn flag_value(&self) -> String {
        format!("{}={}{}", self.topic, self.format, self.settings())
    }

    /// `;key=value` for each setting given.
    fn settings(&self) -> String {
        [
            ("queue", &self.queue),
            ("timezone", &self.timezone),
            ("dead_letter_topic", &self.dead_letter_topic),
        ]
        .into_iter()
        .filter_map(|(key, setting)| setting.as_ref().map(|s| format!(";{key}={s}")))
        .collect()
    }
}

/// `[worker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Most jobs running at once.
    pub concurrency: Option<NonZeroUsize>,
    /// Queues to serve (empty or absent: every queue).
    pub queues: Option<Vec<String>>,
    /// How often to look for jobs enqueued by other processes.
    #[serde(default, deserialize_with = "duration")]
    pub poll_interval: Option<Duration>,
    /// How long running jobs may take to finish after a shutdown signal.
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_grace: Option<Duration>,
    /// Timeout of an attempt whose job sets none.
    #[serde(default, deserialize_with = "duration")]
    pub default_timeout: Option<Duration>,
}

/// `[retry]`: exponential backoff with jitter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Delay before the first retry.
    #[serde(default, deserialize_with = "duration")]
    pub base: Option<Duration>,
    /// Upper bound of any delay.
    #[serde(default, deserialize_with = "duration")]
    pub max: Option<Duration>,
    /// Fraction (0.0 to 1.0) of each delay that is randomised.
    pub jitter: Option<f64>,
}

/// One `[[cron]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSection {
    /// Unique name.
    pub name: String,
    /// Cron expression (UTC; 5 fields, or 6 with seconds first).
    pub expr: String,
    /// Kind of the jobs it enqueues.
    pub kind: String,
    /// Queue of the jobs it enqueues (default `default`).
    pub queue: Option<String>,
    /// Payload of the jobs it enqueues (default `{}`).
    pub payload: Option<serde_json::Value>,
}

/// Each `[[ingest]]` entry as the engine will read it, and no topic twice.
fn check_ingest(entries: &[IngestSection]) -> Result<(), String> {
    for (n, entry) in entries.iter().enumerate() {
        if entries[..n].iter().any(|other| other.topic == entry.topic) {
            return Err(format!("ingest topic {:?} appears twice", entry.topic));
        }
        let bad = |what: &str| format!("ingest topic {:?}: {what}", entry.topic);
        for (field, value) in [("topic", &entry.topic), ("format", &entry.format)]
            .into_iter()
            .chain(entry.queue.iter().map(|q| ("queue", q)))
            .chain(entry.timezone.iter().map(|t| ("timezone", t)))
            .chain(
                entry
                    .dead_letter_topic
                    .iter()
                    .map(|t| ("dead_letter_topic", t)),
            )
        {
            // The entry travels as one backend URL option: these would split it.
            let colon = value.contains(':') && matches!(field, "topic" | "format");
            if value.is_empty() || value.contains([';', '&']) || colon {
                return Err(bad(&format!(
                    "{field} {value:?} is empty or holds ; & or :"
                )));
            }
        }
        conveyor::Ingest::parse(&entry.url_value()).map_err(|e| bad(&e.to_string()))?;
    }
    Ok(())
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\""
        ))
    })
}

/// A configuration file and where it came from.
#[derive(Debug, Default)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Its contents (all defaults when no file was read).
    pub file: FileConfig,
}

impl Config {
    /// Reads `explicit` (which must exist), or else `./conveyor.toml` when it exists, or else
    /// returns the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self, Error> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let path = PathBuf::from(DEFAULT_FILE);
                if !path.exists() {
                    return Ok(Config::default());
                }
                path
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(&path, format!("cannot read the file: {e}")))?;
        let file = Self::parse(&path, &text)?;
        Ok(Config {
            path: Some(path),
            file,
        })
    }

    /// Parses and checks the text of the file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, Error> {
        let file: FileConfig = toml::from_str(text).map_err(|e| invalid(path, e))?;
        if let Some(jitter) = file.retry.jitter {
            if !(0.0..=1.0).contains(&jitter) {
                return Err(invalid(path, "retry.jitter must be between 0.0 and 1.0"));
            }
        }
        if let (Some(base), Some(max)) = (file.retry.base, file.retry.max) {
            if max < base {
                return Err(invalid(
                    path,
                    "retry.max must not be shorter than retry.base",
                ));
            }
        }
        if let Some(queues) = &file.worker.queues {
            check_queue_names(queues).map_err(|e| invalid(path, format!("worker.queues: {e}")))?;
        }
        for (n, entry) in file.cron.iter().enumerate() {
            if file.cron[..n].iter().any(|other| other.name == entry.name) {
                return Err(invalid(
                    path,
                    format!("cron entry {:?} appears twice", entry.name),
                ));
            }
            to_entry(entry)
                .validate(Utc::now())
                .map_err(|e| invalid(path, format!("cron entry {:?}: {e}", entry.name)))?;
        }
        crate::handlers::check(&file.handlers).map_err(|e| invalid(path, e))?;
        check_ingest(&file.ingest).map_err(|e| invalid(path, e))?;
        Ok(file)
    }

    /// The folder relative commands and handler folders are taken from: the file's own
    /// folder, or the current one when no file was read.
    pub fn base_dir(&self) -> PathBuf {
        let folder = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        std::path::absolute(&folder).unwrap_or(folder)
    }

    /// The cron entries of the file, ready to upsert.
    pub fn cron_entries(&self) -> Vec<CronEntry> {
        self.file.cron.iter().map(to_entry).collect()
    }

    /// The worker settings of the file with `queues` and `concurrency` (from flags) on top.
    pub fn worker_config(
        &self,
        queues: &[String],
        concurrency: Option<NonZeroUsize>,
    ) -> Result<WorkerConfig, Error> {
        check_queue_names(queues).map_err(|e| Error::invalid("queues", e))?;
        let section = &self.file.worker;
        let mut config = WorkerConfig::default();
        if !queues.is_empty() {
            config.queues = queues.to_vec();
        } else if let Some(queues) = &section.queues {
            config.queues = queues.clone();
        }
        if let Some(n) = concurrency.or(section.concurrency) {
            config.concurrency = n.get();
        }
        if let Some(d) = section.poll_interval {
            config.poll_interval = d;
        }
        if let Some(d) = section.shutdown_grace {
            config.shutdown_grace = d;
        }
        if let Some(d) = section.default_timeout {
            config.default_timeout = d;
        }
        let retry = &self.file.retry;
        let defaults = Backoff::default();
        config.backoff = Backoff {
            base: retry.base.unwrap_or(defaults.base),
            max: retry.max.unwrap_or(defaults.max),
            jitter: retry.jitter.unwrap_or(defaults.jitter),
        };
        Ok(config)
    }
}

fn to_entry(section: &CronSection) -> CronEntry {
    let payload = section
        .payload
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    let mut entry = CronEntry::new(&section.name, &section.expr, &section.kind, payload);
    entry.queue = section
        .queue
        .clone()
        .unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    entry
}

fn check_queue_names(queues: &[String]) -> Result<(), String> {
    match queues
        .iter()
        .find(|q| q.trim().is_empty() || q.trim() != q.as_str())
    {
        Some(bad) => Err(format!("{bad:?} is not a queue name")),
        None => Ok(()),
    }
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::invalid("config", format!("{}: {message}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, Error> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn a_full_file_parses() {
        let file = parse(
            r#"
            backend = "sqlite://x.db"
            listen = "127.0.0.1:7070"
            [worker]
            concurrency = 4
            queues = ["a", "b"]
            poll_interval = "100ms"
            shutdown_grace = "30s"
            default_timeout = "5m"
            [retry]
            base = "2s"
            max = "1m"
            jitter = 0.1
            [[cron]]
            name = "tick"
            expr = "*/5 * * * *"
            kind = "noop"
            payload = { n = 1 }
            "#,
        )
        .expect("valid file");
        let config = Config { path: None, file };
        let worker = config.worker_config(&[], None).expect("worker config");
        assert_eq!(worker.concurrency, 4);
        assert_eq!(worker.queues, vec!["a", "b"]);
        assert_eq!(worker.poll_interval, Duration::from_millis(100));
        assert_eq!(worker.backoff.base, Duration::from_secs(2));
        let flags = config
            .worker_config(&["c".to_string()], NonZeroUsize::new(9))
            .expect("worker config");
        assert_eq!(
            (flags.queues, flags.concurrency),
            (vec!["c".to_string()], 9)
        );
        let cron = config.cron_entries();
        assert_eq!(cron[0].queue, "default");
        assert_eq!(cron[0].payload, serde_json::json!({"n": 1}));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, needle) in [
            ("colour = 1", "colour"),
            ("[worker]\npoll_interval = \"soon\"", "not a duration"),
            ("[worker]\nconcurrency = 0", "concurrency"),
            ("[retry]\njitter = 2.0", "retry.jitter"),
            (
                "[[cron]]\nname = \"x\"\nexpr = \"nope\"\nkind = \"noop\"",
                "cron",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with("invalid config: test.toml"), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn ingest_entries_parse_into_backend_options() {
        let file = parse(
            r#"
            [[ingest]]
            topic = "job-events"
            format = "event"
            [[ingest]]
            topic = "scheduler.jobs.ingest"
            format = "schedule-request"
            queue = "sms"
            dead_letter_topic = "scheduler.jobs.dlq"
            timezone = "+02:00"
            "#,
        )
        .expect("parses");
        let values: Vec<String> = file.ingest.iter().map(IngestSection::url_value).collect();
        assert_eq!(
            values,
            [
                "job-events:event",
                "scheduler.jobs.ingest:schedule-request;queue=sms;timezone=+02:00;dead_letter_topic=scheduler.jobs.dlq"
            ]
        );
    }

    #[test]
    fn a_bad_ingest_entry_is_an_error_naming_the_file_and_the_topic() {
        for (entry, says) in [
            ("topic = \"t\"\nformat = \"xml\"", "xml"),
            (
                "topic = \"t\"\nformat = \"event\"\ntimezone = \"Mars/Olympus\"",
                "Mars/Olympus",
            ),
            (
                "topic = \"t\"\nformat = \"event\"\ncolour = \"blue\"",
                "colour",
            ),
            ("topic = \"t;x\"\nformat = \"event\"", "holds ;"),
            ("format = \"event\"", "topic"),
        ] {
            let err = parse(&format!("[[ingest]]\n{entry}"))
                .expect_err(entry)
                .to_string();
            assert!(
                err.contains("test.toml") && err.contains(says),
                "{entry}: {err}"
            );
        }
        let twice = "[[ingest]]\ntopic = \"t\"\nformat = \"event\"\n".repeat(2);
        let err = parse(&twice).expect_err("twice").to_string();
        assert!(err.contains("appears twice"), "{err}");
    }
}
