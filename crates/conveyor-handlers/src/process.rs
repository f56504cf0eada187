//! What the pool and exec handlers share about child processes: spawning one in a process
//! group of its own, forwarding its stderr to the log, killing the group, reading its RSS.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::CommandLine;

/// How many of a process's last stderr lines are kept for error messages.
const TAIL_LINES: usize = 10;
/// Longest stderr line kept (longer ones are cut).
const TAIL_LINE_CHARS: usize = 500;

/// Environment and folder of spawned processes.
#[derive(Debug, Clone, Default)]
pub struct Spawn {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working folder (default: the current one).
    pub dir: Option<PathBuf>,
}

/// The last lines a process wrote on stderr, shared with the task that reads them.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line.chars().take(TAIL_LINE_CHARS).collect());
    }

    /// The kept lines joined by newlines (empty when there are none).
    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A command ready to spawn: stdin, stdout and stderr piped, in a process group of its own so
/// a terminal's Ctrl-C reaches Conveyor (which drains) and not the workers directly, and so a
/// kill reaches the worker's own children too.
pub fn command(line: &CommandLine, spawn: &Spawn) -> Command {
    let mut command = Command::new(&line.program);
    command
        .args(&line.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command.envs(spawn.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spawn.dir {
        command.current_dir(dir);
    }
    command
}

/// Forwards `stderr` line by line to the log (with `label` naming the process and `job`
/// naming what it runs), keeping the last lines in `tail`.
pub fn forward_stderr(
    stderr: impl AsyncRead + Unpin + Send + 'static,
    label: String,
    job: Arc<Mutex<Option<String>>>,
    tail: Tail,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let job = job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "-".into());
            tracing::info!(process = %label, job = %job, "{line}");
            tail.push(line);
        }
    })
}

/// Waits (briefly: a grandchild may hold the pipe open) until `reader` has read everything
/// the process wrote on stderr, so an error message built next has its last lines.
pub async fn drain_stderr(reader: &mut tokio::task::JoinHandle<()>) {
    let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
}

/// Sends SIGKILL to the process group led by `pid` (the group `command` made).
pub fn kill_group(pid: u32) {
    signal_group(pid, libc::SIGKILL);
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

/// Asks `child` to stop (SIGTERM to its group), then kills the group after `grace`.
pub async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id() {
        signal_group(pid, libc::SIGTERM);
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            kill_group(pid);
            return Some(status);
        }
        kill_group(pid);
    }
    child.wait().await.ok()
}

/// The resident set size of process `pid` in bytes, from `/proc` (None elsewhere or when gone).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// "exit status 3", "killed by signal 9".
pub fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.code().is_some() => format!("exit status {}", s.code().unwrap_or_default()),
        Some(s) => match s.signal() {
            Some(signal) => format!("killed by signal {signal}"),
            None => s.to_string(),
        },
        None => "exit status unknown".into(),
    }
}

/// `message`, followed by the process's last stderr lines when it wrote any.
pub fn with_tail(message: String, tail: &Tail) -> String {
    let text = tail.text();
    if text.is_empty() {
        message
    } else {
        format!("{message}; last stderr lines:\n{text}")
    }
}
