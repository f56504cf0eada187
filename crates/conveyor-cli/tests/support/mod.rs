//! What the CLI's Kafka tests share: the project's test broker, `scripts/dev-broker`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The project's broker script.
#[allow(dead_code)] // each test file compiles this module; not every one calls this directly
pub fn dev_broker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev-broker")
}

/// Runs `scripts/dev-broker ARGS` (with its state in `state_dir`, else its default) and returns
/// the last line it printed: for `start` and `restart`, the broker's address. Panics with the
/// script's stderr if it fails.
pub fn dev_broker(args: &[&str], state_dir: Option<&Path>) -> String {
    let mut command = Command::new(dev_broker_script());
    command.args(args);
    if let Some(dir) = state_dir {
        command.env("CONVEYOR_BROKER_DIR", dir);
    }
    let out = command.output().expect("run scripts/dev-broker");
    assert!(
        out.status.success(),
        "dev-broker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The broker the Kafka tests share: `CONVEYOR_TEST_KAFKA` (set by scripts/test), else the
/// project's memory broker, started if needed.
#[allow(dead_code)]
pub fn shared_broker() -> String {
    if let Ok(address) = std::env::var("CONVEYOR_TEST_KAFKA") {
        return address;
    }
    dev_broker(&["start", "--memory"], None)
}

/// How many jobs each fleet worker runs at once.
#[allow(dead_code)]
pub const FLEET_CONCURRENCY: usize = 32;

/// A durable broker of this test's own, and its worker processes; all stopped on drop.
#[allow(dead_code)] // not every test file runs a fleet
pub struct Fleet {
    broker_dir: PathBuf,
    /// The worker processes, in start order; `None` once killed by the test.
    pub workers: Vec<Option<Child>>,
}

#[allow(dead_code)]
impl Fleet {
    /// A fleet whose broker keeps its state (and log) in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Fleet {
            broker_dir: dir.join("broker"),
            workers: Vec::new(),
        }
    }

    /// Runs `scripts/dev-broker ARGS` on this fleet's broker; returns its address.
    pub fn broker(&self, args: &[&str]) -> String {
        dev_broker(args, Some(&self.broker_dir))
    }

    /// A `conveyor worker` on `url` logging at `info` into `log`.
    pub fn spawn_worker(&mut self, url: &str, log: &Path) {
        self.spawn_worker_with(url, log, &[], "info");
    }

    /// A worker with extra arguments (`--queues`) and log filter (`info,conveyor=debug` logs
    /// every job's start and end).
    pub fn spawn_worker_with(&mut self, url: &str, log: &Path, args: &[&str], rust_log: &str) {
        self.spawn("worker", url, log, args, rust_log);
    }

    /// A `conveyor serve` (workers and the cron scheduler) on `url`, logging every job's start
    /// into `log`.
    pub fn spawn_serve(&mut self, url: &str, log: &Path) {
        self.spawn(
            "serve",
            url,
            log,
            &["--listen", "127.0.0.1:0"],
            "info,conveyor::commands=debug",
        );
    }

    fn spawn(&mut self, verb: &str, url: &str, log: &Path, args: &[&str], rust_log: &str) {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .args([
                verb,
                "--backend",
                url,
                "--concurrency",
                &FLEET_CONCURRENCY.to_string(),
            ])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn conveyor worker");
        self.workers.push(Some(child));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(dev_broker_script())
            .arg("stop")
            .env("CONVEYOR_BROKER_DIR", &self.broker_dir)
            .status();
    }
}
