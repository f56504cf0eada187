//! Parsing of user input that clap leaves as text: payloads, durations, times and ids. Every
//! error is a [`conveyor::Error::InvalidInput`] naming the field, so it exits 2.

use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, Utc};
use conveyor::{Error, JobId};

/// Where text comes from: inline, `@FILE`, or `-` for stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The argument itself.
    Inline(String),
    /// A file to read.
    File(String),
    /// Standard input.
    Stdin,
}

impl Source {
    /// Reads a payload argument: `-` is stdin, `@FILE` a file, anything else inline JSON.
    pub fn payload_arg(arg: &str) -> Self {
        match arg {
            "-" => Source::Stdin,
            _ => match arg.strip_prefix('@') {
                Some(path) => Source::File(path.to_string()),
                None => Source::Inline(arg.to_string()),
            },
        }
    }

    /// Reads a `--batch` argument: `-` is stdin, anything else a file (a leading `@` is allowed).
    pub fn batch_arg(arg: &str) -> Self {
        match arg {
            "-" => Source::Stdin,
            _ => Source::File(arg.strip_prefix('@').unwrap_or(arg).to_string()),
        }
    }

    /// The text, read on a plain thread so a blocked stdin never holds up the async runtime or
    /// its shutdown. Read errors are input errors of `field`.
    pub async fn read(self, field: &'static str) -> Result<String, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let source = self.clone();
        std::thread::spawn(move || {
            let _ = tx.send(source.read_blocking());
        });
        match rx.await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => Err(Error::invalid(
                field,
                format!("cannot read {}: {e}", self.describe()),
            )),
            Err(_) => Err(Error::invalid(
                field,
                format!("reading {} failed", self.describe()),
            )),
        }
    }

    fn read_blocking(&self) -> std::io::Result<String> {
        match self {
            Source::Inline(text) => Ok(text.clone()),
            Source::File(path) => std::fs::read_to_string(path),
            Source::Stdin => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                Ok(text)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Inline(_) => "the argument".to_string(),
            Source::File(path) => format!("file {path:?}"),
            Source::Stdin => "stdin".to_string(),
        }
    }
}

/// The payload of an `enqueue` or `cron add`: `{}` when absent, else the JSON the argument
/// names.
pub async fn payload(arg: Option<&str>) -> Result<serde_json::Value, Error> {
    let Some(arg) = arg else {
        return Ok(serde_json::json!({}));
    };
    let text = Source::payload_arg(arg).read("payload").await?;
    serde_json::from_str(&text).map_err(|e| Error::invalid("payload", e))
}

/// One JSON payload per non-blank line, with its 1-based line number. A bad line fails the
/// whole batch, naming the line.
pub fn batch_lines(text: &str) -> Result<Vec<(usize, serde_json::Value)>, Error> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map(|value| (n + 1, value))
                .map_err(|e| Error::invalid("payload", format!("line {}: {e}", n + 1)))
        })
        .collect()
}

/// A humantime duration such as `90s`, `15m` or `1h 30m`.
pub fn duration(field: &'static str, text: &str) -> Result<Duration, Error> {
    humantime::parse_duration(text).map_err(|e| {
        Error::invalid(
            field,
            format!("{text:?} is not a duration ({e}); write e.g. 90s, 15m, 2h"),
        )
    })
}

/// The time `delay` from now (an error of `field` when that is past the calendar's end).
pub fn after_now(field: &'static str, delay: Duration) -> Result<DateTime<Utc>, Error> {
    shift(field, delay, DateTime::checked_add_signed)
}

/// The time `age` ago (an error of `field` when that is before the calendar's start).
pub fn before_now(field: &'static str, age: Duration) -> Result<DateTime<Utc>, Error> {
    shift(field, age, DateTime::checked_sub_signed)
}

fn shift(
    field: &'static str,
    by: Duration,
    op: fn(DateTime<Utc>, chrono::Duration) -> Option<DateTime<Utc>>,
) -> Result<DateTime<Utc>, Error> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| op(Utc::now(), by))
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!("{} is too long", humantime::format_duration(by)),
            )
        })
}

/// An RFC 3339 time such as `2030-01-01T09:00:00Z`.
pub fn timestamp(field: &'static str, text: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid(
                field,
                format!("{text:?} is not an RFC 3339 time ({e}); write e.g. 2030-01-01T09:00:00Z"),
            )
        })
}

/// A job id (a UUID).
pub fn job_id(text: &str) -> Result<JobId, Error> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: Error) -> &'static str {
        match err {
            Error::InvalidInput { field, .. } => field,
            other => panic!("not an input error: {other}"),
        }
    }

    #[test]
    fn sources() {
        assert_eq!(Source::payload_arg("-"), Source::Stdin);
        assert_eq!(
            Source::payload_arg("@a.json"),
            Source::File("a.json".into())
        );
        assert_eq!(Source::payload_arg("{}"), Source::Inline("{}".into()));
        assert_eq!(
            Source::batch_arg("jobs.ndjson"),
            Source::File("jobs.ndjson".into())
        );
    }

    #[test]
    fn batch_lines_skip_blanks_and_name_bad_lines() {
        let lines = batch_lines("{\"a\":1}\n\n  \n[2]\n").expect("valid");
        assert_eq!(
            lines,
            vec![
                (1, serde_json::json!({"a": 1})),
                (4, serde_json::json!([2]))
            ]
        );
        let err = batch_lines("{}\n{oops\n").expect_err("bad line");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(field(err), "payload");
    }

    #[test]
    fn durations_times_and_ids_name_their_field() {
        assert_eq!(
            duration("in", "1h 30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(field(duration("in", "soon").expect_err("bad")), "in");
        assert!(timestamp("at", "2030-01-01T09:00:00+02:00").is_ok());
        assert_eq!(field(timestamp("at", "tomorrow").expect_err("bad")), "at");
        assert!(after_now("in", Duration::from_secs(60)).is_ok());
        let forever = Duration::from_secs(u64::MAX / 2);
        assert_eq!(field(after_now("in", forever).expect_err("too far")), "in");
        assert_eq!(
            field(before_now("older-than", forever).expect_err("too far")),
            "older-than"
        );
        assert_eq!(field(job_id("42").expect_err("bad")), "id");
    }

    #[tokio::test]
    async fn payloads() {
        assert_eq!(payload(None).await.ok(), Some(serde_json::json!({})));
        assert_eq!(
            payload(Some("[1]")).await.ok(),
            Some(serde_json::json!([1]))
        );
        assert_eq!(field(payload(Some("{")).await.expect_err("bad")), "payload");
        assert_eq!(
            field(payload(Some("@/no/such/file")).await.expect_err("bad")),
            "payload"
        );
    }
}
