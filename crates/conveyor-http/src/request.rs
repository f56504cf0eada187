//! Request bodies: parsed by hand from bytes, so every refusal (bad JSON, an unknown field, a
//! body over the limit) answers `{"error","field"}` like any other.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use conveyor::NewJob;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;

/// Most jobs one batch request may hold.
pub const MAX_BATCH: usize = 10_000;

/// The body as `T`; a body that is not declared JSON is a `415` (a browser form or a
/// cross-site `text/plain` post never reaches the handlers), one over the size limit a `413`,
/// bad JSON a `400` naming the field serde names (or `body`).
pub fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON, with `Content-Type: application/json`",
        ));
    }
    let bytes = body.map_err(|rejection| {
        ApiError::status(
            rejection.status(),
            format!("request body: {}", rejection.body_text()),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let text = e.to_string();
        // serde names an unknown or missing field in backticks: point at it.
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.contains("field"))
            .unwrap_or("body")
            .to_string();
        ApiError {
            field: Some(field),
            ..ApiError::invalid("body", text)
        }
    })
}

/// One job to enqueue: the CLI's `enqueue` options as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Handler kind.
    pub kind: String,
    /// Payload (default `{}`).
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
    /// Queue (default `default`).
    pub queue: Option<String>,
    /// Run after this long, e.g. `30s` (humantime).
    #[serde(rename = "in")]
    pub run_in: Option<String>,
    /// Run at this RFC 3339 time.
    pub at: Option<String>,
    /// Idempotency key.
    pub key: Option<String>,
    /// Ordering key.
    pub ordering_key: Option<String>,
    /// Priority (higher first).
    pub priority: Option<i32>,
    /// Attempts before the dead-letter list.
    pub max_attempts: Option<u32>,
    /// Per-attempt timeout, e.g. `2m`.
    pub timeout: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// Many jobs in one request: `{"jobs": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs, stored all or none.
    pub jobs: Vec<JobRequest>,
}

fn duration(field: &str, text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text).map_err(|e| {
        ApiError::invalid(
            field,
            format!("{text:?} is not a duration ({e}); write e.g. 90s, 15m"),
        )
    })
}

impl JobRequest {
    /// The job this request describes; the engine checks the rest (kind, queue, sizes).
    pub fn into_job(self) -> Result<NewJob, ApiError> {
        let mut job = NewJob::new(self.kind, self.payload);
        if let Some(queue) = self.queue {
            job = job.queue(queue);
        }
        job.run_at = match (self.run_in, self.at) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("in", "give `in` or `at`, not both"))
            }
            (Some(delay), None) => {
                let delay = duration("in", &delay)?;
                let delay = chrono::Duration::from_std(delay)
                    .map_err(|_| ApiError::invalid("in", "too long"))?;
                Some(
                    Utc::now()
                        .checked_add_signed(delay)
                        .ok_or_else(|| ApiError::invalid("in", "too long"))?,
                )
            }
            (None, Some(at)) => Some(
                DateTime::parse_from_rfc3339(&at)
                    .map_err(|e| ApiError::invalid("at", format!("{at:?} is not RFC 3339 ({e})")))?
                    .with_timezone(&Utc),
            ),
            (None, None) => None,
        };
        job.idempotency_key = self.key;
        job.ordering_key = self.ordering_key;
        job.priority = self.priority.unwrap_or(0);
        if let Some(attempts) = self.max_attempts {
            job.max_attempts = attempts;
        }
        job.timeout = self.timeout.map(|t| duration("timeout", &t)).transpose()?;
        Ok(job)
    }
}
