//! Hostile and malformed input (issue 12, item 7): the envelope decoder, every ingest
//! [`Format`] and the intake's record -> job-or-dead-letter step, fed arbitrary bytes and
//! headers, and near-valid records (valid JSON with wrong types, missing fields, huge numbers,
//! odd unicode, bad times and zones, non-UUID ids). Nothing may panic. A record that is not a
//! job fails with an error naming the field, and its dead letter keeps the record and says
//! why. A record that is a job goes through the engine's own path (hand-out, commit, the
//! record a retry tier gets) intact: nothing is dropped on the way.
//!
//! [`fuzz_decoders`] (ignored; `scripts/fuzz-decoders SECONDS`) runs the same checks on
//! generated and mutated records for a time budget and reports how many it tried.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_core::Backoff;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::envelope::{header, Envelope, Record};
use crate::ingest::{Format, IngestDecoder, Zone};
use crate::inspect::dead_letter;
use crate::intake::{decode, poison_letter, read_message};
use crate::session::to_job;
use crate::state::{Lane, Pending, State, Tp};
use crate::{Error, Ingest, KafkaConfig, Level};

/// "Now" of every decode: fixed, so runs are reproducible.
const NOW: i64 = 1_764_000_000_000;

/// The headers the envelope decoder reads.
const ENVELOPE_FIELDS: &[&str] = &[
    header::VERSION,
    header::ID,
    header::KIND,
    header::QUEUE,
    header::ATTEMPT,
    header::MAX_ATTEMPTS,
    header::PRIORITY,
    header::NOT_BEFORE,
    header::ENQUEUED_AT,
    header::TIMEOUT_MS,
    header::BACKOFF,
    header::IDEMPOTENCY_KEY,
    header::ORDERING_KEY,
    header::TRACEPARENT,
];

/// The keys of the Go event (seed 002).
const EVENT_FIELDS: &[&str] = &["id", "type", "data", "timestamp"];

/// The keys of the Java `ScheduleJobRequest` (seed 003).
const REQUEST_FIELDS: &[&str] = &[
    "requestId",
    "appName",
    "scheduledTime",
    "priority",
    "idempotencyKey",
    "jobData",
];

/// What errors about the record value as a whole name (not JSON, not an object, no known
/// shape): the value is the field.
const VALUE: &str = "value";

/// Headers a record may carry that no decoder reads (provenance, trace state).
const OTHER_HEADERS: &[&str] = &[
    header::TRACESTATE,
    header::ORIGINAL_TOPIC,
    header::ORIGINAL_PARTITION,
    header::ORIGINAL_OFFSET,
    header::ERROR_MESSAGE,
    header::ERROR_TIMESTAMP,
];

const FORMATS: [Format; 4] = [
    Format::Conveyor,
    Format::Event,
    Format::ScheduleRequest,
    Format::Auto,
];

/// The fields a decoder of `format` may blame.
fn fields_of(format: Format) -> Vec<&'static str> {
    let mut fields = vec![VALUE];
    match format {
        Format::Conveyor => fields.extend(ENVELOPE_FIELDS),
        Format::Event => fields.extend(EVENT_FIELDS),
        Format::ScheduleRequest => fields.extend(REQUEST_FIELDS),
        Format::Auto => {
            fields.extend(ENVELOPE_FIELDS);
            fields.extend(EVENT_FIELDS);
            fields.extend(REQUEST_FIELDS);
        }
    }
    fields
}

/// Zones of zone-less `scheduledTime`s: UTC, the farthest fixed offsets, one with DST, and the
/// machine's.
fn zones() -> Vec<Zone> {
    ["UTC", "+14:00", "-12:00", "Europe/Berlin", "local"]
        .iter()
        .map(|z| z.parse().expect("zone"))
        .collect()
}

/// Asserts that `err` is a decode error naming one of `allowed` in its message (in backticks,
/// or as "record value"/"record shape" for the value as a whole); returns the field.
fn assert_names_a_field(err: &Error, allowed: &[&str]) -> String {
    let text = err.to_string();
    let field = match err {
        Error::Missing(field) => field.to_string(),
        Error::Invalid { field, .. } => field.clone(),
        Error::Version(_) => header::VERSION.to_string(),
        Error::NotJson(_) | Error::UnknownShape(_) => VALUE.to_string(),
        other => panic!("a decoder returned a non-decode error: {other:?}"),
    };
    if field == VALUE {
        assert!(
            text.starts_with("record value") || text.starts_with("unknown record shape"),
            "does not say it is about the record value: {text}"
        );
    } else {
        assert!(
            text.contains(&format!("`{field}`")),
            "the message does not name `{field}`: {text}"
        );
    }
    assert!(
        allowed.contains(&field.as_str()),
        "{text}: `{field}` is not a field of this format ({allowed:?})"
    );
    field
}

/// What the engine requires of every job a decoder returns, and the paths it takes next:
/// a valid kind, a JSON payload, the record a retry tier gets decoding back to the same job,
/// and the session handing it out exactly once and committing past it when it is done.
fn check_job(envelope: &Envelope, topic: &str) {
    conveyor_core::check_name("kind", &envelope.kind).expect("a decoded kind is a valid name");
    serde_json::from_str::<serde::de::IgnoredAny>(&envelope.payload)
        .expect("a decoded payload is JSON");
    let again = Envelope::from_record(&envelope.to_record(), "not-this-queue")
        .unwrap_or_else(|e| panic!("the retry record of {envelope:?} does not decode: {e}"));
    assert_same_job(&again, envelope);

    let tp: Tp = (Arc::from(topic), 0);
    let mut state = State::default();
    state.assign(std::slice::from_ref(&tp), Lane::Fresh);
    let pending = Pending {
        tp: tp.clone(),
        offset: 5,
        envelope: envelope.clone(),
    };
    state.accept(pending, NOW);
    state.release_due(NOW);
    // Whatever its not-before, the job is due at the end of time.
    state.release_due(i64::MAX);
    let taken = state.take(2);
    assert_eq!(taken.len(), 1, "a decoded job is handed out exactly once");
    let job = to_job(taken[0].clone());
    assert_eq!(job.id, envelope.id);
    assert!(
        job.attempt >= 1,
        "a handed-out job is on attempt 1 or later"
    );
    // What the worker computes from the job's fields when it fails must not panic either.
    let _ = job.backoff.unwrap_or_default().delay(job.attempt);
    state.finish(&taken[0], u32::MAX);
    assert_eq!(
        state.commits(),
        vec![(tp, 6)],
        "the commit moves past the job"
    );
}

/// Equal jobs, but a backoff's `jitter` (a float) may differ in its last bit: serde_json's
/// default float parsing is not guaranteed to read back exactly what it wrote.
fn assert_same_job(a: &Envelope, b: &Envelope) {
    let (mut a, mut b) = (a.clone(), b.clone());
    if let (Some(x), Some(y)) = (&mut a.backoff, &mut b.backoff) {
        assert!(
            x.jitter == y.jitter || (x.jitter - y.jitter).abs() <= x.jitter.abs() * 1e-15,
            "jitter {} became {}",
            y.jitter,
            x.jitter
        );
        x.jitter = y.jitter;
    }
    assert_eq!(a, b, "the job changed on its way through a record");
}

/// Every decoder (each format, each zone) on `record`: no panic; a job passes [`check_job`],
/// an error names a field of the format.
fn check_decoders(record: &Record) {
    for zone in zones() {
        for format in FORMATS {
            let decoder = IngestDecoder {
                format,
                queue: "ingest".into(),
                zone,
            };
            match decoder.decode(record, NOW) {
                Ok(envelope) => check_job(&envelope, "ingest.topic"),
                Err(err) => {
                    assert_names_a_field(&err, &fields_of(format));
                }
            }
        }
    }
}

/// A config with a topic of every kind the intake reads: queue topics of each level, a retry
/// tier, and an ingest topic of each format.
fn intake_config() -> KafkaConfig {
    let mut config = KafkaConfig::new("localhost:9");
    let ingest = |topic: &str, format, zone: &str| Ingest {
        topic: topic.into(),
        decoder: IngestDecoder {
            format,
            queue: "ingested".into(),
            zone: zone.parse().expect("zone"),
        },
        dead_letter_topic: None,
    };
    config.ingest = vec![
        ingest("seed.events", Format::Event, "UTC"),
        ingest("seed.requests", Format::ScheduleRequest, "Europe/Berlin"),
        ingest("seed.any", Format::Auto, "+05:30"),
        ingest("seed.envelopes", Format::Conveyor, "UTC"),
    ];
    config
}

fn intake_topics(config: &KafkaConfig) -> Vec<String> {
    let layout = &config.topics;
    let mut topics = vec![
        layout.queue("default"),
        layout.queue_at("mail", Level::High),
        layout.queue_at("bulk", Level::Low),
        layout.retry(0).expect("a retry tier"),
    ];
    topics.extend(config.ingest.iter().map(|i| i.topic.clone()));
    topics
}

/// The intake's step on `record` read from each kind of topic: a job, or a dead letter that
/// keeps the record (key, value, headers), says where it was read and names the field, and
/// that the dead-letter list can show.
fn check_intake(record: &Record) {
    let config = intake_config();
    for topic in intake_topics(&config) {
        let err = match decode(&config, &topic, record, NOW) {
            Ok(envelope) => {
                check_job(&envelope, &topic);
                continue;
            }
            Err(err) => err,
        };
        let field = assert_names_a_field(&err, &fields_of(Format::Auto));
        let tp: Tp = (Arc::from(topic.as_str()), 3);
        let letter = poison_letter(record.clone(), &tp, 42, &err);
        assert_eq!(letter.key, record.key, "the dead letter keeps the key");
        assert_eq!(
            letter.value, record.value,
            "the dead letter keeps the value"
        );
        for kept in &record.headers {
            if !OTHER_HEADERS[1..].contains(&kept.0.as_str()) {
                assert!(letter.headers.contains(kept), "dropped header {kept:?}");
            }
        }
        let text = |name| {
            letter
                .header(name)
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("no {name} in {letter:?}"))
        };
        assert_eq!(text(header::ORIGINAL_TOPIC), topic);
        assert_eq!(text(header::ORIGINAL_PARTITION), "3");
        assert_eq!(text(header::ORIGINAL_OFFSET), "42");
        let message = text(header::ERROR_MESSAGE);
        assert!(message.contains(&err.to_string()), "{message}");
        assert!(
            field == VALUE || message.contains(&field),
            "{message} does not name {field}"
        );
        let listed = dead_letter(&config, &letter);
        assert_eq!(listed.job.last_error.as_deref(), Some(message));
        assert_eq!(listed.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(listed.original_offset, Some(42));
    }
}

/// Both checks, as the fuzz run and the arbitrary-input properties apply them.
fn check_record(record: &Record) {
    check_decoders(record);
    check_intake(record);
}

// ---------------------------------------------------------------------------------------
// Arbitrary input.

/// Strings that trip decoders: empty, blanks, control and zero-width characters, bidi
/// overrides, combining marks, astral planes, noncharacters, lookalike digits, long runs.
fn odd_string() -> impl Strategy<Value = String> {
    let fixed: Vec<String> = [
        "",
        " ",
        "\t\n",
        "\u{0}",
        "\u{feff}",
        "\u{200b}",
        "\u{202e}lanoitan",
        "e\u{301}",
        "\u{1d54f}",
        "\u{ffff}",
        "\u{10ffff}",
        "\u{661}\u{662}",
        "\u{ff11}",
        "null",
        "\"quoted\"",
        "\\u0000",
        "send email",
        "caf\u{e9}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["a".repeat(129), "\u{1f4a5}".repeat(300)])
    .collect();
    prop_oneof![
        3 => any::<String>(),
        1 => "[\\x00-\\x1f\\x7f]{0,4}",
        2 => proptest::sample::select(fixed),
        1 => "[a-z0-9_.:/-]{1,12}",
    ]
}

/// Numbers as text: in and out of every integer type's range, signs, blanks, exponents.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[+-]?[0-9]{0,25}",
        " ?[0-9]{1,4} ?",
        proptest::sample::select(vec![
            "4294967295",
            "4294967296",
            "2147483648",
            "-2147483649",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "1e3",
            "1.5",
            "-0",
            "0x10",
            "\u{661}",
            "NaN",
        ])
        .prop_map(str::to_string),
    ]
}

/// Any JSON value, with extreme numbers and odd strings; keys are often the decoders' fields.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        2 => proptest::sample::select(
            EVENT_FIELDS.iter().chain(REQUEST_FIELDS).copied().collect::<Vec<_>>()
        )
        .prop_map(str::to_string),
        1 => odd_string(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// JSON text no serializer writes: numbers out of range, nesting past the parser's limit,
/// lone surrogates, a byte-order mark, trailing garbage.
fn odd_json_text() -> impl Strategy<Value = String> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    proptest::sample::select(vec![
        String::new(),
        "{".into(),
        "NaN".into(),
        "[1,]".into(),
        "\u{feff}{}".into(),
        "{} {}".into(),
        r#"{"id":"a","type":"k","data":1e400}"#.into(),
        r#"{"id":"a","type":"k","data":18446744073709551616}"#.into(),
        r#"{"id":"a","type":"k","data":-1e-400}"#.into(),
        r#"{"id":"\ud800","type":"k","data":1}"#.into(),
        r#"{"id":"a","id":7,"type":"k","data":1}"#.into(),
        format!(r#"{{"id":"a","type":"k","data":{}}}"#, deep(127)),
        format!(r#"{{"id":"a","type":"k","data":{}}}"#, deep(200)),
        format!(
            r#"{{"appName":"sms","scheduledTime":"2025-11-03T22:00:00","jobData":{}}}"#,
            deep(300)
        ),
    ])
}

fn header_name() -> impl Strategy<Value = String> {
    let known: Vec<&str> = ENVELOPE_FIELDS
        .iter()
        .chain(OTHER_HEADERS)
        .copied()
        .collect();
    prop_oneof![
        4 => proptest::sample::select(known).prop_map(str::to_string),
        1 => odd_string(),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => Just(b"1".to_vec()),
        2 => number_text().prop_map(String::into_bytes),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string().into_bytes()),
        2 => odd_string().prop_map(String::into_bytes),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..200),
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => odd_json_text().prop_map(String::into_bytes),
    ]
}

/// A record of arbitrary bytes: key, value, and headers that are often the decoders' own.
fn any_record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        proptest::option::of(value_bytes()),
        proptest::collection::vec((header_name(), header_value()), 0..12),
    )
        .prop_map(|(key, value, headers)| Record {
            key,
            value,
            headers,
        })
}

// ---------------------------------------------------------------------------------------
// Near-valid input, with what the decoder must make of it.

/// What a generated field must do to the decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Accepted.
    Ok,
    /// Rejected, with an error naming the field.
    Bad,
    /// Either (formats the documentation leaves open); if rejected, the error names it.
    Either,
}

/// A record, the format it is written in and, per field, what the decoder must make of it.
#[derive(Debug, Clone)]
struct Case {
    format: Format,
    zone: Zone,
    record: Record,
    fields: Vec<(&'static str, Expect)>,
}

impl Case {
    /// The decoder of the case's format accepts it exactly when no field is bad, and an
    /// error blames a field that is bad (or unsure); an accepted record passes [`check_job`].
    fn check(&self) {
        let decoder = IngestDecoder {
            format: self.format,
            queue: "ingested".into(),
            zone: self.zone,
        };
        let blamable = |e: Expect| -> Vec<&str> {
            self.fields
                .iter()
                .filter(|(_, x)| *x == e)
                .map(|(f, _)| *f)
                .collect()
        };
        let (bad, unsure) = (blamable(Expect::Bad), blamable(Expect::Either));
        match decoder.decode(&self.record, NOW) {
            Ok(envelope) => {
                assert!(
                    bad.is_empty(),
                    "accepted although {bad:?} are bad: {envelope:?}"
                );
                check_job(&envelope, "ingest.topic");
            }
            Err(err) => {
                let field = assert_names_a_field(&err, &fields_of(self.format));
                assert!(
                    bad.contains(&field.as_str()) || unsure.contains(&field.as_str()),
                    "{err}: blames `{field}`, but the bad fields are {bad:?} (unsure: {unsure:?})"
                );
            }
        }
    }
}

/// A field: its JSON (None: absent) and what it must do.
type Field = (Option<Value>, Expect);

fn present(e: Expect) -> impl Fn(Value) -> Field + Clone {
    move |v| (Some(v), e)
}

/// A JSON value that is not a string (nor null).
fn not_a_string() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a string", |v| !v.is_string() && !v.is_null())
}

/// A string field: any string is accepted; null or absent is accepted when it is optional.
fn string_field(required: bool) -> impl Strategy<Value = Field> {
    let missing = if required { Expect::Bad } else { Expect::Ok };
    prop_oneof![
        6 => odd_string().prop_map(|s| (Some(Value::String(s)), Expect::Ok)),
        2 => any::<u128>().prop_map(|n| (Some(json!(Uuid::from_u128(n).to_string())), Expect::Ok)),
        1 => Just((None, missing)),
        1 => Just((Some(Value::Null), missing)),
        2 => not_a_string().prop_map(present(Expect::Bad)),
    ]
}

/// A handler kind: 1-128 of letters, digits, `_ - . : /` (the documented rule, checked here
/// on its own rather than by the decoder's function).
fn kind_field() -> impl Strategy<Value = Field> {
    let valid = |s: &str| {
        (1..=128).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
    };
    prop_oneof![
        6 => "[A-Za-z0-9_.:/-]{1,128}".prop_map(|s| (Some(Value::String(s)), Expect::Ok)),
        3 => odd_string().prop_map(move |s| {
            let e = if valid(&s) { Expect::Ok } else { Expect::Bad };
            (Some(Value::String(s)), e)
        }),
        1 => Just((None, Expect::Bad)),
        1 => Just((Some(Value::Null), Expect::Bad)),
        1 => not_a_string().prop_map(present(Expect::Bad)),
    ]
}

/// A payload: any JSON, null included, is one; absent is not.
fn data_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        8 => json_value().prop_map(present(Expect::Ok)),
        1 => Just((None, Expect::Bad)),
    ]
}

fn strings(list: &[&str], e: Expect) -> BoxedStrategy<Field> {
    let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    proptest::sample::select(list)
        .prop_map(move |s| (Some(Value::String(s)), e))
        .boxed()
}

/// RFC 3339 times, accepted.
const RFC3339_OK: &[&str] = &[
    "2025-01-01T12:00:00Z",
    "2025-01-01T12:00:00.123456789+05:30",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999-00:01",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999-23:59",
    "2024-02-29T00:00:00+00:00",
];

/// Not RFC 3339: no offset, impossible dates and times, other formats, lookalike digits.
const RFC3339_BAD: &[&str] = &[
    "",
    "yesterday",
    "1735732800",
    "2025-01-01",
    "2025-01-01T12:00:00",
    "2025-13-01T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "2025-01-01T24:00:01Z",
    "2025-01-01T12:00:00+24:00",
    "2025-01-01T12:00:00Z junk",
    "+275760-09-13T00:00:00Z",
    "\u{ff12}025-01-01T12:00:00Z",
];

/// What the documentation leaves open: leap seconds, a space or lower case for `T`/`Z`, the
/// Unicode minus sign (U+2212) in an offset (chrono reads it as `-`).
const RFC3339_EITHER: &[&str] = &[
    "2025-01-01T12:00:00\u{2212}05:00",
    "2016-12-31T23:59:60Z",
    "2025-01-01 12:00:00Z",
    "2025-01-01t12:00:00z",
    "2025-01-01T12:00:00.Z",
];

/// The event's optional `timestamp`.
fn timestamp_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        3 => strings(RFC3339_OK, Expect::Ok),
        3 => strings(RFC3339_BAD, Expect::Bad),
        1 => strings(RFC3339_EITHER, Expect::Either),
        1 => Just((None, Expect::Ok)),
        1 => Just((Some(Value::Null), Expect::Ok)),
        // An epoch number, or Jackson's array form of a Java time.
        1 => Just((Some(json!(1_735_732_800_000_i64)), Expect::Bad)),
        1 => Just((Some(json!([2025, 11, 3, 22, 0])), Expect::Bad)),
        1 => odd_string().prop_map(|s| (Some(Value::String(s)), Expect::Either)),
    ]
}

/// The request's required `scheduledTime`, in `zone`: RFC 3339, or ISO-8601 without an offset
/// (a time that does not exist in the zone, in a DST gap, is an error).
fn scheduled_field(berlin: bool) -> impl Strategy<Value = Field> {
    let gap = if berlin { Expect::Bad } else { Expect::Ok };
    prop_oneof![
        2 => strings(RFC3339_OK, Expect::Ok),
        3 => strings(
            &[
                "2025-11-03T22:00:00",
                "2025-11-03T22:00:00.5",
                "2025-11-03T22:00:00.123456789",
                "2025-11-03T22:00",
                "2025-10-26T02:30:00",
                "0001-01-01T00:00:00",
                "9999-12-31T23:59:59",
            ],
            Expect::Ok
        ),
        1 => strings(&["2025-03-30T02:30:00"], gap),
        3 => strings(
            &[
                "",
                "now",
                "2025-11-03",
                "22:00",
                "2025-11-03T22",
                "2025-11-03T22:00:00 Europe/Berlin",
                "2025-02-29T10:00:00",
                "2025-11-03T22:61",
                "2025-11-03T22:00:00Zulu",
            ],
            Expect::Bad
        ),
        1 => strings(
            &[
                "+262143-12-31T23:59:59",
                "-0001-01-01T00:00:00",
                "2016-12-31T23:59:60",
                "2025-11-03 22:00:00",
            ],
            Expect::Either
        ),
        1 => Just((None, Expect::Bad)),
        1 => Just((Some(Value::Null), Expect::Bad)),
        1 => Just((Some(json!([2025, 11, 3, 22, 0])), Expect::Bad)),
        1 => odd_string().prop_map(|s| (Some(Value::String(s)), Expect::Either)),
    ]
}

/// The request's `priority`: high, normal or low in any case; absent or null is normal.
fn priority_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        3 => strings(&["high", "normal", "low", "HIGH", "Normal", "lOw"], Expect::Ok),
        1 => Just((None, Expect::Ok)),
        1 => Just((Some(Value::Null), Expect::Ok)),
        2 => strings(&["urgent", "", " high", "1", "H\u{130}GH", "h\u{131}gh"], Expect::Bad),
        1 => Just((Some(json!(1)), Expect::Bad)),
    ]
}

/// Keys no shape uses, so they must change nothing.
fn extra_keys() -> impl Strategy<Value = Vec<(String, Value)>> {
    let known: Vec<&str> = EVENT_FIELDS.iter().chain(REQUEST_FIELDS).copied().collect();
    proptest::collection::vec(
        (
            odd_string().prop_filter("unknown key", move |k| !known.contains(&k.as_str())),
            json_value(),
        ),
        0..3,
    )
}

fn json_case(
    format: Format,
    zone: Zone,
    fields: Vec<(&'static str, Field)>,
    extra: Vec<(String, Value)>,
) -> Case {
    let mut object = serde_json::Map::new();
    for (key, value) in extra {
        object.insert(key, value);
    }
    for (name, (value, _)) in &fields {
        if let Some(value) = value {
            object.insert(name.to_string(), value.clone());
        }
    }
    Case {
        format,
        zone,
        record: Record {
            key: None,
            value: Some(Value::Object(object).to_string().into_bytes()),
            headers: vec![],
        },
        fields: fields.into_iter().map(|(n, (_, e))| (n, e)).collect(),
    }
}

/// A Go event (seed 002) with each field valid or not.
fn event_case() -> impl Strategy<Value = Case> {
    (
        string_field(true),
        kind_field(),
        data_field(),
        timestamp_field(),
        extra_keys(),
    )
        .prop_map(|(id, kind, data, timestamp, extra)| {
            let fields = vec![
                ("id", id),
                ("type", kind),
                ("data", data),
                ("timestamp", timestamp),
            ];
            json_case(Format::Event, Zone::Local, fields, extra)
        })
}

/// A Java schedule request (seed 003) with each field valid or not, read in a zone.
fn request_case() -> impl Strategy<Value = Case> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(berlin, utc)| {
        let zone: Zone = match (berlin, utc) {
            (true, _) => "Europe/Berlin",
            (false, true) => "UTC",
            (false, false) => "-09:30",
        }
        .parse()
        .expect("zone");
        (
            string_field(false),
            kind_field(),
            scheduled_field(berlin),
            priority_field(),
            string_field(false),
            data_field(),
            extra_keys(),
        )
            .prop_map(move |(id, app, at, priority, key, data, extra)| {
                let fields = vec![
                    ("requestId", id),
                    ("appName", app),
                    ("scheduledTime", at),
                    ("priority", priority),
                    ("idempotencyKey", key),
                    ("jobData", data),
                ];
                json_case(Format::ScheduleRequest, zone, fields, extra)
            })
    })
}

/// A header: its bytes (None: absent) and what it must do.
type HeaderField = (Option<Vec<u8>>, Expect);

/// Header bytes that are not UTF-8 (any header the decoder reads must then be rejected).
fn not_utf8() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..12)
        .prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err())
}

/// A header judged by `valid` on its text; sometimes absent (`absent`), sometimes not UTF-8.
fn header_field(
    texts: BoxedStrategy<String>,
    valid: fn(&str) -> bool,
    absent: Expect,
) -> BoxedStrategy<HeaderField> {
    prop_oneof![
        8 => texts.prop_map(move |s| {
            let e = if valid(&s) { Expect::Ok } else { Expect::Bad };
            (Some(s.into_bytes()), e)
        }),
        1 => Just((None, absent)),
        1 => not_utf8().prop_map(|b| (Some(b), Expect::Bad)),
    ]
    .boxed()
}

fn number_header<T: std::str::FromStr>(s: &str) -> bool {
    s.trim().parse::<T>().is_ok()
}

fn mostly<T: std::fmt::Debug + Clone + 'static>(
    good: impl Strategy<Value = T> + 'static,
    other: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![3 => good, 1 => other].boxed()
}

/// Conveyor's envelope with each header valid or not, in any order, followed by headers the
/// decoder must ignore (unknown names, later duplicates of its own).
fn envelope_case() -> impl Strategy<Value = Case> {
    let version = header_field(
        mostly(
            Just("1".to_string()),
            proptest::sample::select(vec!["2", "", " 1", "1 ", "01", "1.0", "v1"])
                .prop_map(str::to_string),
        ),
        |s| s == "1",
        Expect::Bad,
    );
    let id = header_field(
        mostly(
            any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
            prop_oneof![
                odd_string(),
                any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string()),
                any::<u128>().prop_map(|n| format!(" {} ", Uuid::from_u128(n).urn())),
                Just("550e8400-e29b-41d4-a716-44665544000".to_string()),
            ],
        ),
        |s| Uuid::parse_str(s.trim()).is_ok(),
        Expect::Bad,
    );
    let kind = header_field(
        mostly("[A-Za-z0-9_.:/-]{1,128}", odd_string()),
        |s| conveyor_core::check_name("kind", s).is_ok(),
        Expect::Bad,
    );
    let text = || header_field(odd_string().boxed(), |_| true, Expect::Ok);
    let number = |valid: fn(&str) -> bool| header_field(number_text().boxed(), valid, Expect::Ok);
    let backoff = header_field(
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<f64>()).prop_filter_map(
                "finite",
                |(base, max, jitter)| {
                    serde_json::Number::from_f64(jitter)
                        .map(|j| json!({"base": base, "max": max, "jitter": j}).to_string())
                }
            ),
            proptest::sample::select(vec![
                "{}",
                "null",
                "[200,800,0.2]",
                r#"{"base":-1,"max":800,"jitter":0.2}"#,
                r#"{"base":1.5,"max":800,"jitter":0.2}"#,
                r#"{"base":200,"max":800}"#,
                r#"{"base":200,"max":800,"jitter":1e400}"#,
                r#"{"base":18446744073709551616,"max":800,"jitter":0}"#,
                r#"{"base":200,"max":800,"jitter":0.2,"extra":true}"#,
            ])
            .prop_map(str::to_string),
            json_value().prop_map(|v| v.to_string()),
        ]
        .boxed(),
        |s| serde_json::from_str::<Backoff>(s).is_ok(),
        Expect::Ok,
    );
    let value = prop_oneof![
        1 => Just((None, Expect::Ok)),
        4 => json_value().prop_map(|v| (Some(v.to_string().into_bytes()), Expect::Ok)),
        2 => prop_oneof![
            odd_json_text().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
        .prop_map(|b| {
            let json = std::str::from_utf8(&b)
                .is_ok_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok());
            let e = if json { Expect::Ok } else { Expect::Bad };
            (Some(b), e)
        }),
    ];
    let headers = (
        (version, id, kind, text(), number(number_header::<u32>)),
        (
            number(number_header::<u32>),
            number(number_header::<i32>),
            number(number_header::<i64>),
            number(number_header::<i64>),
            number(number_header::<u64>),
        ),
        (backoff, text(), text(), text()),
    );
    let ignored = proptest::collection::vec(
        prop_oneof![
            (header_name(), header_value()),
            (odd_string(), header_value()),
        ],
        0..4,
    );
    (headers, value, any::<u64>(), ignored).prop_map(|(headers, value, order, ignored)| {
        let (
            (version, id, kind, queue, attempt),
            (max, priority, not_before, enqueued, timeout),
            (backoff, idem, ordering, trace),
        ) = headers;
        let generated = [
            (header::VERSION, version),
            (header::ID, id),
            (header::KIND, kind),
            (header::QUEUE, queue),
            (header::ATTEMPT, attempt),
            (header::MAX_ATTEMPTS, max),
            (header::PRIORITY, priority),
            (header::NOT_BEFORE, not_before),
            (header::ENQUEUED_AT, enqueued),
            (header::TIMEOUT_MS, timeout),
            (header::BACKOFF, backoff),
            (header::IDEMPOTENCY_KEY, idem),
            (header::ORDERING_KEY, ordering),
            (header::TRACEPARENT, trace),
        ];
        let mut record_headers: Vec<(String, Vec<u8>)> = generated
            .iter()
            .filter_map(|(name, (bytes, _))| bytes.clone().map(|b| (name.to_string(), b)))
            .collect();
        // Any order: rotate by a generated amount, and reverse on one bit.
        if !record_headers.is_empty() {
            let by = (order % record_headers.len() as u64) as usize;
            record_headers.rotate_left(by);
        }
        if order & (1 << 63) != 0 {
            record_headers.reverse();
        }
        // The decoder reads the first header of a name: later ones change nothing, and
        // names it does not read are ignored.
        let own: Vec<String> = record_headers.iter().map(|(n, _)| n.clone()).collect();
        record_headers.extend(
            ignored.into_iter().filter(|(name, _)| {
                own.contains(name) || !ENVELOPE_FIELDS.contains(&name.as_str())
            }),
        );
        let mut fields: Vec<(&'static str, Expect)> =
            generated.iter().map(|(name, (_, e))| (*name, *e)).collect();
        fields.push((VALUE, value.1));
        Case {
            format: Format::Conveyor,
            zone: Zone::Local,
            record: Record {
                key: Some(b"key".to_vec()),
                value: value.0,
                headers: record_headers,
            },
            fields,
        }
    })
}

fn any_case() -> impl Strategy<Value = Case> {
    prop_oneof![event_case(), request_case(), envelope_case()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_records_never_panic_and_errors_name_a_field(record in any_record()) {
        check_record(&record);
    }

    #[test]
    fn near_valid_events_are_accepted_exactly_when_valid(case in event_case()) {
        case.check();
        check_record(&case.record);
    }

    #[test]
    fn near_valid_schedule_requests_are_accepted_exactly_when_valid(case in request_case()) {
        case.check();
        check_record(&case.record);
    }

    #[test]
    fn near_valid_envelopes_are_accepted_exactly_when_valid(case in envelope_case()) {
        case.check();
        check_record(&case.record);
    }
}

/// Every number header of a valid envelope at the edge of its type: the job still takes the
/// engine's path (hand-out, commit, the retry record) without an overflow.
#[test]
fn numbers_at_their_limits_take_the_engine_path() {
    let edges = [
        (header::ATTEMPT, ["0", "4294967295"]),
        (header::MAX_ATTEMPTS, ["0", "4294967295"]),
        (header::PRIORITY, ["-2147483648", "2147483647"]),
        (
            header::NOT_BEFORE,
            ["-9223372036854775808", "9223372036854775807"],
        ),
        (
            header::ENQUEUED_AT,
            ["-9223372036854775808", "9223372036854775807"],
        ),
        (header::TIMEOUT_MS, ["0", "18446744073709551615"]),
        (
            header::BACKOFF,
            [
                r#"{"base":0,"max":0,"jitter":-1e308}"#,
                r#"{"base":18446744073709551615,"max":18446744073709551615,"jitter":1e308}"#,
            ],
        ),
    ];
    for high in [0, 1] {
        let mut record = Record {
            key: None,
            value: Some(b"{}".to_vec()),
            headers: vec![
                (header::VERSION.into(), b"1".to_vec()),
                (header::ID.into(), Uuid::nil().to_string().into_bytes()),
                (header::KIND.into(), b"noop".to_vec()),
            ],
        };
        for (name, values) in &edges {
            record
                .headers
                .push((name.to_string(), values[high].as_bytes().to_vec()));
        }
        let envelope = Envelope::from_record(&record, "default").expect("a valid envelope");
        check_job(&envelope, "conveyor.queue.default");
        check_record(&record);
    }
}

/// A header name that is not UTF-8, which producers in other languages can send (Kafka's
/// header names are bytes to librdkafka): rdkafka 0.39 panics reading it, so the intake reads
/// around it and dead-letters the record with an error naming the header.
#[test]
fn a_header_name_that_is_not_utf8_is_a_dead_letter_not_a_panic() {
    use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_headers_t};
    use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders, OwnedMessage, Timestamp};

    let text = |key, value| Header {
        key,
        value: Some(value),
    };
    let headers = OwnedHeaders::new()
        .insert(text(header::VERSION, "1"))
        .insert(text(header::ID, "01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7d"))
        .insert(text(header::KIND, "noop"));
    // rdkafka's safe API only takes `&str` names; the bytes go in through librdkafka's own
    // function, as a consumer would receive them.
    let native = (headers.as_borrowed() as *const BorrowedHeaders)
        .cast_mut()
        .cast::<rd_kafka_headers_t>();
    let (name, value) = (b"x-\xff\xfe", b"v");
    // SAFETY: `as_borrowed` is the address of the librdkafka headers object `headers` owns
    // (rdkafka makes its `BorrowedHeaders` by this very cast), which lives to the end of the
    // test; librdkafka copies the name and value it is given.
    let added = unsafe {
        rd_kafka_header_add(
            native,
            name.as_ptr().cast(),
            name.len() as isize,
            value.as_ptr().cast(),
            value.len() as isize,
        )
    };
    assert_eq!(added as i32, 0, "librdkafka took the header");
    let headers = headers.insert(text(header::QUEUE, "mail"));
    let message = OwnedMessage::new(
        Some(b"{}".to_vec()),
        Some(b"key".to_vec()),
        "conveyor.queue.default".into(),
        Timestamp::NotAvailable,
        0,
        7,
        Some(headers),
    );

    let (record, unreadable) = read_message(&message);
    let err = unreadable.expect("the unreadable header is reported");
    assert_eq!(
        err.to_string(),
        "invalid field `header #3`: the name is not UTF-8, so the header cannot be read \
         (left out of this record)"
    );
    let names: Vec<&str> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [header::VERSION, header::ID, header::KIND, header::QUEUE],
        "the headers around it are read"
    );
    assert_eq!(record.value.as_deref(), Some(&b"{}"[..]));
    let letter = poison_letter(record, &(Arc::from("conveyor.queue.default"), 0), 7, &err);
    let message_header = letter.header(header::ERROR_MESSAGE).and_then(Result::ok);
    assert!(
        message_header.is_some_and(|m| m.contains("`header #3`") && m.contains("not UTF-8")),
        "{letter:?}"
    );
    // Reading for inspection shows the readable part.
    assert_eq!(crate::record_of(&message).headers.len(), 4);
}

// ---------------------------------------------------------------------------------------
// The fuzz run.

/// The seeds' own records and Conveyor's fixture: where mutation starts.
fn seed_corpus() -> Vec<Record> {
    // seed 002 (Go worker server), "Event Schema".
    let event = json!({
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "type": "job.email.verification",
        "account_id": "campaign-uuid",
        "campaign_id": "campaign-uuid",
        "data": {"type": "verification", "campaign_id": "campaign-uuid",
                 "user_id": "user-uuid", "priority": 1},
        "timestamp": "2025-01-01T12:00:00Z"
    });
    // seed 003 (Java infinite scheduler), "ScheduleJobRequest JSON".
    let request = json!({
        "requestId": "auto-generated-uuid",
        "appName": "sms",
        "scheduledTime": "2025-11-03T22:00:00",
        "priority": "normal",
        "idempotencyKey": "sms-12345-unique",
        "jobData": {"phoneNumber": "+8801712345678", "message": "Hello World!",
                    "senderId": "MyApp"}
    });
    let fixture: Value =
        serde_json::from_str(include_str!("../tests/fixtures/envelope-v1.json")).expect("fixture");
    let text = |v: &Value| v.as_str().map(|s| s.as_bytes().to_vec());
    let envelope = Record {
        key: text(&fixture["key"]),
        value: text(&fixture["value"]),
        headers: fixture["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| {
                (
                    h[0].as_str().expect("name").into(),
                    text(&h[1]).expect("value"),
                )
            })
            .collect(),
    };
    let json_record = |v: &Value| Record {
        key: Some(b"sms-job-1".to_vec()),
        value: Some(v.to_string().into_bytes()),
        headers: vec![],
    };
    vec![json_record(&event), json_record(&request), envelope]
}

/// A small, fast generator for mutations (splitmix64): the run's seed decides every choice.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens a mutation splices in: the fields' names, JSON punctuation and literals, numbers at
/// the edges of every type, time pieces, escapes that are not characters.
const TOKENS: &[&str] = &[
    "\"id\"",
    "\"type\"",
    "\"data\"",
    "\"timestamp\"",
    "\"appName\"",
    "\"jobData\"",
    "\"scheduledTime\"",
    "\"priority\"",
    "\"requestId\"",
    "\"idempotencyKey\"",
    "null",
    "true",
    "{}",
    "[]",
    "\"\"",
    ",",
    ":",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "1e999",
    "-0",
    "0.5",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "T",
    "Z",
    "+25:00",
    ":60",
    "-02-30",
    "\\u0000",
    "\\ud800",
    "\u{feff}",
    "\u{202e}",
    "\u{0}",
    "\u{ff11}",
];

/// The fuzz run's strategies, built once (building one compiles its regexes).
struct Generators {
    record: BoxedStrategy<Record>,
    case: BoxedStrategy<Case>,
    header_value: BoxedStrategy<Vec<u8>>,
    json: BoxedStrategy<Value>,
}

/// Applies 1 to 4 random edits to one part of `record`: its value, a header's value or name,
/// its key, or its header list; byte edits, token splices, or a JSON field's value replaced.
fn mutate(record: &Record, rng: &mut Rng, runner: &mut TestRunner, gen: &Generators) -> Record {
    let mut out = record.clone();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 | 1 => {
                let value = out.value.get_or_insert_with(Vec::new);
                edit_bytes(value, rng);
            }
            2 if !out.headers.is_empty() => {
                let i = rng.below(out.headers.len());
                edit_bytes(&mut out.headers[i].1, rng);
            }
            3 if !out.headers.is_empty() => {
                let i = rng.below(out.headers.len());
                let mut name = std::mem::take(&mut out.headers[i].0).into_bytes();
                edit_bytes(&mut name, rng);
                out.headers[i].0 = String::from_utf8_lossy(&name).into_owned();
            }
            4 => match rng.below(4) {
                0 if !out.headers.is_empty() => {
                    out.headers.remove(rng.below(out.headers.len()));
                }
                1 if !out.headers.is_empty() => {
                    let h = out.headers[rng.below(out.headers.len())].clone();
                    let at = rng.below(out.headers.len() + 1);
                    out.headers.insert(at, h);
                }
                _ => {
                    let name = ENVELOPE_FIELDS[rng.below(ENVELOPE_FIELDS.len())].to_string();
                    let value = generate(&gen.header_value, runner);
                    let at = rng.below(out.headers.len() + 1);
                    out.headers.insert(at, (name, value));
                }
            },
            _ => {
                // Structure-aware: a JSON object's field gets another value or goes.
                let parsed = out
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<Value>(v).ok());
                if let Some(Value::Object(mut object)) = parsed {
                    let keys: Vec<String> = object.keys().cloned().collect();
                    if !keys.is_empty() {
                        let key = &keys[rng.below(keys.len())];
                        if rng.below(4) == 0 {
                            object.remove(key);
                        } else {
                            object.insert(key.clone(), generate(&gen.json, runner));
                        }
                    }
                    out.value = Some(Value::Object(object).to_string().into_bytes());
                } else if let Some(key) = &mut out.key {
                    edit_bytes(key, rng);
                }
            }
        }
    }
    out
}

fn edit_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let at = rng.below(bytes.len() + 1);
    match rng.below(6) {
        0 if !bytes.is_empty() => {
            let i = at.min(bytes.len() - 1);
            bytes[i] ^= 1 << rng.below(8);
        }
        1 if !bytes.is_empty() => {
            let i = at.min(bytes.len() - 1);
            bytes[i] = [0, 0xff, 0x80, 0xc0, b'"', b'\\', b'0', b'9', b'-', b'.'][rng.below(10)];
        }
        2 => {
            let end = (at + rng.below(16)).min(bytes.len());
            bytes.drain(at..end);
        }
        3 => {
            let end = (at + rng.below(16)).min(bytes.len());
            let copy = bytes[at..end].to_vec();
            let to = rng.below(bytes.len() + 1);
            bytes.splice(to..to, copy);
        }
        4 => bytes.truncate(at),
        _ => {
            let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
            bytes.splice(at..at, token.iter().copied());
        }
    }
}

fn generate<S: Strategy>(strategy: &S, runner: &mut TestRunner) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("strategies here never reject for good")
        .current()
}

/// Runs for `CONVEYOR_FUZZ_SECONDS` (default 60): generated arbitrary records, near-valid
/// cases (with their expectations), and mutations of the seeds' records and of inputs that
/// decoded or were rejected for a field not seen before (kept as a corpus, so the run keeps
/// exploring near what already gets far). Every input gets every check of the properties
/// above; the first failure prints the input and the seed to reproduce it
/// (`CONVEYOR_FUZZ_SEED`). Prints how many inputs it tried.
#[test]
#[ignore = "a fuzz run of minutes: scripts/fuzz-decoders SECONDS"]
fn fuzz_decoders() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seconds = env("CONVEYOR_FUZZ_SECONDS").unwrap_or(60);
    let seed = env("CONVEYOR_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("fuzz-decoders: seed {seed}, {seconds} s");
    // XorShift, not proptest's default ChaCha: a fifth of a run went into ChaCha's rounds.
    let mut seed_bytes = [0u8; 16];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    seed_bytes[8..].copy_from_slice(&(!seed).to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::XorShift, &seed_bytes),
    );
    let mut rng = Rng(seed);
    let gen = Generators {
        record: any_record().boxed(),
        case: any_case().boxed(),
        header_value: header_value().boxed(),
        json: json_value().boxed(),
    };
    let mut corpus = seed_corpus();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut tried, mut by_source) = (0u64, [0u64; 4]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        for _ in 0..32 {
            let source = rng.below(4);
            let (record, case) = match source {
                0 => (generate(&gen.record, &mut runner), None),
                1 => {
                    let case = generate(&gen.case, &mut runner);
                    (case.record.clone(), Some(case))
                }
                _ => {
                    let base = &corpus[rng.below(corpus.len())];
                    (mutate(base, &mut rng, &mut runner, &gen), None)
                }
            };
            let checked = catch_unwind(AssertUnwindSafe(|| {
                if let Some(case) = &case {
                    case.check();
                }
                check_record(&record);
            }));
            if let Err(panic) = checked {
                eprintln!(
                    "fuzz-decoders: input {tried} (seed {seed}) failed:\n{record:?}\ncase: {case:?}"
                );
                resume_unwind(panic);
            }
            tried += 1;
            by_source[source] += 1;
            // Keep what decoded, or was rejected for a reason not seen yet, and a sample of
            // the rest: the corpus grows toward records that get far into a decoder.
            let mut keep = rng.below(64) == 0;
            for format in FORMATS {
                let outcome = match IngestDecoder::new(format, "q").decode(&record, NOW) {
                    Ok(_) => "ok".to_string(),
                    Err(Error::Missing(field)) => format!("missing {field}"),
                    Err(Error::Invalid { field, .. }) => format!("invalid {field}"),
                    Err(err) => format!("{:?}", std::mem::discriminant(&err)),
                };
                let seen = outcomes
                    .entry(format!("{format:?}: {outcome}"))
                    .or_insert(0);
                keep |= *seen == 0 || (outcome == "ok" && rng.below(8) == 0);
                *seen += 1;
            }
            if keep {
                if corpus.len() < 4096 {
                    corpus.push(record);
                } else {
                    let at = rng.below(corpus.len());
                    corpus[at] = record;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz-decoders: {tried} inputs in {:.0} s ({:.0}/s; generated {}, near-valid {}, mutated {}), \
         {} distinct outcomes, corpus {} records, no failure",
        elapsed.as_secs_f64(),
        tried as f64 / elapsed.as_secs_f64(),
        by_source[0],
        by_source[1],
        by_source[2] + by_source[3],
        outcomes.len(),
        corpus.len()
    );
    assert!(tried > 0, "the run tried no input");
}
