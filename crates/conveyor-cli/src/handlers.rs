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
    handlers, CommandSpec, Exec, ExecConfig, Http, HttpConfig, Pool, PoolConfig, Runner, Spawn,
};
use serde::{Deserialize, Serialize};

use crate::config::duration;

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

fn pool_config(
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
    Ok(config)
}

fn http_config(section: &HttpSection, name: &str) -> HttpConfig {
    HttpConfig {
        name: name.to_string(),
        url: section.url.clone(),
        headers: section.headers.clone().into_iter().collect(),
        timeout: section.timeout.unwrap_or(Duration::from_secs(30)),
        concurrency: section.concurrency.map_or(16, NonZeroUsize::get),
    }
}

fn spawn(env: &BTreeMap<String, String>, dir: Option<&Path>, base: &Path) -> Spawn {
    Spawn {
        env: env.clone().into_iter().collect(),
        dir: Some(dir.map_or_else(|| base.to_path_buf(), |d| base.join(d))),
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

/// The effective configuration of an entry, for `conveyor config check`, with secrets
/// redacted.
#[derive(Debug, Serialize)]
pub struct EffectiveHandler {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kinds: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
    #[serde(flatten)]
    runner: BTreeMap<&'static str, toml::Table>,
}

/// Each entry with its defaults filled in and its program resolved; header and environment
/// values whose names look secret are replaced by `<redacted>`.
pub fn effective(
    entries: &[HandlerSection],
    base: &Path,
    default_timeout: Duration,
) -> Result<Vec<EffectiveHandler>, Error> {
    let mut out = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let at =
            |e: conveyor_handlers::Error| Error::invalid("handlers", format!("handlers[{n}]: {e}"));
        let mut table = toml::Table::new();
        let name = entry.queue.clone().unwrap_or_else(|| entry.kinds.join(","));
        let key = if let Some(section) = &entry.pool {
            let c = pool_config(section, &name, base, default_timeout).map_err(at)?;
            put(&mut table, "command", command_words(&c.command));
            put(&mut table, "workers", c.workers as i64);
            if let Some(mb) = c.max_memory_mb {
                put(&mut table, "max_memory_mb", mb as i64);
            }
            put(&mut table, "allocate_timeout", human(c.allocate_timeout));
            put(&mut table, "destroy_timeout", human(c.destroy_timeout));
            put(&mut table, "timeout", human(c.timeout));
            put(
                &mut table,
                "dir",
                c.spawn
                    .dir
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            );
            put(&mut table, "env", redact(&section.env));
            "pool"
        } else if let Some(section) = &entry.exec {
            let command = section.command.resolve(base).map_err(at)?;
            put(&mut table, "command", command_words(&command));
            put(
                &mut table,
                "timeout",
                human(section.timeout.unwrap_or(default_timeout)),
            );
            put(
                &mut table,
                "dir",
                spawn(&section.env, section.dir.as_deref(), base)
                    .dir
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            );
            put(&mut table, "env", redact(&section.env));
            "exec"
        } else if let Some(section) = &entry.http {
            let c = http_config(section, &name);
            Http::new(c.clone()).map_err(at)?;
            put(&mut table, "url", redact_url(&c.url));
            put(&mut table, "timeout", human(c.timeout));
            put(&mut table, "concurrency", c.concurrency as i64);
            put(&mut table, "headers", redact(&section.headers));
            "http"
        } else {
            continue;
        };
        out.push(EffectiveHandler {
            kinds: entry.kinds.clone(),
            queue: entry.queue.clone(),
            runner: BTreeMap::from([(key, table)]),
        });
    }
    Ok(out)
}

fn put(table: &mut toml::Table, key: &str, value: impl Into<toml::Value>) {
    table.insert(key.to_string(), value.into());
}

fn command_words(command: &conveyor_handlers::CommandLine) -> Vec<String> {
    let mut words = vec![command.program.display().to_string()];
    words.extend(command.args.iter().cloned());
    words
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Names that hold secrets: their values are never printed.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "secret",
        "pass",
        "key",
        "cookie",
        "credential",
        "signature",
    ]
    .iter()
    .any(|needle| name.contains(needle))
}

fn redact(map: &BTreeMap<String, String>) -> toml::Table {
    map.iter()
        .map(|(k, v)| {
            let v = if is_secret(k) {
                "<redacted>".to_string()
            } else {
                v.clone()
            };
            (k.clone(), toml::Value::String(v))
        })
        .collect()
}

/// A URL with its password and secret-looking query values redacted.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("redacted"));
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if is_secret(&k) {
                "redacted".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
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

    #[test]
    fn the_effective_configuration_hides_secrets() {
        let list = entries(
            "[[handlers]]\nkinds=[\"n\"]\nhttp={url=\"https://u:pw@h/x?token=abc&a=1\", headers={Authorization=\"Bearer s3cret\", X-Team=\"ops\"}}\n[[handlers]]\nkinds=[\"p\"]\npool={command=\"sh -c 'exit 0'\", env={API_KEY=\"k3y\", MODE=\"fast\"}}",
        );
        let shown = effective(&list, Path::new("/"), Duration::from_secs(300)).expect("valid");
        let text = toml::to_string(&BTreeMap::from([("handlers", shown)])).expect("toml");
        for secret in ["s3cret", "k3y", "pw@", "abc"] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        for kept in ["ops", "fast", "a=1", "workers = 2", "timeout = \"5m\""] {
            assert!(text.contains(kept), "{kept} missing from {text}");
        }
    }

    #[test]
    fn a_missing_program_is_an_error_at_start_up() {
        let list =
            entries("[[handlers]]\nkinds=[\"p\"]\npool={command=\"php-not-installed-here w.php\"}");
        let err = effective(&list, Path::new("/"), Duration::from_secs(1)).expect_err("missing");
        assert!(
            err.to_string()
                .contains("program \"php-not-installed-here\" not found"),
            "{err}"
        );
    }
}
