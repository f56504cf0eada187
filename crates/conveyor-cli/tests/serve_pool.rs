//! `conveyor serve` with a worker-process pool: `/metrics` shows the pool's processes and
//! jobs, and once SIGTERM arrives `/healthz` answers `503 draining` while the running job
//! finishes (so a load balancer stops sending traffic), and the job is not lost.

mod handlers_support;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handlers_support::*;

/// A worker that sleeps `payload.sleep` seconds, then completes.
const SLEEPER: &str = "import time\nfrom conveyor_worker import run\n\
run(lambda task: time.sleep(task.payload.get('sleep', 0)))\n";

/// `GET path` on `address`: (status code, body).
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Waits until the log names the address `serve` listens on.
fn address_in(log: &Path) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("HTTP API on http://").nth(1) {
            if let Some(address) = rest.split('/').next() {
                return address.to_string();
            }
        }
        assert!(Instant::now() < deadline, "serve did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns something, within PATIENCE.
fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_shows_its_pool_in_metrics_and_drains_behind_a_503_health_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        examples().join("python/conveyor_worker.py"),
        dir.path().join("conveyor_worker.py"),
    )
    .expect("copy the library");
    std::fs::write(dir.path().join("sleeper.py"), SLEEPER).expect("worker");
    let config = dir.path().join("conveyor.toml");
    std::fs::write(
        &config,
        "[[handlers]]\nkinds = [\"nap\"]\npool = { command = \"python3 sleeper.py\", workers = 2 }\n",
    )
    .expect("config");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    json(&url, &["stats", "--json"]); // the file exists before serve opens it
    let log = dir.path().join("serve.log");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["--backend", &url, "--config"])
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("CONVEYOR_TOKEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn serve");
    let address = address_in(&log);
    let metrics = until("both pool processes in /metrics", || {
        get(&address, "/metrics").filter(|(_, body)| {
            body.lines()
                .any(|l| l.starts_with("conveyor_pool_processes{pool=") && l.ends_with(" 2"))
        })
    });
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("conveyor_pool_restarts_total{pool="),
        "{}",
        metrics.1
    );
    assert_eq!(get(&address, "/healthz").map(|r| r.0), Some(200));
    let id = json(&url, &["enqueue", "nap", r#"{"sleep":3}"#, "--json"])["id"]
        .as_str()
        .expect("id")
        .to_string();
    until("the job to run", || {
        (json(&url, &["job", &id, "--json"])["state"] == "running").then_some(())
    });
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let (status, body) = until("/healthz to say draining", || {
        get(&address, "/healthz").filter(|(status, _)| *status != 200)
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"draining\""), "{body}");
    let exit = until("serve to stop", || serve.try_wait().expect("wait"));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "serve exit {exit}: {stderr}");
    assert_eq!(
        json(&url, &["job", &id, "--json"])["state"],
        "completed",
        "the running job finished during the drain: {stderr}"
    );
}
