//! Guards the Kafka wire format (docs/kafka-wire-format.md) and the seed shapes the ingest path
//! accepts. A failing fixture means a producer somewhere would break: change the version instead.

use std::time::Duration;

use conveyor_core::{Backoff, JobId, NewJob};
use conveyor_kafka::{Envelope, Error, Format, IngestDecoder, Record, Zone};
use serde_json::{json, Value};

fn fixture_record(text: &str) -> Record {
    let v: Value = serde_json::from_str(text).expect("fixture is JSON");
    Record {
        key: v["key"].as_str().map(|s| s.as_bytes().to_vec()),
        value: v["value"].as_str().map(|s| s.as_bytes().to_vec()),
        headers: v["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| {
                (
                    h[0].as_str().expect("name").to_string(),
                    h[1].as_str().expect("value").as_bytes().to_vec(),
                )
            })
            .collect(),
    }
}

fn json_record(value: Value) -> Record {
    Record {
        key: None,
        value: Some(value.to_string().into_bytes()),
        headers: vec![],
    }
}

fn fixture_envelope() -> Envelope {
    Envelope {
        id: "01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7d".parse().expect("id"),
        kind: "send_email".into(),
        queue: "mail".into(),
        payload: r#"{"to":"ada@example.com"}"#.into(),
        attempt: 0,
        max_attempts: 5,
        priority: 10,
        not_before: Some(1_764_000_060_000),
        enqueued_at: 1_764_000_000_000,
        timeout: Some(Duration::from_secs(30)),
        backoff: Some(Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_millis(800),
            jitter: 0.0,
        }),
        idempotency_key: Some("welcome-ada".into()),
        ordering_key: Some("user-42".into()),
        traceparent: None,
        key_checked: false,
        replay_of: None,
        attempt_budget: None,
    }
}

#[test]
fn a_replayed_job_names_the_job_it_re_runs() {
    let original: JobId = "01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7d".parse().expect("id");
    let replay = Envelope {
        id: "01936f6e-9999-7d2e-9c4b-2f1e0a9b8c7d".parse().expect("id"),
        replay_of: Some(original),
        ..fixture_envelope()
    };
    let record = replay.to_record();
    let header = record
        .headers
        .iter()
        .find(|(name, _)| name == "conveyor-replay-of")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
    assert_eq!(
        header.as_deref(),
        Some("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7d")
    );
    assert_eq!(
        Envelope::from_record(&record, "default").expect("decode"),
        replay
    );
    // Provenance only: an unreadable one never refuses the job.
    let mut garbled = record.clone();
    for (name, value) in &mut garbled.headers {
        if name == "conveyor-replay-of" {
            *value = b"not a uuid".to_vec();
        }
    }
    let decoded = Envelope::from_record(&garbled, "default").expect("decode");
    assert_eq!(decoded.replay_of, None);
}

#[test]
fn the_documented_record_decodes() {
    let record = fixture_record(include_str!("fixtures/envelope-v1.json"));
    assert!(Envelope::is_envelope(&record));
    assert_eq!(
        Envelope::from_record(&record, "default").expect("decode"),
        fixture_envelope()
    );
}

#[test]
fn encoding_writes_exactly_the_documented_record() {
    let record = fixture_record(include_str!("fixtures/envelope-v1.json"));
    assert_eq!(fixture_envelope().to_record(), record);
}

#[test]
fn a_new_job_round_trips() {
    let job = NewJob::new("resize", json!({"w": 64}))
        .queue("images")
        .priority(-3)
        .max_attempts(2);
    let payload = job.validate(1024).expect("valid");
    let envelope = Envelope::from_new_job(&job, payload, 1_000);
    let record = envelope.to_record();
    assert_eq!(
        record.key,
        Some(job.id.to_string().into_bytes()),
        "no ordering key: keyed by id"
    );
    assert_eq!(
        Envelope::from_record(&record, "default").expect("decode"),
        envelope
    );
}

#[test]
fn envelope_errors_name_the_header() {
    let mut record = fixture_record(include_str!("fixtures/envelope-v1.json"));
    record.headers[0].1 = b"2".to_vec();
    assert_eq!(
        Envelope::from_record(&record, "q"),
        Err(Error::Version("2".into()))
    );
    let mut record = fixture_record(include_str!("fixtures/envelope-v1.json"));
    record.headers.retain(|(n, _)| n != "conveyor-kind");
    assert_eq!(
        Envelope::from_record(&record, "q"),
        Err(Error::Missing("conveyor-kind"))
    );
    let mut record = fixture_record(include_str!("fixtures/envelope-v1.json"));
    record.headers[4].1 = b"many".to_vec();
    let err = Envelope::from_record(&record, "q").expect_err("bad attempt");
    assert!(err.to_string().contains("conveyor-attempt"), "{err}");
    let mut record = fixture_record(include_str!("fixtures/envelope-v1.json"));
    record.value = Some(b"{not json".to_vec());
    assert!(matches!(
        Envelope::from_record(&record, "q"),
        Err(Error::NotJson(_))
    ));
}

/// The event of seed 002 (Go worker server), exactly as documented there.
#[test]
fn go_events_become_jobs() {
    let event = json!({
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "type": "job.email.verification",
        "data": {"type": "verification", "campaign_id": "c-1", "user_id": "u-1", "priority": 1},
        "timestamp": "2025-01-01T12:00:00Z"
    });
    let decoder = IngestDecoder::new(Format::Event, "default");
    let job = decoder
        .decode(&json_record(event.clone()), 0)
        .expect("decode");
    assert_eq!(job.id.to_string(), "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(job.kind, "job.email.verification");
    assert_eq!(
        serde_json::from_str::<Value>(&job.payload).expect("json"),
        event["data"]
    );
    assert_eq!(job.enqueued_at, 1_735_732_800_000);
    assert_eq!(
        IngestDecoder::new(Format::Auto, "default")
            .decode(&json_record(event), 0)
            .expect("auto"),
        job
    );
}

#[test]
fn non_uuid_producer_ids_map_to_the_same_job_id_every_time() {
    let decoder = IngestDecoder::new(Format::Event, "default");
    let event = json!({"id": "evt-17", "type": "ping", "data": {}});
    let a = decoder
        .decode(&json_record(event.clone()), 0)
        .expect("decode")
        .id;
    let b = decoder.decode(&json_record(event), 5).expect("decode").id;
    assert_eq!(a, b);
    assert_ne!(
        a,
        decoder
            .decode(
                &json_record(json!({"id": "evt-18", "type": "ping", "data": {}})),
                0
            )
            .expect("decode")
            .id
    );
}

/// The request of seed 003 (Java scheduler): a zone-less time is read in the configured zone.
#[test]
fn java_schedule_requests_become_delayed_jobs() {
    let request = json!({
        "requestId": "auto-generated-uuid",
        "appName": "sms",
        "scheduledTime": "2025-11-03T22:00:00",
        "priority": "high",
        "idempotencyKey": "sms-12345-unique",
        "jobData": {"phone": "+15550000", "message": "hi"}
    });
    let mut decoder = IngestDecoder::new(Format::ScheduleRequest, "sms");
    decoder.zone = "+07:00".parse::<Zone>().expect("zone");
    let job = decoder
        .decode(&json_record(request.clone()), 0)
        .expect("decode");
    assert_eq!(job.kind, "sms");
    assert_eq!(job.queue, "sms");
    assert_eq!(job.priority, 10);
    assert_eq!(job.idempotency_key.as_deref(), Some("sms-12345-unique"));
    // 22:00 at +07:00 is 15:00 UTC.
    assert_eq!(job.not_before, Some(1_762_182_000_000));
    assert_eq!(
        serde_json::from_str::<Value>(&job.payload).expect("json"),
        request["jobData"]
    );
    decoder.zone = "Asia/Jakarta".parse::<Zone>().expect("IANA zone");
    assert_eq!(
        decoder
            .decode(&json_record(request.clone()), 0)
            .expect("decode")
            .not_before,
        Some(1_762_182_000_000)
    );
    let mut zoned = request;
    zoned["scheduledTime"] = json!("2025-11-03T22:00:00Z");
    assert_eq!(
        decoder
            .decode(&json_record(zoned), 0)
            .expect("decode")
            .not_before,
        Some(1_762_207_200_000)
    );
}

#[test]
fn a_schedule_request_without_request_id_gets_a_fresh_one() {
    let decoder = IngestDecoder::new(Format::ScheduleRequest, "default");
    let request = json!({"appName": "sms", "scheduledTime": "2000-01-01T00:00:00Z", "jobData": {}});
    let now = conveyor_core::now_ms();
    let a = decoder
        .decode(&json_record(request.clone()), now)
        .expect("decode");
    let b = decoder.decode(&json_record(request), now).expect("decode");
    assert_ne!(a.id, b.id);
    assert_eq!(a.not_before, None, "a time in the past runs now");
    assert_ne!(a.id, JobId(uuid::Uuid::nil()));
}

#[test]
fn bad_records_get_errors_naming_the_field() {
    let auto = IngestDecoder::new(Format::Auto, "default");
    let cases: Vec<(Record, &str)> = vec![
        (
            Record {
                value: Some(b"not json".to_vec()),
                ..Record::default()
            },
            "not valid JSON",
        ),
        (
            json_record(json!([1, 2])),
            "expected a JSON object, got an array",
        ),
        (
            json_record(json!({"hello": "world"})),
            "unknown record shape",
        ),
        (
            json_record(json!({"type": "ping", "data": {}})),
            "missing required field `id`",
        ),
        (
            json_record(json!({"id": "1", "type": "ping"})),
            "missing required field `data`",
        ),
        (
            json_record(json!({"id": "1", "type": "bad kind!", "data": {}})),
            "invalid field `type`",
        ),
        (
            json_record(json!({"id": 7, "type": "ping", "data": {}})),
            "invalid field `id`: expected a string",
        ),
        (
            json_record(json!({"appName": "sms", "jobData": {}})),
            "missing required field `scheduledTime`",
        ),
        (
            json_record(json!({"scheduledTime": "2025-01-01T00:00:00Z", "jobData": {}})),
            "missing required field `appName`",
        ),
        (
            json_record(json!({"appName": "sms", "scheduledTime": "soon", "jobData": {}})),
            "invalid field `scheduledTime`",
        ),
        (
            json_record(
                json!({"appName": "sms", "scheduledTime": "2025-01-01T00:00:00Z", "priority": "urgent", "jobData": {}}),
            ),
            "invalid field `priority`",
        ),
    ];
    for (record, needle) in cases {
        let err = auto.decode(&record, 0).expect_err(needle).to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    }
    assert!("bogus".parse::<Format>().is_err());
    assert!("Mars/Olympus".parse::<Zone>().is_err());
}
