//! The effective configuration of `[[handlers]]` for `conveyor config check`: defaults filled
//! in, programs resolved, secrets redacted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use conveyor::Error;
use conveyor_handlers::{CpuAffinity, Http};
use serde::Serialize;

use super::{http_config, pool_config, spawn, HandlerSection};

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
            let affinity = match c.cpu_affinity {
                CpuAffinity::None => "none",
                CpuAffinity::Paired => "paired",
            };
            put(&mut table, "cpu_affinity", affinity);
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
        #[derive(serde::Deserialize)]
        struct File {
            handlers: Vec<HandlerSection>,
        }
        toml::from_str::<File>(text).expect("parses").handlers
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
