//! `[[handlers]]` in `conveyor.toml`: job kinds (or a queue) served by programs in any
//! language: a pool of worker processes, one process per job, or an HTTP endpoint.
//!
//! ```toml
//! [[handlers]]
//! kinds = ["face-comparison"]          # or: queue = "face-comparison"
//! pool = { command = "php jobs-worker.php", workers = 2, max_memory_mb = 256 }
//!
//! [[handlers]]
//! kinds = ["thumbnail"]
//! exec = { command = ["./thumbnail.sh"], timeout = "1m" }
//!
//! [[handlers]]
//! kinds = ["notify"]
//! http = { url = "http://127.0.0.1:8080/jobs", concurrency = 8, headers = { Authorization = "Bearer x" } }
//! ```
//!
//! Everything is checked when the file is read (an unknown key, a kind served twice) or when
//! the handlers are built at start-up (a program not found), never at the first job.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conveyor::{Error, Registry};
use conveyor_handlers::{
    handlers, CommandSpec, CpuAffinity, Exec, ExecConfig, Http, HttpConfig, Pool, PoolConfig,
    Runner, Spawn,
};
use serde::Deserialize;

use crate::config::duration;

mod effective;
pub use effective::{effective, redact_url, EffectiveHandler};

/// One `[[handlers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSection {
    /// Kinds it serves.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// A queue whose every kind (without a handler of its own) it serves.
    pub queue: Option<String>,
    /// A pool of long-lived worker processes.
    pub pool: Option<PoolSection>,
    /// One process per job.
    pub exec: Option<ExecSection>,
    /// An HTTP endpoint.
    pub http: Option<HttpSection>,
}

/// `pool = { ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The worker program: a string split as a shell would (no shell runs), or an array.
    pub command: CommandSpec,
    /// Processes kept running (default 2).
    pub workers: Option<NonZeroUsize>,
    /// Retire a process whose resident memory is over this many MB after its job.
    pub max_memory_mb: Option<u64>,
    /// Start-up and free-process wait (default 60s).
    #[serde(default, deserialize_with = "duration")]
    pub allocate_timeout: Option<Duration>,
    /// SIGTERM-to-SIGKILL grace at shutdown (default 60s).
    #[serde(default, deserialize_with = "duration")]
    pub destroy_timeout: Option<Duration>,
    /// Longest attempt of jobs that set none (default: `[worker] default_timeout`).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working folder (default: the configuration file's folder).
    pub dir: Option<PathBuf>,
    /// `"none"` (default) or `"paired"`: each process on one CPU with the thread serving it
    /// (faster round trips for single-threaded workers such as PHP and Python).
    #[serde(default)]
    pub cpu_affinity: CpuAffinity,
}

/// `exec = { ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSection {
    /// The program run for each job.
    pub command: CommandSpec,
    /// Longest attempt of jobs that set none (default: `[worker] default_timeout`).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working folder (default: the configuration file's folder).
    pub dir: Option<PathBuf>,
}

/// `http = { ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Where jobs are POSTed.
    pub url: String,
    /// Longest request of jobs that set none (default 30s).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Most requests in flight (default 16).
    pub concurrency: Option<NonZeroUsize>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Checks what can be checked without touching the machine: one runner per entry, kinds or a
/// queue, no kind or queue served twice, no built-in kind taken.
pub fn check(entries: &[HandlerSection]) -> Result<(), String> {
    let builtins = Registry::with_builtins();
    let (mut kinds, mut queues) = (HashSet::new(), HashSet::new());
    for (n, entry) in entries.iter().enumerate() {
        let at = format!("handlers[{n}]");
        let runners = [
            entry.pool.is_some(),
            entry.exec.is_some(),
            entry.http.is_some(),
        ];
        if runners.iter().filter(|r| **r).count() != 1 {
            return Err(format!("{at}: give exactly one of pool, exec or http"));
        }
        if entry.kinds.is_empty() == entry.queue.is_none() {
            return Err(format!(
                "{at}: give either kinds = [...] or queue = \"...\""
            ));
        }
        for kind in &entry.kinds {
            conveyor::check_name("kind", kind).map_err(|e| format!("{at}: {e}"))?;
            if builtins.get(kind).is_some() {
                return Err(format!("{at}: kind {kind:?} is built in"));
            }
            if !kinds.insert(kind.clone()) {
                return Err(format!("{at}: kind {kind:?} is served twice"));
            }
        }
        if let Some(queue) = &entry.queue {
            conveyor::check_name("queue", queue).map_err(|e| format!("{at}: {e}"))?;
            if !queues.insert(queue.clone()) {
                return Err(format!("{at}: queue {queue:?} is served twice"));
            }
        }
    }
    Ok(())
}

/// The handlers of a configuration, built and registered; pools run until [`Built::shutdown`].
#[derive(Default)]
pub struct Built {
    /// The pools, to drain at shutdown and report in the log.
    pub pools: Vec<Arc<Pool>>,
}

/// Builds every entry's runner (finding its program: a missing one is an error here) and
/// registers it in `registry`. `base` is the configuration file's folder; `default_timeout`
/// the worker's. Pools start their processes in the background.
pub fn build(
    entries: &[HandlerSection],
    base: &Path,
    default_timeout: Duration,
    registry: &mut Registry,
) -> Result<Built, Error> {
    let mut built = Built::default();
    for (n, entry) in entries.iter().enumerate() {
        let at =
            |e: conveyor_handlers::Error| Error::invalid("handlers", format!("handlers[{n}]: {e}"));
        let name = entry.queue.clone().unwrap_or_else(|| entry.kinds.join(","));
        let runner: Arc<dyn Runner> = if let Some(section) = &entry.pool {
            let pool = Pool::start(pool_config(section, &name, base, default_timeout).map_err(at)?)
                .map_err(at)?;
            built.pools.push(pool.clone());
            pool
        } else if let Some(section) = &entry.exec {
            Arc::new(Exec::new(ExecConfig {
                name: name.clone(),
                command: section.command.resolve(base).map_err(at)?,
                spawn: spawn(&section.env, section.dir.as_deref(), base),
                timeout: section.timeout.unwrap_or(default_timeout),
            }))
        } else if let Some(section) = &entry.http {
            Arc::new(Http::new(http_config(section, &name)).map_err(at)?)
        } else {
            continue; // `check` refused this already
        };
        tracing::info!(handler = %runner.describe(), kinds = %entry.kinds.join(","), queue = entry.queue.as_deref().unwrap_or("-"), "handler configured");
        for handler in handlers(runner.clone(), &entry.kinds) {
            registry.register(handler);
        }
        if let Some(queue) = &entry.queue {
            for handler in handlers(runner, std::slice::from_ref(queue)) {
                registry.register_queue(queue.clone(), handler);
            }
        }
    }
    Ok(built)
}

pub(super) fn pool_config(
    section: &PoolSection,
    name: &str,
    base: &Path,
    default_timeout: Duration,
) -> conveyor_handlers::Result<PoolConfig> {
    let command = section.command.resolve(base)?;
    let workers = section.workers.map_or(2, NonZeroUsize::get);
    let mut config = PoolConfig::new(name, command, workers);
    config.spawn = spawn(&section.env, section.dir.as_deref(), base);
    config.max_memory_mb = section.max_memory_mb;
    config.allocate_timeout = section.allocate_timeout.unwrap_or(config.allocate_timeout);
    config.destroy_timeout = section.destroy_timeout.unwrap_or(config.destroy_timeout);
    config.timeout = section.timeout.unwrap_or(default_timeout);
    config.cpu_affinity = section.cpu_affinity;
    Ok(config)
}

pub(super) fn http_config(section: &HttpSection, name: &str) -> HttpConfig {
    HttpConfig {
        name: name.to_string(),
        url: section.url.clone(),
        headers: section.headers.clone().into_iter().collect(),
        timeout: section.timeout.unwrap_or(Duration::from_secs(30)),
        concurrency: section.concurrency.map_or(16, NonZeroUsize::get),
    }
}

pub(super) fn spawn(env: &BTreeMap<String, String>, dir: Option<&Path>, base: &Path) -> Spawn {
    Spawn {
        env: env.clone().into_iter().collect(),
        dir: Some(dir.map_or_else(|| base.to_path_buf(), |d| base.join(d))),
    }
}

/// Sets each pool's gauges and counters for `/metrics` (called at each scrape).
pub fn publish_pool_metrics(pools: &[Arc<Pool>]) {
    for pool in pools {
        let stats = pool.stats();
        let labels = [("pool", stats.name.clone())];
        metrics::gauge!("conveyor_pool_processes", &labels).set(stats.processes as f64);
        metrics::counter!("conveyor_pool_jobs_total", &labels).absolute(stats.jobs);
        metrics::counter!("conveyor_pool_restarts_total", &labels).absolute(stats.restarts);
        metrics::counter!("conveyor_pool_start_failures_total", &labels)
            .absolute(stats.start_failures);
    }
}

impl Built {
    /// Drains the pools (after the worker runtime stopped): their processes get SIGTERM, then
    /// SIGKILL after their `destroy_timeout`.
    pub async fn shutdown(&self) {
        for pool in &self.pools {
            pool.shutdown().await;
        }
    }

    /// Logs each pool's processes, jobs and restarts every `every`, when they changed.
    pub fn log_stats(&self, every: Duration) {
        for pool in self.pools.clone() {
            tokio::spawn(async move {
                let mut last = None;
                loop {
                    tokio::time::sleep(every).await;
                    let stats = pool.stats();
                    if last.as_ref() != Some(&stats) {
                        tracing::info!(pool = %stats.name, processes = stats.processes, jobs = stats.jobs, restarts = stats.restarts, start_failures = stats.start_failures, "pool");
                        last = Some(stats);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<HandlerSection> {
        #[derive(Deserialize)]
        struct File {
            handlers: Vec<HandlerSection>,
        }
        toml::from_str::<File>(text).expect("parses").handlers
    }

    #[test]
    fn kinds_served_twice_and_bad_shapes_are_refused() {
        for (text, needle) in [
            ("[[handlers]]\nkinds=[\"a\"]\nexec={command=\"sh\"}\n[[handlers]]\nkinds=[\"a\"]\nhttp={url=\"http://x\"}", "kind \"a\" is served twice"),
            ("[[handlers]]\nkinds=[\"a\"]", "exactly one of pool, exec or http"),
            ("[[handlers]]\nexec={command=\"sh\"}", "either kinds"),
            ("[[handlers]]\nkinds=[\"noop\"]\nexec={command=\"sh\"}", "built in"),
            ("[[handlers]]\nqueue=\"q\"\nexec={command=\"sh\"}\n[[handlers]]\nqueue=\"q\"\nexec={command=\"sh\"}", "queue \"q\" is served twice"),
        ] {
            let err = check(&entries(text)).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
