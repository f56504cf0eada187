//! What the CLI's Kafka tests share: the project's test broker, `scripts/dev-broker`.

use std::path::{Path, PathBuf};
use std::process::Command;

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
