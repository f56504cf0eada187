use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, SqliteError};

/// How hard SQLite works to make each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is on disk before it returns (the default): an acknowledged enqueue
    /// survives power loss.
    Full,
    /// Commits survive a crash of the process but the last ones may be lost on power loss;
    /// several times faster.
    Normal,
}

/// Settings of the SQLite engine, usually parsed from a backend URL:
/// `sqlite://PATH?synchronous=normal&lease=30s&max_payload_bytes=1048576`.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Database file.
    pub path: PathBuf,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long a worker's lease lasts without a heartbeat; a crashed worker's jobs run again
    /// after this.
    pub lease: Duration,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// How long a writer waits for another process's transaction.
    pub busy_timeout: Duration,
    /// How long the idempotency key of a deleted job (cleanup, purge) still names that job:
    /// enqueueing the key again within this time answers "duplicate".
    pub key_retention: Duration,
}

impl SqliteConfig {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            synchronous: Synchronous::Full,
            lease: Duration::from_secs(30),
            max_payload_bytes: conveyor_core::DEFAULT_MAX_PAYLOAD_BYTES,
            busy_timeout: Duration::from_secs(10),
            key_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// [`SqliteConfig::key_retention`] in milliseconds.
    pub(crate) fn key_retention_ms(&self) -> i64 {
        i64::try_from(self.key_retention.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Parses `sqlite://PATH[?option=value&...]`; `sqlite:PATH` is accepted too.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |message: String| SqliteError::Url {
            url: url.to_string(),
            message,
        };
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| bad("must start with sqlite://".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(bad("no file path (example: sqlite://conveyor.db)".into()));
        }
        let mut config = SqliteConfig::new(path);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "synchronous" => {
                    config.synchronous = match value.to_ascii_lowercase().as_str() {
                        "full" => Synchronous::Full,
                        "normal" => Synchronous::Normal,
                        _ => return Err(bad(format!("synchronous must be full or normal, not {value:?}"))),
                    }
                }
                "lease" => config.lease = duration(value).map_err(|m| bad(format!("lease: {m}")))?,
                "busy_timeout" => {
                    config.busy_timeout = duration(value).map_err(|m| bad(format!("busy_timeout: {m}")))?
                }
                "key_retention" => {
                    config.key_retention = duration(value).map_err(|m| bad(format!("key_retention: {m}")))?
                }
                "max_payload_bytes" => {
                    config.max_payload_bytes = value
                        .parse()
                        .map_err(|_| bad(format!("max_payload_bytes must be a number, not {value:?}")))?
                }
                _ => return Err(bad(format!(
                    "unknown option {key:?} (known: synchronous, lease, busy_timeout, key_retention, max_payload_bytes)"
                ))),
            }
        }
        Ok(config)
    }
}

fn duration(value: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| format!("{value:?}: {e}"))?;
    if d < Duration::from_millis(100) {
        return Err(format!("{value:?} is too short (at least 100ms)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_options() {
        let c =
            SqliteConfig::from_url("sqlite://data/jobs.db?synchronous=normal&lease=5s").unwrap();
        assert_eq!(c.path, PathBuf::from("data/jobs.db"));
        assert_eq!(c.synchronous, Synchronous::Normal);
        assert_eq!(c.lease, Duration::from_secs(5));
        let abs = SqliteConfig::from_url("sqlite:///tmp/x.db").unwrap();
        assert_eq!(abs.path, PathBuf::from("/tmp/x.db"));
        assert_eq!(abs.synchronous, Synchronous::Full);
    }

    #[test]
    fn rejects_bad_urls_clearly() {
        for (url, needle) in [
            ("postgres://x", "sqlite://"),
            ("sqlite://", "no file path"),
            ("sqlite://x.db?synchronous=off", "full or normal"),
            ("sqlite://x.db?lease=soon", "lease"),
            ("sqlite://x.db?colour=red", "unknown option"),
        ] {
            let err = SqliteConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
