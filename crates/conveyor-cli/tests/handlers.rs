//! `[[handlers]]` end to end through the real binary, on both engines: seed 000's PHP worker
//! loop (`examples/workers/php`, its `conveyor.toml` unchanged) handles `face-comparison` jobs
//! enqueued with `--queue face-comparison`, completing and dead-lettering as its code says, and
//! SIGTERM drains the pool. Kafka runs use `CONVEYOR_TEST_KAFKA` (set by scripts/test), else
//! start the project's broker.

mod handlers_support;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use handlers_support::*;
use serde_json::Value;

fn seed_000_loop_serves_face_comparison(url: &str) {
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("worker.log");
    let config = examples().join("php/conveyor.toml");
    // The storage exists before two processes open it at once (a fresh SQLite file's
    // migration racing another process's is a known engine issue, left to its owners).
    json(url, &["stats", "--json"]);
    let worker = spawn_worker(url, &config, &log);
    let enqueue = |payload: &str| {
        json(
            url,
            &[
                "enqueue",
                "face-comparison",
                payload,
                "--queue",
                "face-comparison",
                "--json",
            ],
        )["id"]
            .as_str()
            .map(str::to_string)
            .expect("an id")
    };
    let matched = enqueue(r#"{"match":true}"#);
    let mismatched = enqueue(r#"{"match":false}"#);
    let deadline = Instant::now() + PATIENCE;
    let (stats, letters) = loop {
        let stats = json(url, &["stats", "--json"]);
        let letters = json(url, &["dlq", "list", "--json"]);
        let queue = stats["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["queue"] == "face-comparison").cloned())
            .unwrap_or_default();
        // Stats and the list are read one after the other: wait until both saw the death.
        let settled = queue["completed"] == 1 && queue["dead"] == 1;
        if settled && letters.as_array().is_some_and(|l| l.len() == 1) {
            break (queue, letters);
        }
        assert!(
            Instant::now() < deadline,
            "jobs not done: {stats} {letters}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = stop(worker, &log);
    assert_eq!(stats["dead"], 1, "{stats}");
    assert_eq!(letters[0]["id"], mismatched.as_str(), "{letters}");
    assert_eq!(letters[0]["last_error"], "faces do not match", "{letters}");
    assert_eq!(
        letters[0]["attempt"], 1,
        "fail() without retry dead-letters at once: {letters}"
    );
    assert_ne!(matched, mismatched);
    // The worker's own stderr reached the log, and the drained pool reported its counts.
    assert!(
        stderr.contains("[Jobs Worker] Started and waiting for jobs..."),
        "{stderr}"
    );
    assert!(stderr.contains("pool stopped"), "{stderr}");
    assert!(stderr.contains("jobs: 2"), "{stderr}");
}

#[test]
fn the_seed_000_php_loop_on_sqlite() {
    if !have_php() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    seed_000_loop_serves_face_comparison(&url);
}

#[test]
fn the_seed_000_php_loop_on_kafka() {
    if !have_php() {
        return;
    }
    seed_000_loop_serves_face_comparison(&kafka_url("php"));
}

#[test]
fn a_missing_program_or_a_kind_served_twice_stops_the_worker_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    for (text, needle) in [
        (
            "[[handlers]]\nkinds = [\"a\"]\npool = { command = \"no-such-php worker.php\" }\n",
            "program \"no-such-php\" not found on PATH",
        ),
        (
            "[[handlers]]\nkinds = [\"a\"]\nexec = { command = \"sh\" }\n[[handlers]]\nkinds = [\"a\"]\nexec = { command = \"sh\" }\n",
            "kind \"a\" is served twice",
        ),
        ("[[handlers]]\nkinds = [\"a\"]\nexec = { command = \"sh\", colour = 1 }\n", "colour"),
    ] {
        let config = dir.path().join("conveyor.toml");
        std::fs::write(&config, text).expect("write config");
        for verb in ["worker", "serve"] {
            let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
                .args(["--backend", &url, "--config"])
                .arg(&config)
                .arg(verb)
                // serve binds its HTTP port first: one the system picks, never a fixed one.
                .args(if verb == "serve" { &["--listen", "127.0.0.1:0"][..] } else { &[][..] })
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{verb} {text}: {stderr}");
            assert!(stderr.contains(needle), "{verb}: {needle:?} not in {stderr}");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .args(["--config"])
            .arg(&config)
            .args(["config", "check"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
    }
}

#[test]
fn config_check_prints_the_php_example_with_its_defaults() {
    let config = examples().join("php/conveyor.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--config")
        .arg(&config)
        .args(["config", "check", "--json"])
        .env_remove("CONVEYOR_BACKEND")
        .output()
        .expect("run");
    if !have_php() {
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_str(&stdout).expect("json");
    let pool = &value["handlers"][0]["pool"];
    assert_eq!(value["handlers"][0]["queue"], "face-comparison");
    assert_eq!(
        (pool["workers"].as_i64(), pool["max_memory_mb"].as_i64()),
        (Some(2), Some(256))
    );
    assert_eq!(pool["timeout"], "5m");
    assert!(
        pool["command"][0]
            .as_str()
            .is_some_and(|p| p.ends_with("php")),
        "{pool}"
    );
}

/// The Python and shell examples, each started from its own `conveyor.toml`, run a job and
/// their output reaches the log.
#[test]
fn the_python_and_shell_examples_run_their_jobs() {
    for (folder, kind, payload, logged) in [
        ("python", "greet", r#"{"name":"ada"}"#, "hello, ada"),
        (
            "shell",
            "thumbnail",
            r#"{"file":"cat.png","width":128}"#,
            "thumbnail of cat.png at 128px",
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let log = dir.path().join("worker.log");
        json(&url, &["stats", "--json"]); // see seed_000_loop_serves_face_comparison
        let worker = spawn_worker(&url, examples().join(folder).join("conveyor.toml"), &log);
        let id = json(&url, &["enqueue", kind, payload, "--json"])["id"]
            .as_str()
            .map(str::to_string)
            .expect("id");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let job = json(&url, &["job", &id, "--json"]);
            if job["state"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline && job["state"] != "dead",
                "{folder}: {job}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let stderr = stop(worker, &log);
        assert!(
            stderr.contains(logged),
            "{folder}: {logged:?} not in {stderr}"
        );
    }
}
