//! `[[handlers]]` end to end through the real binary, on both engines: seed 000's PHP worker
//! loop (`examples/workers/php`, its `conveyor.toml` unchanged) handles `face-comparison` jobs
//! enqueued with `--queue face-comparison`, completing and dead-lettering as its code says, and
//! SIGTERM drains the pool. Kafka runs use `CONVEYOR_TEST_KAFKA` (set by scripts/test), else
//! start the project's broker.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a polling loop waits.
const PATIENCE: Duration = Duration::from_secs(60);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workers")
}

fn conveyor(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--backend")
        .arg(url)
        .args(args)
        .env_remove("CONVEYOR_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run conveyor")
}

fn json(url: &str, args: &[&str]) -> Value {
    let out = conveyor(url, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} not JSON ({e}): {stdout}"))
}

/// True when `php` runs; scripts/test installs php-cli, so this only skips elsewhere.
fn have_php() -> bool {
    let found = Command::new("php")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: php-cli is not installed (scripts/test installs it with apt-get)");
    }
    found
}

fn kafka_url(tag: &str) -> String {
    let broker = std::env::var("CONVEYOR_TEST_KAFKA")
        .unwrap_or_else(|_| support::dev_broker(&["start", "--memory"], None));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let id = &id[20..];
    format!("kafka://{broker}?prefix={tag}{id}.&group={tag}{id}&partitions=2&session_timeout=6s")
}

/// A `conveyor worker` killed when dropped, so a failing test leaves no process behind.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `conveyor worker` on `url` with the configuration file `config`, logging to `log`.
fn spawn_worker(url: &str, config: impl AsRef<std::ffi::OsStr>, log: &Path) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["--backend", url, "--config"])
        .arg(config)
        .arg("worker")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn worker");
    Worker(child)
}

/// Sends SIGTERM and waits (bounded) for the process to exit; returns its stderr.
fn stop(mut worker: Worker, log: &Path) -> String {
    let worker = &mut worker.0;
    let pid = worker.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = worker.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!(
                "worker did not stop after SIGTERM: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "worker exit {status}: {stderr}");
    stderr
}

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
        if queue["completed"] == 1 && letters.as_array().is_some_and(|l| l.len() == 1) {
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

/// 10k jobs on Kafka through a pool of 2 Python processes (the pool tests' worker, on the
/// example library); one process is killed with SIGKILL mid-run and a job makes another go over
/// `max_memory_mb`. Every job completes, none is dead, and each ran once except at most the one
/// the killed process held (the processes log every job id they start).
#[test]
fn ten_thousand_jobs_through_a_python_pool_on_kafka_survive_a_kill() {
    const JOBS: usize = 10_000;
    let url = kafka_url("pool");
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("runs");
    std::fs::create_dir(&logs).expect("runs dir");
    let handlers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conveyor-handlers/tests/workers");
    let config = dir.path().join("conveyor.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nconcurrency = 8\n[[handlers]]\nkinds = [\"py\"]\npool = {{ command = [\"python3\", {:?}], workers = 2, max_memory_mb = 80, env = {{ CONVEYOR_PY_LIB = {:?}, WORKER_LOG_DIR = {:?} }} }}\n",
            handlers.join("pool_worker.py").display().to_string(),
            examples().join("python").display().to_string(),
            logs.display().to_string(),
        ),
    )
    .expect("config");
    let batch: String = (0..JOBS)
        .map(|n| {
            if n == JOBS / 3 {
                "{\"op\":\"grow\",\"mb\":120}\n".to_string()
            } else {
                format!("{{\"n\":{n}}}\n")
            }
        })
        .collect();
    let mut enqueue = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["--backend", &url, "enqueue", "py", "--batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("enqueue");
    std::io::Write::write_all(&mut enqueue.stdin.take().expect("stdin"), batch.as_bytes())
        .expect("write batch");
    assert!(enqueue.wait().expect("enqueue").success());
    let log = dir.path().join("worker.log");
    let worker = spawn_worker(&url, &config, &log);
    let deadline = Instant::now() + Duration::from_secs(300);
    let victim = loop {
        let runs = runs(&logs);
        let alive = live_pids(&logs);
        if runs.values().sum::<usize>() >= JOBS / 2 && !alive.is_empty() {
            break alive[0];
        }
        assert!(
            Instant::now() < deadline,
            "the pool never got half way: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {victim}");
    let stats = loop {
        let stats = json(&url, &["stats", "--json"]);
        let queue = stats["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["queue"] == "default").cloned())
            .unwrap_or_default();
        if queue["completed"] == JOBS {
            break queue;
        }
        assert!(
            Instant::now() < deadline,
            "not all completed: {stats}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let stderr = stop(worker, &log);
    assert_eq!(stats["dead"], 0, "{stats}");
    let runs = runs(&logs);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(runs.len(), JOBS, "every job ran");
    assert!(
        twice.len() <= 1,
        "only the killed process's job may run twice: {twice:?}"
    );
    assert!(
        stderr.contains("over its memory limit: retired"),
        "{stderr}"
    );
    // The kill and the retirement each replaced a process.
    let restarts: u64 = stderr
        .rsplit_once("restarts: ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pool stats at shutdown: {stderr}"));
    assert!(restarts >= 2, "{stderr}");
}

/// Job id → how many times a pool process started it.
fn runs(dir: &Path) -> std::collections::HashMap<String, usize> {
    let mut runs = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).expect("runs dir").flatten() {
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
        {
            *runs.entry(line.to_string()).or_default() += 1;
        }
    }
    runs
}

/// Pool processes that logged jobs and still run.
fn live_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .expect("runs dir")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".log")
                .parse()
                .ok()
        })
        .filter(|pid: &u32| Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

/// Answers HTTP/1.1 requests on 127.0.0.1 (a port chosen at run time) until the test ends:
/// 400 with a body for a job whose payload has `"bad"`, 200 otherwise.
fn http_server() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim().is_empty() {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let (status, text) = if String::from_utf8_lossy(&body).contains("\"bad\"") {
                        ("400 Bad Request", "bad field: to")
                    } else {
                        ("200 OK", "")
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// Exec (the shell example) and http handlers on Kafka through the binary: exit 0 and 2xx
/// complete; a non-zero exit dead-letters (last attempt) with stderr's last line, a 400 at
/// once with the response body.
#[test]
fn exec_and_http_handlers_on_kafka() {
    let url = kafka_url("exec");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("conveyor.toml");
    std::fs::write(
        &config,
        format!(
            "[[handlers]]\nkinds = [\"thumbnail\"]\nexec = {{ command = [{:?}] }}\n[[handlers]]\nkinds = [\"notify\"]\nhttp = {{ url = \"http://{}/jobs\" }}\n",
            examples().join("shell/thumbnail.sh").display().to_string(),
            http_server()
        ),
    )
    .expect("config");
    let log = dir.path().join("worker.log");
    let worker = spawn_worker(&url, &config, &log);
    let enqueue = |kind: &str, payload: &str| {
        json(
            &url,
            &["enqueue", kind, payload, "--max-attempts", "1", "--json"],
        )["id"]
            .as_str()
            .map(str::to_string)
            .expect("id")
    };
    enqueue("thumbnail", r#"{"file":"cat.png"}"#);
    let no_file = enqueue("thumbnail", r#"{}"#);
    enqueue("notify", r#"{"to":"ada"}"#);
    let bad = enqueue("notify", r#"{"to":"bad"}"#);
    let deadline = Instant::now() + PATIENCE;
    let letters = loop {
        let stats = json(&url, &["stats", "--json"]);
        let letters = json(&url, &["dlq", "list", "--json"]);
        if stats["queues"][0]["completed"] == 2 && letters.as_array().is_some_and(|l| l.len() == 2)
        {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "{stats} {letters}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop(worker, &log);
    let error_of = |id: &str| {
        letters
            .as_array()
            .and_then(|l| l.iter().find(|d| d["id"] == id))
            .map(|d| d["last_error"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(error_of(&no_file), "exit status 2: payload has no file");
    assert!(
        error_of(&bad).ends_with("/jobs: HTTP 400: bad field: to"),
        "{letters}"
    );
}
