//! The http handler on a real worker runtime against a local test server: 2xx completes, 400
//! dead-letters with the body, 429 retries after its Retry-After, 503 retries, a request with
//! no answer times out, a refused connection retries; connections are reused and the handler's
//! concurrency limit holds.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_core::{JobState, Registry};
use conveyor_handlers::{handlers, Http, HttpConfig, Runner};
use serde_json::json;
use support::Harness;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
struct Server {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    bodies: Mutex<Vec<serde_json::Value>>,
}

/// Serves HTTP/1.1 with keep-alive on 127.0.0.1 at a port chosen by the system.
async fn serve(server: Arc<Server>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            server.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(socket, server.clone()));
        }
    });
    address
}

async fn connection(socket: tokio::net::TcpStream, server: Arc<Server>) {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let mut length = 0;
        loop {
            let mut header = String::new();
            read.read_line(&mut header).await.expect("header");
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("length");
                }
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.expect("body");
        let (status, extra, text) = match path.as_str() {
            "/ok" => {
                let now = server.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                server.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                server.in_flight.fetch_sub(1, Ordering::SeqCst);
                let json = serde_json::from_slice(&body).expect("a JSON body");
                server.bodies.lock().expect("bodies").push(json);
                ("200 OK", "", "")
            }
            "/busy" => (
                "429 Too Many Requests",
                "Retry-After: 3600\r\n",
                "slow down",
            ),
            "/bad" => ("400 Bad Request", "", "bad field: name"),
            "/down" => ("503 Service Unavailable", "", "maintenance"),
            _ => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn http(kind: &str, url: String, concurrency: usize) -> Vec<Arc<dyn conveyor_core::Handler>> {
    let runner = Http::new(HttpConfig {
        name: kind.into(),
        url,
        headers: vec![("authorization".into(), "Bearer test".into())],
        timeout: Duration::from_millis(500),
        concurrency,
    })
    .expect("http handler");
    handlers(Arc::new(runner) as Arc<dyn Runner>, &[kind.to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_timeouts_and_refusals_make_the_outcome() {
    let h = Harness::new();
    let server = Arc::new(Server::default());
    let address = serve(server.clone()).await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let mut registry = Registry::new();
    for (kind, url, concurrency) in [
        ("ok", format!("http://{address}/ok"), 2),
        ("busy", format!("http://{address}/busy"), 1),
        ("bad", format!("http://{address}/bad"), 1),
        ("down", format!("http://{address}/down"), 1),
        ("slow", format!("http://{address}/slow"), 1),
        ("refused", format!("http://{refused}/"), 1),
    ] {
        for handler in http(kind, url, concurrency) {
            registry.register(handler);
        }
    }
    let run = h.start(registry, 16);
    let mut oks = Vec::new();
    for n in 0..10 {
        oks.push(h.enqueue("ok", json!({"n": n}), 1).await);
    }
    let busy = h.enqueue("busy", json!({}), 3).await;
    let bad = h.enqueue("bad", json!({}), 5).await;
    let down = h.enqueue("down", json!({}), 2).await;
    let slow = h.enqueue("slow", json!({}), 1).await;
    let refused = h.enqueue("refused", json!({}), 1).await;
    let infos = h.wait_final(&oks).await;
    assert!(infos.iter().all(|i| i.state == JobState::Completed));
    let others = h
        .wait(&[busy, bad, down, slow, refused], |i| {
            i.state.is_final() || (i.state == JobState::Retryable && i.attempt == 1)
        })
        .await;
    run.stop().await;

    let bodies = server.bodies.lock().expect("bodies").clone();
    assert_eq!(bodies.len(), 10);
    assert!(bodies
        .iter()
        .all(|b| b["kind"] == "ok" && b["payload"]["n"].is_number()));
    assert!(
        server.max_in_flight.load(Ordering::SeqCst) <= 2,
        "concurrency limit"
    );
    let connections = server.connections.load(Ordering::SeqCst);
    assert!(
        connections < 10 + 3,
        "connections are reused: {connections}"
    );

    let busy = &others[0];
    assert_eq!(
        (busy.state, busy.attempt),
        (JobState::Retryable, 1),
        "{busy:?}"
    );
    let wait = busy.run_at - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(3000),
        "Retry-After honoured: {busy:?}"
    );
    assert_eq!(
        busy.last_error.as_deref(),
        Some(format!("POST http://{address}/busy: HTTP 429: slow down").as_str())
    );

    let bad = &others[1];
    assert_eq!(
        (bad.state, bad.attempt),
        (JobState::Dead, 1),
        "no retry after a 400"
    );
    assert_eq!(
        bad.last_error.as_deref(),
        Some(format!("POST http://{address}/bad: HTTP 400: bad field: name").as_str())
    );

    assert_eq!(
        (others[2].state, others[2].attempt),
        (JobState::Dead, 2),
        "503 retried"
    );
    let slow = &others[3];
    assert_eq!(slow.state, JobState::Dead);
    assert!(
        slow.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no response within 500ms"),
        "{slow:?}"
    );
    let refused = &others[4];
    assert_eq!(refused.state, JobState::Dead);
    assert!(
        refused
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("onnection refused"),
        "{refused:?}"
    );
}
