//! Records from producers that do not speak Conveyor's envelope: the seeds' Go event
//! `{id, type, data, timestamp}` and Java `ScheduleJobRequest {requestId, appName,
//! scheduledTime, priority, idempotencyKey, jobData}` (DESIGN.md §2.1).

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, Offset, TimeZone, Utc};
use conveyor_core::{JobId, DEFAULT_MAX_ATTEMPTS};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{Envelope, Record};
use crate::Error;

/// Namespace of the UUID v5 ids derived from producers' ids that are not UUIDs, so the same
/// producer id always maps to the same job id (a producer's retry runs once).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c0b_1f4e_2a7d_4f3b_9e51_c0ff_ee00_0001);

/// The shape of the records on an ingest topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Conveyor's own envelope.
    Conveyor,
    /// `{id, type, data, timestamp}` (seed 002's Go worker server).
    Event,
    /// `{requestId, appName, scheduledTime, priority, idempotencyKey, jobData}` (seed 003).
    ScheduleRequest,
    /// Whichever of the three the record is.
    Auto,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "conveyor" | "envelope" => Ok(Format::Conveyor),
            "event" => Ok(Format::Event),
            "schedule-request" => Ok(Format::ScheduleRequest),
            "auto" => Ok(Format::Auto),
            _ => Err(Error::invalid(
                "format",
                format!("{s:?} (known: conveyor, event, schedule-request, auto)"),
            )),
        }
    }
}

/// The zone a `scheduledTime` without an offset is read in (the Java scheduler's behaviour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// The machine's local zone (the default).
    Local,
    /// A fixed offset such as `+02:00` (`UTC` is `+00:00`).
    Fixed(FixedOffset),
    /// An IANA zone such as `Europe/Berlin`.
    Named(chrono_tz::Tz),
}

impl FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "local" => Ok(Zone::Local),
            "UTC" | "utc" | "Z" => Ok(Zone::Fixed(Utc.fix())),
            _ => {
                if let Ok(offset) = s.parse::<FixedOffset>() {
                    return Ok(Zone::Fixed(offset));
                }
                s.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                    Error::invalid(
                        "timezone",
                        format!("{s:?} is not local, UTC, +HH:MM or an IANA zone"),
                    )
                })
            }
        }
    }
}

impl Zone {
    fn resolve(&self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        // In a DST gap there is no such local time; in an overlap take the earlier instant.
        match self {
            Zone::Local => Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
            Zone::Fixed(offset) => offset
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
            Zone::Named(tz) => tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

/// Turns records of one ingest topic into jobs.
#[derive(Debug, Clone)]
pub struct IngestDecoder {
    /// The records' shape.
    pub format: Format,
    /// Queue of the jobs (the ingest entry's `queue`).
    pub queue: String,
    /// Zone of zone-less `scheduledTime`s.
    pub zone: Zone,
}

impl IngestDecoder {
    /// A decoder of `format` into `queue`, reading zone-less times in the local zone.
    pub fn new(format: Format, queue: impl Into<String>) -> Self {
        IngestDecoder {
            format,
            queue: queue.into(),
            zone: Zone::Local,
        }
    }

    /// Decodes one record; `now_ms` stands in for absent enqueue times.
    pub fn decode(&self, record: &Record, now_ms: i64) -> Result<Envelope, Error> {
        match self.format {
            Format::Conveyor => Envelope::from_record(record, &self.queue),
            Format::Event => self.event(&object(record)?, now_ms),
            Format::ScheduleRequest => self.schedule_request(&object(record)?, now_ms),
            Format::Auto => self.auto(record, now_ms),
        }
    }

    fn auto(&self, record: &Record, now_ms: i64) -> Result<Envelope, Error> {
        if Envelope::is_envelope(record) {
            return Envelope::from_record(record, &self.queue);
        }
        let obj = object(record)?;
        if ["appName", "jobData", "scheduledTime"]
            .iter()
            .any(|k| obj.contains_key(*k))
        {
            self.schedule_request(&obj, now_ms)
        } else if obj.contains_key("type") {
            self.event(&obj, now_ms)
        } else {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            Err(Error::UnknownShape(format!(
                "keys {keys:?} match neither an event {{id, type, data, timestamp}} nor a schedule request \
                 {{requestId, appName, scheduledTime, priority, idempotencyKey, jobData}}, and the record has no conveyor-version header"
            )))
        }
    }

    fn event(&self, obj: &Map<String, Value>, now_ms: i64) -> Result<Envelope, Error> {
        let event_id = string(obj, "id")?.ok_or(Error::Missing("id"))?;
        let id = job_id(event_id);
        let kind = kind(obj, "type")?;
        let payload = obj.get("data").ok_or(Error::Missing("data"))?;
        let enqueued_at = match string(obj, "timestamp")? {
            Some(ts) => DateTime::parse_from_rfc3339(ts)
                .map_err(|e| Error::invalid("timestamp", format!("{ts:?} is not RFC 3339: {e}")))?
                .timestamp_millis(),
            None => now_ms,
        };
        let mut envelope = self.envelope(id, kind, payload, enqueued_at);
        // The event id is the idempotency key: a producer's retry of an event, read by any
        // worker within the window, runs once (see src/keys).
        envelope.idempotency_key = Some(event_id.to_string());
        Ok(envelope)
    }

    fn schedule_request(&self, obj: &Map<String, Value>, now_ms: i64) -> Result<Envelope, Error> {
        let id = string(obj, "requestId")?.map_or_else(JobId::new, job_id);
        let kind = kind(obj, "appName")?;
        let payload = obj.get("jobData").ok_or(Error::Missing("jobData"))?;
        let at = string(obj, "scheduledTime")?.ok_or(Error::Missing("scheduledTime"))?;
        let mut envelope = self.envelope(id, kind, payload, now_ms);
        envelope.not_before = Some(self.scheduled_time(at)?).filter(|t| *t > now_ms);
        envelope.priority = match string(obj, "priority")?
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("normal") => 0,
            Some("high") => 10,
            Some("low") => -10,
            Some(other) => {
                return Err(Error::invalid(
                    "priority",
                    format!("{other:?} (expected high, normal or low)"),
                ))
            }
        };
        envelope.idempotency_key = string(obj, "idempotencyKey")?.map(str::to_string);
        Ok(envelope)
    }

    fn scheduled_time(&self, at: &str) -> Result<i64, Error> {
        if let Ok(t) = DateTime::parse_from_rfc3339(at) {
            return Ok(t.timestamp_millis());
        }
        let naive = NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M"))
            .map_err(|e| Error::invalid("scheduledTime", format!("{at:?} is not ISO-8601: {e}")))?;
        self.zone
            .resolve(naive)
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| {
                Error::invalid(
                    "scheduledTime",
                    format!("{at:?} does not exist in zone {:?}", self.zone),
                )
            })
    }

    fn envelope(&self, id: JobId, kind: String, payload: &Value, enqueued_at: i64) -> Envelope {
        Envelope {
            id,
            kind,
            queue: self.queue.clone(),
            payload: payload.to_string(),
            attempt: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            priority: 0,
            not_before: None,
            enqueued_at,
            timeout: None,
            backoff: None,
            idempotency_key: None,
            ordering_key: None,
            traceparent: None,
            key_checked: false,
            replay_of: None,
            attempt_budget: None,
        }
    }
}

fn object(record: &Record) -> Result<Map<String, Value>, Error> {
    let text = crate::envelope::payload_text(record)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(Error::UnknownShape(format!(
            "expected a JSON object, got {}",
            kind_of(&other)
        ))),
        Err(e) => Err(Error::NotJson(e.to_string())),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, Error> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::invalid(
            field,
            format!("expected a string, got {}", kind_of(other)),
        )),
    }
}

fn kind(obj: &Map<String, Value>, field: &'static str) -> Result<String, Error> {
    let kind = string(obj, field)?.ok_or(Error::Missing(field))?;
    conveyor_core::check_name("kind", kind).map_err(|e| Error::invalid(field, e))?;
    Ok(kind.to_string())
}

/// A producer's id as a job id: itself when it is a UUID, else a UUID v5 derived from it.
pub(crate) fn job_id(id: &str) -> JobId {
    Uuid::parse_str(id)
        .map(JobId)
        .unwrap_or_else(|_| JobId(Uuid::new_v5(&ID_NAMESPACE, id.as_bytes())))
}
