//! The `conveyor` binary on Kafka: enqueue, a worker process, then `stats`, `dlq list`, `dlq
//! retry`, `dlq purge`, `job` and `cancel` from other processes. Uses `CONVEYOR_TEST_KAFKA` (set by scripts/test), else starts the
//! project's broker.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::shared_broker as broker;

fn conveyor(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--backend")
        .arg(url)
        .args(args)
        .output()
        .expect("run conveyor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(url: &str, args: &[&str]) -> Value {
    let (code, stdout, stderr) = conveyor(url, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} not JSON ({e}): {stdout}"))
}

#[test]
fn stats_and_the_dead_letter_list_come_from_the_broker() {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let url = format!(
        "kafka://{}?prefix=cli{}.&group=cli{}&partitions=2&session_timeout=6s",
        broker(),
        &tag[24..],
        &tag[24..]
    );
    for _ in 0..2 {
        json(&url, &["enqueue", "noop", "{}", "--json"]);
    }
    let dead = json(
        &url,
        &["enqueue", "fail", "{}", "--max-attempts", "1", "--json"],
    );
    let stats = json(&url, &["stats", "--json"]);
    assert_eq!(stats["queues"][0]["available"], 3, "{stats}");
    assert_eq!(
        stats["queues"][0]["partitions"].as_array().map(Vec::len),
        Some(2)
    );

    let mut worker = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["--backend", &url, "worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = json(&url, &["stats", "--json"]);
        let queue = &stats["queues"][0];
        if queue["completed"] == 2 && queue["dead"] == 1 && queue["available"] == 0 {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the counts never settled: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = worker.kill();
    let _ = worker.wait();
    let lags: Vec<&Value> = stats["queues"][0]["partitions"]
        .as_array()
        .map(|p| p.iter().map(|p| &p["lag"]).collect())
        .unwrap_or_default();
    assert_eq!(lags, [&Value::from(0), &Value::from(0)], "{stats}");

    let letters = json(&url, &["dlq", "list", "--json"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["id"], dead["id"], "{letters}");
    assert_eq!(letters[0]["kind"], "fail");
    let topic = letters[0]["original_topic"].as_str().unwrap_or_default();
    assert!(topic.ends_with("queue.default"), "{letters}");

    let id = dead["id"].as_str().unwrap_or_default();
    let (code, stdout, stderr) = conveyor(&url, &["dlq", "retry", id]);
    assert_eq!((code, stdout.trim()), (0, id), "{stderr}");
    let letters = json(&url, &["dlq", "list", "--json"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(0), "{letters}");
    let (code, _, stderr) = conveyor(&url, &["dlq", "retry", id]);
    assert_eq!(code, 1, "a job that is no longer dead: {stderr}");
    assert!(stderr.contains("dead letter not found"), "{stderr}");
    let purged = json(&url, &["dlq", "purge", "--json"]);
    assert_eq!(purged["purged"], 0, "{purged}");

    // The retried job's status, from the broker: waiting again, attempts numbered on.
    let job = json(&url, &["job", id, "--json"]);
    assert_eq!(
        (
            &job["state"],
            &job["attempt"],
            &job["max_attempts"],
            &job["kind"]
        ),
        (
            &Value::from("available"),
            &Value::from(1),
            &Value::from(2),
            &Value::from("fail")
        ),
        "{job}"
    );
    let cancelled = json(&url, &["cancel", id, "--json"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let job = json(&url, &["job", id, "--json"]);
    assert_eq!(
        job["state"], "cancelled",
        "another process sees the cancel: {job}"
    );
    let (code, _, stderr) = conveyor(&url, &["cancel", id]);
    assert_eq!(code, 1, "a finished job cannot be cancelled: {stderr}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, _, stderr) = conveyor(&url, &["job", &unknown]);
    assert_eq!(code, 1, "{stderr}");

    // A purge: the never-started jobs of the queue are gone; a second purge finds none.
    let bulk: Vec<Value> = (0..3)
        .map(|_| json(&url, &["enqueue", "noop", "--queue", "bulk", "--json"]))
        .collect();
    let purged = json(&url, &["purge", "bulk", "--json"]);
    assert_eq!(purged["purged"], 3, "{purged}");
    let again = json(&url, &["purge", "bulk", "--json"]);
    assert_eq!(again["purged"], 0, "{again}");
    let id = bulk[0]["id"].as_str().unwrap_or_default();
    let (code, _, stderr) = conveyor(&url, &["job", id]);
    assert_eq!(code, 1, "a purged job is gone: {stderr}");
}
