//! The HTTP API end to end, one suite for both engines: every route, and each `4xx` path,
//! against a server on 127.0.0.1 (a port chosen at run time) over a temporary SQLite file and
//! over the real broker (`scripts/dev-broker`, or `CONVEYOR_TEST_KAFKA`).

mod support;

use std::time::{Duration, Instant};

use conveyor::{Registry, WorkerConfig};
use conveyor_http::check_exposure;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{tag, Api, PATIENCE};

/// Asserts a `4xx` with `{"error","field"}` naming `field`.
fn refused(answer: (StatusCode, Value), status: StatusCode, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["field"].as_str(), field, "{body}");
}

async fn enqueue_status_cancel_and_duplicates(engine: &str) {
    let api = Api::start(engine, None).await;
    let (status, health) = api.call("GET", "/healthz", None).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    let later = json!({"kind": "noop", "queue": "mail", "in": "1h", "payload": {"to": "ada"}});
    let (status, job) = api.call("POST", "/v1/jobs", Some(later)).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["state"], "scheduled");
    assert_eq!(job["duplicate"], false);
    let id = job["id"].as_str().expect("id").to_string();
    let seen = api.until(&id, |j| j["state"] == "scheduled").await;
    assert_eq!(seen["payload"], json!({"to": "ada"}));
    assert_eq!(seen["queue"], "mail");

    let key = format!("welcome-{}", tag());
    let keyed = json!({"kind": "noop", "key": key, "in": "1h"});
    let (status, first) = api.call("POST", "/v1/jobs", Some(keyed.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = api.call("POST", "/v1/jobs", Some(keyed)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a duplicate key answers 200: {again}"
    );
    assert_eq!(
        (again["id"].clone(), again["duplicate"].clone()),
        (first["id"].clone(), json!(true))
    );

    let (status, cancelled) = api
        .call("POST", &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    api.until(&id, |j| j["state"] == "cancelled").await;

    let batch = json!({"jobs": [{"kind": "noop", "in": "1h"}, {"kind": "echo", "in": "1h"}]});
    let (status, stored) = api.call("POST", "/v1/jobs/batch", Some(batch)).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["jobs"].as_array().map(Vec::len), Some(2), "{stored}");

    let unknown = "01900000-0000-7000-8000-000000000000";
    refused(
        api.call("GET", &format!("/v1/jobs/{unknown}"), None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    refused(
        api.call("GET", "/v1/jobs/42", None).await,
        StatusCode::BAD_REQUEST,
        Some("id"),
    );
    refused(
        api.call("POST", "/v1/jobs/42/cancel", None).await,
        StatusCode::BAD_REQUEST,
        Some("id"),
    );
}

async fn bad_input_answers_4xx_naming_the_field(engine: &str) {
    let api = Api::start(engine, None).await;
    let bad = StatusCode::BAD_REQUEST;
    refused(api.raw("/v1/jobs", "{not json").await, bad, Some("body"));
    let cases = [
        (json!({"kind": "noop", "colour": "red"}), "colour"),
        (json!({"payload": {}}), "kind"),
        (json!({"kind": "bad kind!"}), "kind"),
        (json!({"kind": "noop", "queue": ""}), "queue"),
        (json!({"kind": "noop", "in": "soon"}), "in"),
        (json!({"kind": "noop", "at": "tomorrow"}), "at"),
        (
            json!({"kind": "noop", "in": "1h", "at": "2030-01-01T00:00:00Z"}),
            "in",
        ),
        (json!({"kind": "noop", "max_attempts": 0}), "max_attempts"),
        (json!({"kind": "noop", "timeout": "forever"}), "timeout"),
        (json!({"kind": "noop", "priority": "high"}), "body"),
    ];
    for (body, field) in cases {
        refused(
            api.call("POST", "/v1/jobs", Some(body)).await,
            bad,
            Some(field),
        );
    }
    let big = json!({"kind": "noop", "payload": {"blob": "x".repeat(100 * 1024)}});
    refused(
        api.call("POST", "/v1/jobs", Some(big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );
    refused(
        api.call("POST", "/v1/jobs/batch", Some(json!({"jobs": []})))
            .await,
        bad,
        Some("jobs"),
    );
    let one_bad = json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "in": "soon"}]});
    refused(
        api.call("POST", "/v1/jobs/batch", Some(one_bad)).await,
        bad,
        Some("in"),
    );
    refused(
        api.call("GET", "/v1/dead-letter?limit=0", None).await,
        bad,
        Some("limit"),
    );
    refused(
        api.call("GET", "/v1/dead-letter?limit=many", None).await,
        bad,
        Some("limit"),
    );
    refused(
        api.call("POST", "/v1/queues/bad%20queue!/purge", None)
            .await,
        bad,
        Some("queue"),
    );
    let cron = json!({"name": "n", "expr": "every tuesday", "kind": "noop"});
    let (status, body) = api.call("POST", "/v1/cron", Some(cron)).await;
    assert_eq!(status, bad, "{body}");
    refused(
        api.call("DELETE", "/v1/cron/nosuch", None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    refused(
        api.call("GET", "/v2/jobs", None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    // Nothing of the above was stored.
    let (_, queues) = api.call("GET", "/v1/queues", None).await;
    let waiting: u64 = queues["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| q["available"].as_u64().unwrap_or(0) + q["scheduled"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(waiting, 0, "{queues}");
}

async fn queues_dead_letters_and_cron(engine: &str) {
    let api = Api::start(engine, None).await;
    let doomed = json!({"kind": "fail", "queue": "doomed", "max_attempts": 1});
    let (_, job) = api.call("POST", "/v1/jobs", Some(doomed)).await;
    let id = job["id"].as_str().expect("id").to_string();
    let config = WorkerConfig {
        queues: vec!["doomed".into()],
        ..WorkerConfig::default()
    };
    let owner = config.owner.clone();
    let worker = api.conveyor.worker(Registry::with_builtins(), config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    api.until(&id, |j| j["state"] == "dead").await;
    let deadline = Instant::now() + PATIENCE;
    let letters = loop {
        let (status, letters) = api.call("GET", "/v1/dead-letter?limit=10", None).await;
        assert_eq!(status, StatusCode::OK, "{letters}");
        if letters
            .as_array()
            .is_some_and(|l| l.iter().any(|d| d["id"] == id.as_str()))
        {
            break letters;
        }
        assert!(Instant::now() < deadline, "never listed: {letters}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(letters[0]["last_error"].as_str().is_some(), "{letters}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, workers) = api.call("GET", "/v1/workers", None).await;
        assert_eq!(status, StatusCode::OK, "{workers}");
        let me = workers
            .as_array()
            .and_then(|w| w.iter().find(|w| w["owner"] == owner.as_str()));
        if me.is_some_and(|w| w["seen_at"].is_string() && w["running"].is_object()) {
            break;
        }
        assert!(Instant::now() < deadline, "worker never listed: {workers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, retried) = api
        .call("POST", &format!("/v1/dead-letter/{id}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "available");
    api.until(&id, |j| j["state"] == "dead" && j["attempt"] == 2)
        .await;
    let (status, all) = api.call("POST", "/v1/dead-letter/retry", None).await;
    assert_eq!(
        (status, all["retried"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{all}"
    );
    api.until(&id, |j| j["state"] == "dead" && j["attempt"] == 3)
        .await;
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
    let (status, purged) = api.call("POST", "/v1/dead-letter/purge", None).await;
    assert_eq!(
        (status, purged["purged"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{purged}"
    );

    for _ in 0..2 {
        api.call(
            "POST",
            "/v1/jobs",
            Some(json!({"kind": "noop", "queue": "idle"})),
        )
        .await;
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, stats) = api.call("GET", "/v1/queues", None).await;
        assert_eq!(status, StatusCode::OK);
        let idle = stats["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["queue"] == "idle"))
            .cloned();
        if idle.as_ref().is_some_and(|q| q["available"] == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, purged) = api.call("POST", "/v1/queues/idle/purge", None).await;
    assert_eq!(
        (status, purged["purged"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{purged}"
    );

    let entry =
        json!({"name": "nightly", "expr": "0 3 * * *", "kind": "noop", "payload": {"a": 1}});
    let (status, added) = api.call("POST", "/v1/cron", Some(entry)).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert!(added["next_run_at"].as_str().is_some(), "{added}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = api.call("GET", "/v1/cron", None).await;
        if list
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["name"] == "nightly"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = api.call("DELETE", "/v1/cron/nightly", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

async fn a_token_guards_the_api_but_not_healthz(engine: &str) {
    let mut api = Api::start(engine, Some("s3cret")).await;
    let (status, _) = api.call("GET", "/v1/queues", None).await;
    assert_eq!(status, StatusCode::OK);
    api.token = Some("wrong".into());
    refused(
        api.call("GET", "/v1/queues", None).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    refused(
        api.call("GET", "/metrics", None).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    api.token = None;
    refused(
        api.call("POST", "/v1/jobs", Some(json!({"kind": "noop"})))
            .await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    let (status, _) = api.call("GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, document) = api.call("GET", "/v1/openapi.json", None).await;
    assert_eq!(
        (status, document["openapi"].as_str()),
        (StatusCode::OK, Some("3.1.0"))
    );
}

/// The value of the first sample of `metric` whose labels include every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_count_jobs_and_read_the_queues(engine: &str) {
    let api = Api::start(engine, None).await;
    let queue = format!("m{}", tag());
    for kind in ["noop", "noop", "fail"] {
        let job = json!({"kind": kind, "queue": queue, "max_attempts": 1});
        let (status, _) = api.call("POST", "/v1/jobs", Some(job)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let config = WorkerConfig {
        queues: vec![queue.clone()],
        ..WorkerConfig::default()
    };
    let mut worker = api.conveyor.worker(Registry::with_builtins(), config);
    worker.observe(conveyor_http::metrics::record);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let q = format!("queue=\"{queue}\"");
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let response = api
            .client
            .get(format!("{}/metrics", api.base))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("text");
        let done = sample(&text, "conveyor_queue_jobs", &[&q, "state=\"completed\""]) == Some(2.0)
            && sample(&text, "conveyor_jobs_dead_lettered_total", &[&q]) == Some(1.0);
        if done {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
    let noop = "kind=\"noop\"";
    assert_eq!(
        sample(&text, "conveyor_jobs_enqueued_total", &[&q, noop]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "conveyor_jobs_started_total", &[&q, noop]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "conveyor_jobs_completed_total", &[&q, noop]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "conveyor_jobs_failed_total", &[&q, "kind=\"fail\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "conveyor_job_run_seconds_count", &[&q, noop]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "conveyor_job_wait_seconds_count", &[&q, noop]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "conveyor_queue_jobs", &[&q, "state=\"dead\""]),
        Some(1.0),
        "{text}"
    );
}

async fn a_traceparent_header_reaches_the_handler(engine: &str) {
    let api = Api::start(engine, None).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let queue = format!("t{}", tag());
    let post = |trace: &'static str| {
        api.client
            .post(format!("{}/v1/jobs", api.base))
            .header("traceparent", trace)
            .json(&json!({"kind": "traced", "queue": queue}))
            .send()
    };
    let refused = post("01-garbage").await.expect("post");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.expect("error body");
    assert_eq!(body["field"], "traceparent", "{body}");
    let stored: Value = post(trace).await.expect("post").json().await.expect("body");
    let id = stored["id"].as_str().expect("id").to_string();
    let (heard, seen) = tokio::sync::oneshot::channel();
    let heard = std::sync::Mutex::new(Some(heard));
    let mut registry = Registry::new();
    registry.register(conveyor::handler_fn("traced", move |ctx| {
        if let Some(tell) = heard.lock().expect("once").take() {
            let _ = tell.send(ctx.traceparent().map(str::to_string));
        }
        async { conveyor::Outcome::Complete }
    }));
    let config = WorkerConfig {
        queues: vec![queue.clone()],
        ..WorkerConfig::default()
    };
    let worker = api.conveyor.worker(registry, config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let got = tokio::time::timeout(PATIENCE, seen)
        .await
        .expect("the handler ran")
        .expect("told");
    assert_eq!(got.as_deref(), Some(trace));
    api.until(&id, |j| j["state"] == "completed").await;
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
}

async fn other_sites_cannot_use_the_api_through_a_browser(engine: &str) {
    let api = Api::start(engine, None).await;
    let send = |origin: Option<&str>, host: Option<&str>, form: bool| {
        let mut request = api.client.post(format!("{}/v1/jobs", api.base));
        request = match form {
            true => request
                .header("content-type", "text/plain")
                .body(r#"{"kind":"noop"}"#),
            false => request.json(&json!({"kind": "noop"})),
        };
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    let status = |r: reqwest::Response| r.status();
    // A cross-site text/plain post (what a page can send without asking): not JSON.
    assert_eq!(
        status(send(None, None, true).await.expect("post")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // A page of another origin.
    assert_eq!(
        status(
            send(Some("https://evil.example"), None, false)
                .await
                .expect("post")
        ),
        StatusCode::FORBIDDEN
    );
    // A name re-pointed at 127.0.0.1 (DNS rebinding), reading or writing.
    assert_eq!(
        status(
            send(None, Some("evil.example:7070"), false)
                .await
                .expect("post")
        ),
        StatusCode::FORBIDDEN
    );
    let read = api
        .client
        .get(format!("{}/v1/queues", api.base))
        .header("host", "evil.example:7070")
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), StatusCode::FORBIDDEN);
    let purge = api
        .client
        .post(format!("{}/v1/queues/default/purge", api.base))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("post");
    assert_eq!(purge.status(), StatusCode::FORBIDDEN);
    // This server's own origin and plain clients are served.
    assert_eq!(
        status(send(Some(&api.base), None, false).await.expect("post")),
        StatusCode::CREATED
    );
    assert_eq!(
        status(send(None, None, false).await.expect("post")),
        StatusCode::CREATED
    );
}

/// `GET /v1/jobs?state=`: pages with a cursor on SQLite; a `501` naming what is missing on an
/// engine without job lists; bad queries are `400` naming the field.
async fn jobs_are_listed_by_state(engine: &str) {
    let api = Api::start(engine, None).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let job = json!({"kind": "noop", "queue": "listed", "in": "1h", "payload": {"n": n}});
        let (_, done) = api.call("POST", "/v1/jobs", Some(job)).await;
        ids.push(done["id"].as_str().expect("id").to_string());
    }
    for (query, field) in [
        ("", "state"),
        ("?state=sleeping", "state"),
        ("?state=dead&limit=0", "limit"),
        ("?state=dead&queue=bad%20queue!", "queue"),
        ("?state=dead&colour=red", "query"),
    ] {
        let answer = api.call("GET", &format!("/v1/jobs{query}"), None).await;
        refused(answer, StatusCode::BAD_REQUEST, Some(field));
    }
    let (status, page) = api
        .call("GET", "/v1/jobs?state=scheduled&queue=listed&limit=2", None)
        .await;
    if engine == "kafka" {
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{page}");
        assert!(
            page["error"].as_str().unwrap_or("").contains("job lists"),
            "{page}"
        );
        return;
    }
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut listed: Vec<Value> = page["jobs"].as_array().expect("jobs").clone();
    assert_eq!(listed.len(), 2, "{page}");
    let next = page["next"].as_str().expect("a next page").to_string();
    let (status, rest) = api
        .call(
            "GET",
            &format!("/v1/jobs?state=scheduled&queue=listed&limit=2&after={next}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert!(rest["next"].is_null(), "{rest}");
    listed.extend(rest["jobs"].as_array().expect("jobs").iter().cloned());
    let found: Vec<&str> = listed.iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(found, ids);
    let answer = api
        .call("GET", "/v1/jobs?state=dead&after=nonsense", None)
        .await;
    refused(answer, StatusCode::BAD_REQUEST, Some("after"));
}

#[test]
fn only_loopback_listens_without_a_token() {
    let any = "0.0.0.0:7070".parse().expect("address");
    assert!(check_exposure(any, None).is_err());
    assert!(check_exposure(any, Some("t")).is_ok());
    assert!(check_exposure("127.0.0.1:7070".parse().expect("address"), None).is_ok());
    assert!(check_exposure("[::1]:7070".parse().expect("address"), None).is_ok());
}

macro_rules! api_suite {
    ($engine:ident) => {
        mod $engine {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn enqueue_status_cancel_and_duplicates() {
                super::enqueue_status_cancel_and_duplicates(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_input_answers_4xx_naming_the_field() {
                super::bad_input_answers_4xx_naming_the_field(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn queues_dead_letters_and_cron() {
                super::queues_dead_letters_and_cron(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn metrics_count_jobs_and_read_the_queues() {
                super::metrics_count_jobs_and_read_the_queues(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_traceparent_header_reaches_the_handler() {
                super::a_traceparent_header_reaches_the_handler(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn other_sites_cannot_use_the_api_through_a_browser() {
                super::other_sites_cannot_use_the_api_through_a_browser(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jobs_are_listed_by_state() {
                super::jobs_are_listed_by_state(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_token_guards_the_api_but_not_healthz() {
                super::a_token_guards_the_api_but_not_healthz(stringify!($engine)).await;
            }
        }
    };
}

api_suite!(sqlite);
api_suite!(kafka);
