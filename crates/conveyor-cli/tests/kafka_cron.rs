//! Cron on Kafka through the binary, on a durable broker of the test's own: two `conveyor
//! serve` processes fire the same every-second entry, and one is killed with SIGKILL half-way.
//! Each tick enqueues one job (two firing processes never make two), and the survivor goes on
//! firing.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::Fleet;

/// Job ids echoed over `logs`, with how many times each ran, and the times of the runs.
fn echoed(logs: &[PathBuf]) -> (HashMap<String, usize>, Vec<chrono::DateTime<chrono::Utc>>) {
    let (mut runs, mut times) = (HashMap::new(), Vec::new());
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" echo job=")) {
            let id = line
                .split("job=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(id) = id {
                *runs.entry(id.to_string()).or_insert(0) += 1;
            }
            times.extend(
                line.split_whitespace()
                    .next()
                    .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()),
            );
        }
    }
    (runs, times)
}

/// Waits until `done` holds or `limit` passed.
fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn each_cron_tick_runs_once_across_two_serve_processes_and_a_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let address = fleet.broker(&["start"]);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let url = format!(
        "kafka://{address}?prefix=cron{}.&partitions=3&session_timeout=6s",
        &tag[24..]
    );
    let since = Instant::now();
    let add = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args([
            "--backend",
            &url,
            "cron",
            "add",
            "tick",
            "* * * * * *",
            "echo",
        ])
        .arg(r#"{"cron":true}"#)
        .output()
        .expect("run conveyor cron add");
    assert!(
        add.status.success(),
        "cron add: {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let logs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("serve-{i}.log")))
        .collect();
    fleet.spawn_serve(&url, &logs[0]);
    fleet.spawn_serve(&url, &logs[1]);
    let runs_since =
        |at: chrono::DateTime<chrono::Utc>| echoed(&logs).1.iter().filter(|t| **t > at).count();
    let start = chrono::Utc::now() - chrono::Duration::seconds(60);
    wait_until(Duration::from_secs(90), || runs_since(start) >= 3);
    if let Some(mut victim) = fleet.workers[0].take() {
        victim.kill().expect("kill -9 a serve process");
        victim.wait().expect("reap");
    }
    // The survivor takes the dead one's partitions over (its session, then a rebalance) and
    // goes on firing.
    let killed_at = chrono::Utc::now();
    wait_until(Duration::from_secs(90), || runs_since(killed_at) >= 5);
    let (runs, _) = echoed(&logs);
    let after_kill = runs_since(killed_at);
    // Measured after the runs were counted: every run counted is of a tick in this time.
    let seconds = since.elapsed().as_secs() as usize;
    drop(fleet);
    let reruns: usize = runs.values().map(|n| n - 1).sum();
    eprintln!(
        "{} ticks ran in {seconds} s ({reruns} re-runs of a job the killed process held)",
        runs.len()
    );
    // One job per tick: two processes firing every second would make about twice as many.
    let once_per_tick = runs.len() <= seconds + 1;
    if !once_per_tick || after_kill < 5 {
        let kept = dir.keep();
        panic!(
            "{} jobs from {seconds} s of ticks (at most one per tick), {after_kill} runs after \
             the kill (the survivor must keep firing); logs kept in {}",
            runs.len(),
            kept.display()
        );
    }
}
