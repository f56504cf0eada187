//! `[[handlers]]` on Kafka through the real binary: 10k jobs through a Python pool with a
//! process killed and another retired for memory, and exec and http handler outcomes. Uses
//! `CONVEYOR_TEST_KAFKA` (set by scripts/test), else starts the project's broker.

mod handlers_support;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handlers_support::*;

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
/// 400 with a body for a job whose payload has `"bad"`; for `"busy"`, 429 with `Retry-After:
/// 1` the first time; for `"slow"`, no answer for 5 s the first time; 200 otherwise.
fn http_server() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
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
                    let body = String::from_utf8_lossy(&body).into_owned();
                    // Each attempt's body differs (it has the attempt): one job of each.
                    let first = |what: &str| {
                        body.contains(&format!("\"{what}\""))
                            && seen.lock().expect("seen").insert(what.to_string())
                    };
                    let (status, extra, text) = if body.contains("\"bad\"") {
                        ("400 Bad Request", "", "bad field: to")
                    } else if first("busy") {
                        ("429 Too Many Requests", "Retry-After: 1\r\n", "slow down")
                    } else if first("slow") {
                        std::thread::sleep(Duration::from_secs(5));
                        ("200 OK", "", "")
                    } else {
                        ("200 OK", "", "")
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{text}",
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
/// once with the response body; a 429 retries after its Retry-After and a request that times
/// out retries, both then complete. A pool whose command dies at start-up is backed off (a
/// handful of start-ups, not a hot loop) and its job fails with the start-up error.
#[test]
fn exec_http_and_a_crashing_pool_on_kafka() {
    let url = kafka_url("exec");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("conveyor.toml");
    std::fs::write(
        &config,
        format!(
            "[[handlers]]\nkinds = [\"thumbnail\"]\nexec = {{ command = [{:?}] }}\n[[handlers]]\nkinds = [\"notify\"]\nhttp = {{ url = \"http://{}/jobs\", timeout = \"1s\" }}\n[[handlers]]\nkinds = [\"broken\"]\npool = {{ command = \"sh -c 'echo cannot load extension >&2; exit 3'\", allocate_timeout = \"2s\" }}\n",
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
    let broken = enqueue("broken", r#"{}"#);
    let retried = |payload: &str| {
        json(
            &url,
            &[
                "enqueue",
                "notify",
                payload,
                "--max-attempts",
                "3",
                "--json",
            ],
        )["id"]
            .as_str()
            .map(str::to_string)
            .expect("id")
    };
    let busy = retried(r#"{"to":"busy"}"#);
    let slow = retried(r#"{"to":"slow"}"#);
    let deadline = Instant::now() + PATIENCE;
    let letters = loop {
        let stats = json(&url, &["stats", "--json"]);
        let letters = json(&url, &["dlq", "list", "--json"]);
        if stats["queues"][0]["completed"] == 4 && letters.as_array().is_some_and(|l| l.len() == 3)
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
    let stderr = stop(worker, &log);
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
    for (id, error) in [(&busy, "HTTP 429: slow down"), (&slow, "1s")] {
        let job = json(&url, &["job", id, "--json"]);
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["attempt"], 2, "{job}");
        let last = job["last_error"].as_str().unwrap_or_default();
        assert!(last.contains(error), "{error:?} not in {job}");
    }
    let error = error_of(&broken);
    for needle in [
        "no worker process of pool broken became free within allocate_timeout (2s)",
        "exited at start-up (exit status 3)",
        "cannot load extension",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {error:?}");
    }
    // Backed off (100 ms, 200 ms, 400 ms, ...): a hot loop would log hundreds.
    let start_ups = stderr.matches("failed at start-up").count();
    assert!(
        (1..=12).contains(&start_ups),
        "{start_ups} failed start-ups:\n{stderr}"
    );
}
