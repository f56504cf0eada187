//! What the `[[handlers]]` end-to-end tests share: the binary, the examples, a worker that is
//! killed if a test fails, and the project's broker.

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a polling loop waits.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `examples/workers` of the repository.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workers")
}

/// Runs the binary on `url` with `args` (no configuration file from the environment).
pub fn conveyor(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--backend")
        .arg(url)
        .args(args)
        .env_remove("CONVEYOR_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run conveyor")
}

/// Runs the binary, asserts success and parses stdout as JSON.
pub fn json(url: &str, args: &[&str]) -> Value {
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
pub fn have_php() -> bool {
    let found = Command::new("php")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: php-cli is not installed (scripts/test installs it with apt-get)");
    }
    found
}

/// A Kafka URL with topics and a group of this test's own.
pub fn kafka_url(tag: &str) -> String {
    let broker = std::env::var("CONVEYOR_TEST_KAFKA")
        .unwrap_or_else(|_| crate::support::dev_broker(&["start", "--memory"], None));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let id = &id[20..];
    format!("kafka://{broker}?prefix={tag}{id}.&group={tag}{id}&partitions=2&session_timeout=6s")
}

/// A `conveyor worker` killed when dropped, so a failing test leaves no process behind.
pub struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `conveyor worker` on `url` with the configuration file `config`, logging to `log`.
pub fn spawn_worker(url: &str, config: impl AsRef<std::ffi::OsStr>, log: &Path) -> Worker {
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
pub fn stop(mut worker: Worker, log: &Path) -> String {
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
