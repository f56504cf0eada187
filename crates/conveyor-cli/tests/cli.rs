//! The `conveyor` binary end to end: every test runs the real executable against its own
//! SQLite file in its own temporary folder (also its working directory), so tests run in
//! parallel without sharing anything.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Longest a polling loop waits.
const PATIENCE: Duration = Duration::from_secs(20);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(100);

/// What one run of the binary produced.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and returns stdout without its trailing newline.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self.stdout.trim_end()
    }

    /// Asserts success and parses stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts the exit code and that stderr mentions `needle`.
    fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "exit code: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:?}"
        );
    }
}

/// A temporary folder with a database in it.
struct Sandbox {
    dir: TempDir,
    url: String,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        Sandbox { dir, url }
    }

    /// The binary with a clean environment, running in the sandbox, on its database.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_conveyor"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("CONVEYOR_CONFIG")
            .env_remove("CONVEYOR_LISTEN")
            .env_remove("CONVEYOR_TOKEN")
            .env_remove("CONVEYOR_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .env("CONVEYOR_BACKEND", &self.url);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conveyor");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("run conveyor");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `conveyor ARGS` in the background, its log in the sandbox's file `log`.
    fn spawn(&self, args: &[&str], log: &str) -> Background {
        let log = std::fs::File::create(self.path(log)).expect("log file");
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn conveyor");
        Background(child)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn job(&self, id: &str) -> Value {
        self.run(&["job", id, "--json"]).json()
    }

    /// Polls `job ID --json` until the job reaches `state`.
    fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let job = self.job(id);
            if job["state"] == state {
                return job;
            }
            assert!(Instant::now() < deadline, "job never became {state}: {job}");
            std::thread::sleep(POLL);
        }
    }
}

/// A background process that is killed if the test ends early.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn uuid(text: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(text).unwrap_or_else(|e| panic!("{text:?} is not a uuid: {e}"))
}

#[test]
fn enqueue_prints_the_job_id() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&["enqueue", "noop"]);
    uuid(run.ok());
    assert!(
        run.stderr.is_empty(),
        "admin verbs keep stderr quiet: {run:?}"
    );
}

#[test]
fn job_json_has_the_contract_fields() {
    let sandbox = Sandbox::new();
    let id = sandbox.run(&[
        "enqueue",
        "sleep",
        r#"{"ms":5}"#,
        "--queue",
        "mail",
        "--max-attempts",
        "3",
    ]);
    let id = id.ok();
    let job = sandbox.job(id);
    for key in [
        "id",
        "kind",
        "queue",
        "state",
        "attempt",
        "max_attempts",
        "run_at",
        "last_error",
    ] {
        assert!(job.get(key).is_some(), "missing {key}: {job}");
    }
    assert_eq!(job["id"], id);
    assert_eq!(job["kind"], "sleep");
    assert_eq!(job["queue"], "mail");
    assert_eq!(job["state"], "available");
    assert_eq!(job["attempt"], 0);
    assert_eq!(job["max_attempts"], 3);
    assert_eq!(job["last_error"], Value::Null);
    assert_eq!(job["payload"], serde_json::json!({"ms": 5}));
    let human = sandbox.run(&["job", id]);
    for line in [
        "id:",
        "kind:",
        "queue:",
        "state:",
        "attempt:",
        "max_attempts:",
        "run_at:",
        "last_error:",
    ] {
        assert!(
            human.ok().lines().any(|l| l.starts_with(line)),
            "{line} missing: {human:?}"
        );
    }
}

#[test]
fn a_duplicate_key_returns_the_same_job() {
    let sandbox = Sandbox::new();
    let first = sandbox
        .run(&["enqueue", "noop", "--key", "order-7", "--json"])
        .json();
    let second = sandbox
        .run(&["enqueue", "noop", "{}", "--key", "order-7", "--json"])
        .json();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["state"], "available");
    let stats = sandbox.run(&["stats", "--json"]).json();
    assert_eq!(stats["queues"][0]["available"], 1);
}

#[test]
fn bad_input_exits_2_and_names_the_field() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["enqueue", "noop", "{not json"])
        .fails(2, "invalid payload");
    sandbox
        .run(&["enqueue", "noop", "@missing.json"])
        .fails(2, "invalid payload");
    sandbox
        .run(&["enqueue", "noop", "--in", "soon"])
        .fails(2, "invalid in");
    sandbox
        .run(&["enqueue", "noop", "--timeout", "forever"])
        .fails(2, "invalid timeout");
    sandbox
        .run(&["enqueue", "noop", "--at", "tomorrow"])
        .fails(2, "invalid at");
    sandbox
        .run(&["enqueue", "bad kind!"])
        .fails(2, "invalid kind");
    sandbox
        .run(&["enqueue", "noop", "--max-attempts", "0"])
        .fails(2, "max_attempts");
    sandbox
        .run(&[
            "enqueue",
            "noop",
            "--in",
            "1h",
            "--at",
            "2030-01-01T00:00:00Z",
        ])
        .fails(2, "cannot be used with");
    sandbox
        .run(&["stats", "--frobnicate"])
        .fails(2, "--frobnicate");
    sandbox
        .run(&["cleanup", "--older-than", "a while"])
        .fails(2, "invalid older-than");
    sandbox.run(&["job", "42"]).fails(2, "invalid id");
    sandbox
        .run(&["--backend", "nosuch://x", "stats"])
        .fails(2, "invalid backend");
    // Nothing of the above was stored.
    assert_eq!(
        sandbox.run(&["stats", "--json"]).json()["queues"],
        serde_json::json!([])
    );
}

#[test]
fn a_move_to_an_engine_that_cannot_take_jobs_is_refused_and_moves_nothing() {
    let sandbox = Sandbox::new();
    let id = sandbox.run(&["enqueue", "noop"]).ok().to_string();
    let other = format!("sqlite://{}", sandbox.dir.path().join("other.db").display());
    sandbox
        .run(&["migrate", "--to", &other])
        .fails(2, "jobs cannot be moved into the sqlite engine");
    sandbox
        .run(&["migrate", "--to", &sandbox.url])
        .fails(2, "the target is the source backend");
    sandbox
        .run(&["migrate", "--to", "nosuch://x"])
        .fails(2, "invalid backend");
    assert_eq!(
        sandbox.run(&["job", &id, "--json"]).json()["state"],
        "available"
    );
}

#[test]
fn replay_runs_a_queues_jobs_again_with_new_ids() {
    let sandbox = Sandbox::new();
    let old = sandbox
        .run(&["enqueue", "noop", "{\"n\":1}", "--queue", "q"])
        .ok()
        .to_string();
    sandbox
        .run(&["replay", "q", "--since", "yesterday"])
        .fails(2, "invalid since");
    sandbox
        .run(&["replay", "bad queue!", "--since", "1h"])
        .fails(2, "invalid queue");
    let out = sandbox
        .run(&["replay", "q", "--since", "1h", "--json"])
        .json();
    assert_eq!(out["replayed"], 1, "{out}");
    let new = out["ids"][0].as_str().expect("new id").to_string();
    assert_ne!(new, old);
    let job = sandbox.job(&new);
    assert_eq!(job["replay_of"], old.as_str());
    assert_eq!(job["payload"], serde_json::json!({"n": 1}));
    let human = sandbox.run(&["job", &new]);
    assert!(
        human.ok().contains(&format!("replay_of:    {old}")),
        "{human:?}"
    );
    // Nothing enqueued since a time in the future.
    assert_eq!(
        sandbox
            .run(&["replay", "q", "--since", "2999-01-01T00:00:00Z"])
            .ok(),
        "0"
    );
}

#[test]
fn an_unknown_job_exits_1() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["job", "01900000-0000-7000-8000-000000000000"])
        .fails(1, "not found");
}

#[test]
fn a_delayed_job_is_scheduled() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .run(&["enqueue", "noop", "--in", "1h", "--json"])
        .json();
    assert_eq!(out["state"], "scheduled");
    let id = out["id"].as_str().expect("id");
    let job = sandbox.job(id);
    assert_eq!(job["state"], "scheduled");
    let run_at = chrono::DateTime::parse_from_rfc3339(job["run_at"].as_str().expect("run_at"))
        .expect("RFC 3339 run_at");
    let ahead = run_at.timestamp() - chrono::Utc::now().timestamp();
    assert!(
        (3500..=3600).contains(&ahead),
        "run_at {run_at} is {ahead}s ahead"
    );
    let at = sandbox
        .run(&["enqueue", "noop", "--at", "2999-01-01T00:00:00Z", "--json"])
        .json();
    assert_eq!(at["state"], "scheduled");
}

#[test]
fn stats_json_has_exactly_the_contract_keys() {
    let sandbox = Sandbox::new();
    sandbox.run(&["enqueue", "noop"]).ok();
    sandbox
        .run(&["enqueue", "noop", "--queue", "later", "--in", "1h"])
        .ok();
    let stats = sandbox.run(&["stats", "--json"]).json();
    let top: Vec<&String> = stats.as_object().expect("object").keys().collect();
    assert_eq!(top, ["queues"]);
    let queues = stats["queues"].as_array().expect("array");
    assert_eq!(queues.len(), 2);
    for queue in queues {
        let mut keys: Vec<&str> = queue
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "available",
                "cancelled",
                "completed",
                "dead",
                "queue",
                "retryable",
                "running",
                "scheduled"
            ]
        );
    }
    assert_eq!(queues[0]["queue"], "default");
    assert_eq!(queues[0]["available"], 1);
    assert_eq!(queues[1]["queue"], "later");
    assert_eq!(queues[1]["scheduled"], 1);
    let table = sandbox.run(&["stats"]);
    let lines: Vec<&str> = table.ok().lines().collect();
    assert!(lines[0].starts_with("QUEUE"), "{table:?}");
    assert_eq!(lines.len(), 3, "{table:?}");
}

#[test]
fn cancelling_a_scheduled_job() {
    let sandbox = Sandbox::new();
    let id = sandbox.run(&["enqueue", "noop", "--in", "10m"]);
    let id = id.ok();
    assert_eq!(sandbox.run(&["cancel", id]).ok(), "cancelled");
    assert_eq!(sandbox.job(id)["state"], "cancelled");
    sandbox.run(&["cancel", id]).fails(1, "cancelled");
    let other = sandbox.run(&["enqueue", "noop", "--in", "10m"]);
    let json = sandbox.run(&["cancel", other.ok(), "--json"]).json();
    assert_eq!(json["state"], "cancelled");
    assert_eq!(json["id"], other.ok());
}

#[test]
fn the_dead_letter_list_starts_empty() {
    let sandbox = Sandbox::new();
    assert_eq!(
        sandbox.run(&["dlq", "list", "--json"]).json(),
        serde_json::json!([])
    );
    let human = sandbox.run(&["dlq", "list"]);
    assert_eq!(human.ok().lines().count(), 1, "only the header: {human:?}");
    assert_eq!(sandbox.run(&["dlq", "retry", "--all"]).ok(), "0");
    assert_eq!(
        sandbox.run(&["dlq", "purge", "--json"]).json(),
        serde_json::json!({"purged": 0})
    );
    sandbox.run(&["dlq", "retry"]).fails(2, "required");
    sandbox
        .run(&["dlq", "retry", "01900000-0000-7000-8000-000000000000"])
        .fails(1, "not found");
}

#[test]
fn cron_entries_round_trip() {
    let sandbox = Sandbox::new();
    let added = sandbox.run(&[
        "cron",
        "add",
        "nightly",
        "0 3 * * *",
        "noop",
        r#"{"r":1}"#,
        "--queue",
        "reports",
    ]);
    assert!(added.ok().starts_with("nightly"), "{added:?}");
    sandbox
        .run(&["cron", "add", "broken", "every minute", "noop"])
        .fails(2, "invalid cron");
    sandbox
        .run(&["cron", "add", "badjson", "* * * * *", "noop", "{"])
        .fails(2, "invalid payload");
    let list = sandbox.run(&["cron", "list", "--json"]).json();
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["name"], "nightly");
    assert_eq!(entries[0]["expr"], "0 3 * * *");
    assert_eq!(entries[0]["kind"], "noop");
    assert_eq!(entries[0]["queue"], "reports");
    assert_eq!(entries[0]["payload"], serde_json::json!({"r": 1}));
    assert!(entries[0]["next_run_at"].is_string(), "{list}");
    let table = sandbox.run(&["cron", "list"]);
    assert!(
        table
            .ok()
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("nightly")),
        "{table:?}"
    );
    assert_eq!(sandbox.run(&["cron", "remove", "nightly"]).ok(), "nightly");
    sandbox
        .run(&["cron", "remove", "nightly"])
        .fails(1, "not found");
    assert_eq!(
        sandbox.run(&["cron", "list", "--json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn purge_prints_how_many_jobs_it_removed() {
    let sandbox = Sandbox::new();
    for _ in 0..3 {
        sandbox.run(&["enqueue", "noop", "--queue", "bulk"]).ok();
    }
    sandbox.run(&["enqueue", "noop", "--queue", "keep"]).ok();
    assert_eq!(sandbox.run(&["purge", "bulk"]).ok(), "3");
    let again = sandbox.run(&["purge", "bulk", "--json"]).json();
    assert_eq!(again, serde_json::json!({"queue": "bulk", "purged": 0}));
    let stats = sandbox.run(&["stats", "--json"]).json();
    assert_eq!(stats["queues"].as_array().map(Vec::len), Some(1));
    assert_eq!(stats["queues"][0]["queue"], "keep");
    assert_eq!(sandbox.run(&["cleanup", "--older-than", "1d"]).ok(), "0");
}

#[test]
fn payloads_come_from_files_and_stdin() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("p.json"), r#"{"from":"file"}"#).expect("write payload");
    let id = sandbox.run(&["enqueue", "echo", "@p.json"]);
    assert_eq!(
        sandbox.job(id.ok())["payload"],
        serde_json::json!({"from": "file"})
    );
    let id = sandbox.run_with_stdin(&["enqueue", "echo", "-"], r#"{"from":"stdin"}"#);
    assert_eq!(
        sandbox.job(id.ok())["payload"],
        serde_json::json!({"from": "stdin"})
    );
}

#[test]
fn batches_store_every_line_or_nothing() {
    let sandbox = Sandbox::new();
    sandbox
        .run_with_stdin(
            &["enqueue", "noop", "--batch"],
            "{\"n\":1}\n{oops\n{\"n\":3}\n",
        )
        .fails(2, "line 2");
    assert_eq!(
        sandbox.run(&["stats", "--json"]).json()["queues"],
        serde_json::json!([])
    );

    let lines: String = (0..2500).map(|n| format!("{{\"n\":{n}}}\n\n")).collect();
    std::fs::write(sandbox.path("jobs.ndjson"), &lines).expect("write batch");
    let run = sandbox.run(&[
        "enqueue",
        "noop",
        "--batch",
        "jobs.ndjson",
        "--key",
        "import",
    ]);
    let ids: Vec<&str> = run.ok().lines().collect();
    assert_eq!(ids.len(), 2500);
    ids.iter().for_each(|id| {
        uuid(id);
    });
    let job = sandbox.job(ids[2499]);
    assert_eq!(job["payload"], serde_json::json!({"n": 2499}));
    // Line N of a keyed batch has the key K:N, so a re-run stores nothing new.
    let again = sandbox.run_with_stdin(
        &[
            "enqueue", "noop", "--batch", "-", "--key", "import", "--json",
        ],
        &lines,
    );
    let first: Value =
        serde_json::from_str(again.ok().lines().next().expect("a line")).expect("JSON line");
    assert_eq!(first["duplicate"], true);
    assert_eq!(first["id"], ids[0]);
    assert_eq!(
        sandbox.run(&["stats", "--json"]).json()["queues"][0]["available"],
        2500
    );
}

#[test]
fn the_configuration_file_names_the_backend() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("conveyor.toml"),
        "backend = \"sqlite://from-config.db\"\n",
    )
    .expect("write config");
    let run = sandbox
        .command(&["enqueue", "noop"])
        .env_remove("CONVEYOR_BACKEND")
        .output()
        .expect("run conveyor");
    assert!(run.status.success(), "{run:?}");
    assert!(sandbox.path("from-config.db").exists());

    std::fs::write(
        sandbox.path("bad.toml"),
        "[worker]\nconcurrency = \"many\"\n",
    )
    .expect("write config");
    sandbox
        .run(&["--config", "bad.toml", "stats"])
        .fails(2, "bad.toml");
    sandbox
        .run(&["stats", "--config", "nope.toml"])
        .fails(2, "nope.toml");
}

/// A plain HTTP/1.0 GET on `address`: the status line and the body.
fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["serve", "--listen", "0.0.0.0:0"])
        .fails(2, "without a token: set CONVEYOR_TOKEN");
}

#[test]
fn serve_runs_jobs_and_stops_cleanly_on_sigterm() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("conveyor.toml"),
        "[worker]\npoll_interval = \"50ms\"\n[retry]\nbase = \"100ms\"\nmax = \"200ms\"\n",
    )
    .expect("write config");
    let before = sandbox.run(&["enqueue", "noop"]);
    let before = before.ok().to_string();
    let mut serve = sandbox.spawn(
        &[
            "serve",
            "--concurrency",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        "serve.log",
    );

    let after = sandbox.run(&["enqueue", "noop", "--json"]).json();
    let doomed = sandbox.run(&["enqueue", "fail", "--max-attempts", "2"]);
    let doomed = doomed.ok().to_string();
    sandbox.wait_for_state(&before, "completed");
    sandbox.wait_for_state(after["id"].as_str().expect("id"), "completed");
    let dead = sandbox.wait_for_state(&doomed, "dead");
    assert_eq!(dead["attempt"], 2);
    // The HTTP API answers beside the workers, on the port the system chose.
    let log = std::fs::read_to_string(sandbox.path("serve.log")).unwrap_or_default();
    let address = log
        .split("HTTP API on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no HTTP address in the log:\n{log}"))
        .to_string();
    let (status, body) = http_get(&address, &format!("/v1/jobs/{before}"));
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(body.contains("\"completed\""), "{body}");
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("fail")),
        "{dead}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = serve.0.try_wait().expect("wait for serve") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(POLL);
    };
    let log = std::fs::read_to_string(sandbox.path("serve.log")).unwrap_or_default();
    assert_eq!(exit.code(), Some(0), "serve log:\n{log}");
    assert!(log.contains("starting"), "serve log:\n{log}");
    // `--log-format json`: every line is one JSON object with a level and a message.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"]["message"].is_string(),
            "{line}"
        );
    }

    // The failed job is in the dead-letter list; retrying it makes it available again.
    let dlq = sandbox.run(&["dlq", "list", "--json"]).json();
    assert_eq!(dlq[0]["id"], doomed.as_str(), "{dlq}");
    assert_eq!(dlq[0]["original_queue"], "default");
    assert_eq!(sandbox.run(&["dlq", "retry", &doomed]).ok(), doomed);
    let job = sandbox.job(&doomed);
    // A fresh set of attempts, numbered on from the last one.
    assert_eq!(
        (
            job["state"].as_str(),
            job["attempt"].as_u64(),
            job["max_attempts"].as_u64()
        ),
        (Some("available"), Some(2), Some(4))
    );
}

/// A row another producer wrote with an id that is not a job id does not wedge the worker:
/// the good jobs beside it run, the bad row is dead-lettered with the decode error, and
/// SIGTERM stops the worker within its grace period.
#[test]
fn a_bad_row_is_dead_lettered_and_sigterm_still_stops_the_worker() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("conveyor.toml"),
        "[worker]\npoll_interval = \"50ms\"\nshutdown_grace = \"5s\"\n",
    )
    .expect("write config");
    let good: Vec<String> = (0..2)
        .map(|_| sandbox.run(&["enqueue", "noop"]).ok().to_string())
        .collect();
    let db = rusqlite::Connection::open(sandbox.path("jobs.db")).expect("open the file");
    db.execute(
        "INSERT INTO jobs (id, kind, queue, payload, state, max_attempts, run_at, created_at) \
         VALUES ('job-42', 'noop', 'default', '{}', 'available', 3, 0, 0)",
        [],
    )
    .expect("insert a row as another producer would");
    drop(db);
    let mut worker = sandbox.spawn(&["worker", "--concurrency", "4"], "worker.log");
    for id in &good {
        sandbox.wait_for_state(id, "completed");
    }
    let dead = sandbox.run(&["dlq", "list", "--json"]).json();
    let error = dead[0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("column id") && error.contains("job-42"),
        "{dead}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    // The grace period is 5 s and nothing runs: the worker must be gone well within it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = worker.0.try_wait().expect("wait for worker") {
            break exit;
        }
        let log = std::fs::read_to_string(sandbox.path("worker.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "worker ignored SIGTERM:\n{log}");
        std::thread::sleep(POLL);
    };
    assert_eq!(exit.code(), Some(0));
}

/// `conveyor workers` lists a running worker with the job it runs, and nobody once it stopped.
#[test]
fn workers_lists_who_runs_what() {
    let sandbox = Sandbox::new();
    assert_eq!(sandbox.run(&["workers"]).ok(), "no worker is connected");
    let id = sandbox
        .run(&["enqueue", "sleep", r#"{"ms":60000}"#, "--queue", "video"])
        .ok()
        .to_string();
    let mut worker = sandbox.spawn(&["worker"], "worker.log");
    sandbox.wait_for_state(&id, "running");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let workers = sandbox.run(&["workers", "--json"]).json();
        if workers[0]["running"]["video"] == 1 {
            assert!(workers[0]["owner"].as_str().is_some(), "{workers}");
            break;
        }
        assert!(Instant::now() < deadline, "never listed running: {workers}");
        std::thread::sleep(POLL);
    }
    let table = sandbox.run(&["workers"]).ok().to_string();
    assert!(table.contains("video=1"), "{table}");
    sandbox.run(&["cancel", &id]).ok();
    sandbox.wait_for_state(&id, "cancelled");
    let status = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert!(worker.0.wait().expect("wait").success());
    assert_eq!(sandbox.run(&["workers"]).ok(), "no worker is connected");
}

/// A public origin means a proxy in front that may make every request look loopback: without a
/// token, `serve` refuses to start rather than serve anyone who reaches the proxy.
#[test]
fn a_public_origin_without_a_token_refuses_to_start() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-origin",
            "https://jobs.example.com",
        ])
        .fails(2, "CONVEYOR_TOKEN");
    sandbox
        .run(&["serve", "--public-origin", "https://jobs.example.com/app"])
        .fails(2, "invalid public-origin");
}
