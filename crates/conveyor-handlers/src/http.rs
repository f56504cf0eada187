//! HTTP handlers: each job is POSTed as JSON to a URL. 2xx completes; 4xx other than 408 and
//! 429 dead-letters the job with the response body as the error; 408, 429, 5xx, connection
//! errors and timeouts retry, after `Retry-After` when the response gives one.

use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{now_ms, JobContext, Outcome};
use tokio::sync::Semaphore;

use crate::protocol::JobLine;
use crate::{Error, Result, Runner};

/// Longest part of a response body kept as an error.
const BODY_CHARS: usize = 2000;

/// How an HTTP handler runs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Name in logs.
    pub name: String,
    /// Where jobs are POSTed (`http://` or `https://`).
    pub url: String,
    /// Extra request headers (an `Authorization` token, say).
    pub headers: Vec<(String, String)>,
    /// Longest request of a job that sets no timeout of its own.
    pub timeout: Duration,
    /// Most requests in flight at once (jobs beyond it wait).
    pub concurrency: usize,
}

/// POSTs jobs to a URL over pooled connections.
pub struct Http {
    config: HttpConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    permits: Semaphore,
}

impl Http {
    /// Checks the URL and builds the client.
    pub fn new(config: HttpConfig) -> Result<Self> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| Error::Invalid {
            field: "url",
            message: format!("{:?}: {e}", config.url),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Invalid {
                field: "url",
                message: format!("{:?}: only http:// and https:// URLs", config.url),
            });
        }
        if config.concurrency == 0 {
            return Err(Error::Invalid {
                field: "concurrency",
                message: "must be at least 1".into(),
            });
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.concurrency)
            .build()?;
        Ok(Http {
            permits: Semaphore::new(config.concurrency),
            config,
            url,
            client,
        })
    }
}

#[async_trait]
impl Runner for Http {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::Retry("http handler closed".into());
        };
        let job = ctx.job();
        let timeout = job.timeout.unwrap_or(self.config.timeout);
        let body = JobLine::new(job, now_ms().saturating_add(timeout.as_millis() as i64)).encode();
        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("conveyor-job-id", job.id.to_string());
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let url = &self.config.url;
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Outcome::Retry(format!("POST {url}: no response within {timeout:?}"))
            }
            Err(e) => return Outcome::Retry(format!("POST {url}: {}", chain(&e))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = if (200..300).contains(&status) {
            String::new()
        } else {
            response.text().await.unwrap_or_default()
        };
        classify(url, status, retry_after.as_deref(), &text)
    }

    fn describe(&self) -> String {
        format!("http {}", self.config.url)
    }
}

/// The outcome of a response.
fn classify(url: &str, status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Complete;
    }
    let body: String = body.trim().chars().take(BODY_CHARS).collect();
    let error = if body.is_empty() {
        format!("POST {url}: HTTP {status}")
    } else {
        format!("POST {url}: HTTP {status}: {body}")
    };
    let transient = status == 408 || status == 429 || status >= 500;
    if (400..500).contains(&status) && !transient {
        return Outcome::Discard(error);
    }
    match retry_after.and_then(retry_delay) {
        Some(delay) => Outcome::RetryAfter { delay, error },
        None => Outcome::Retry(error),
    }
}

/// A `Retry-After` value: delay-seconds, or an HTTP date (a date in the past means now).
fn retry_delay(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = (at.timestamp_millis() - now_ms()).max(0);
    Some(Duration::from_millis(ms as u64))
}

/// An error with its sources ("error sending request: connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(classify("u", 204, None, ""), Outcome::Complete);
        assert_eq!(
            classify("u", 400, None, "bad field"),
            Outcome::Discard("POST u: HTTP 400: bad field".into())
        );
        assert_eq!(
            classify("u", 429, Some("7"), ""),
            Outcome::RetryAfter {
                delay: Duration::from_secs(7),
                error: "POST u: HTTP 429".into()
            }
        );
        assert!(matches!(classify("u", 408, None, ""), Outcome::Retry(_)));
        assert!(matches!(
            classify("u", 503, Some("soon"), ""),
            Outcome::Retry(_)
        ));
        assert!(matches!(classify("u", 302, None, ""), Outcome::Retry(_)));
        let past = classify("u", 503, Some("Sun, 06 Nov 1994 08:49:37 GMT"), "");
        assert!(
            matches!(past, Outcome::RetryAfter { delay, .. } if delay.is_zero()),
            "{past:?}"
        );
        let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc2822();
        let Outcome::RetryAfter { delay, .. } = classify("u", 429, Some(&later), "") else {
            panic!("an HTTP date is honoured")
        };
        assert!(delay > Duration::from_secs(3000) && delay <= Duration::from_secs(3600));
    }
}
