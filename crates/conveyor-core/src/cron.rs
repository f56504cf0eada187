use chrono::{DateTime, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A recurring schedule: every tick of `expr` enqueues one `kind` job with `payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronEntry {
    /// Unique name.
    pub name: String,
    /// Cron expression, 5 fields (minute precision) or 6 (with seconds first), UTC.
    pub expr: String,
    /// Kind of the jobs it enqueues.
    pub kind: String,
    /// Queue of the jobs it enqueues.
    pub queue: String,
    /// Payload of the jobs it enqueues.
    pub payload: serde_json::Value,
    /// The next tick (filled in by the engine).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick that fired.
    pub last_run_at: Option<DateTime<Utc>>,
}

impl CronEntry {
    /// An entry on the default queue.
    pub fn new(
        name: impl Into<String>,
        expr: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        CronEntry {
            name: name.into(),
            expr: expr.into(),
            kind: kind.into(),
            queue: crate::DEFAULT_QUEUE.to_string(),
            payload,
            next_run_at: None,
            last_run_at: None,
        }
    }

    /// Checks the expression and returns the first tick after `now`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(Error::invalid("name", "must be 1 to 128 bytes"));
        }
        crate::NewJob::new(self.kind.clone(), self.payload.clone())
            .queue(self.queue.clone())
            .validate(crate::DEFAULT_MAX_PAYLOAD_BYTES)?;
        next_fire_after(&self.expr, now)
    }
}

/// The first tick of `expr` strictly after `after`.
pub fn next_fire_after(expr: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let cron = Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| Error::invalid("cron", format!("{expr:?}: {e}")))?;
    cron.find_next_occurrence(&after, false)
        .map_err(|e| Error::invalid("cron", format!("{expr:?} has no next tick: {e}")))
}

/// Fires due cron entries every `tick` until `shutdown` resolves. Safe to run in several
/// processes at once: [`crate::Schedules::fire_due_cron`] fires each tick once.
pub async fn run_scheduler(
    schedules: std::sync::Arc<dyn crate::Schedules>,
    tick: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = interval.tick() => {
                if let Err(err) = schedules.fire_due_cron(Utc::now()).await {
                    tracing::warn!(error = %err, "cron tick failed; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_and_six_field_expressions() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 30).unwrap();
        assert_eq!(
            next_fire_after("*/5 * * * *", t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap()
        );
        assert_eq!(
            next_fire_after("*/10 * * * * *", t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 40).unwrap()
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let err = next_fire_after("every minute", Utc::now()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { field: "cron", .. }),
            "{err}"
        );
    }
}
