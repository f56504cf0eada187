//! The `otlp` feature: a worker given `OTEL_EXPORTER_OTLP_ENDPOINT` exports its job spans to
//! that collector over OTLP/HTTP, each in the trace its enqueue carried. The collector here is
//! a stand-in on 127.0.0.1 that keeps what it is sent; the spans are protobuf, in which a
//! trace id is its 16 raw bytes.
#![cfg(feature = "otlp")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor::{Engine, Inspect, JobState, NewJob, SqliteEngine};

/// Requests the stand-in collector received: (path, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A collector answering every request `200` on a port of its own.
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let received = Received::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            keep.lock().expect("lock").push((path, body));
            let _ = reader.get_mut().write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (address, received)
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_spans_reach_the_collector_in_their_enqueue_trace() {
    let (endpoint, received) = collector();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("otlp.db");
    let engine = SqliteEngine::open_path(&file).expect("open");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut job = NewJob::new("echo", serde_json::json!({"hello": "otlp"}));
    job.traceparent = Some(format!("00-{trace}-{parent}-01"));
    let id = engine.enqueue(job).await.expect("enqueue").id;

    let log = std::fs::File::create(dir.path().join("worker.log")).expect("log");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["worker", "--backend"])
        .arg(format!("sqlite://{}", file.display()))
        .current_dir(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = engine.job(id).await.expect("lookup").expect("job");
        if info.state == JobState::Completed {
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A graceful stop flushes the exporter's queue before the process exits.
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = worker.wait().expect("wait");
    let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{log}");

    let received = received.lock().expect("lock").clone();
    let traces: Vec<&Vec<u8>> = received
        .iter()
        .filter(|(path, _)| path == "/v1/traces")
        .map(|(_, body)| body)
        .collect();
    assert!(
        !traces.is_empty(),
        "nothing exported; received {received:?}\n{log}"
    );
    let contains = |needle: &[u8]| {
        traces
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle))
    };
    assert!(
        contains(&hex(trace)),
        "no span in the enqueue's trace\n{log}"
    );
    assert!(
        contains(&hex(parent)),
        "no span naming the enqueue's span as its parent\n{log}"
    );
    assert!(contains(b"job"), "no job span\n{log}");
}
