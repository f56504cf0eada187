//! One process per job: the payload on stdin, the job's fields in environment variables; exit
//! status 0 completes the job, any other fails the attempt with stderr's last lines as the
//! error; past the timeout (or when the runtime abandons the attempt) the process group is
//! killed.

use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{now_ms, JobContext, Outcome};
use tokio::io::AsyncWriteExt;

use crate::process::{self, Spawn, Tail};
use crate::{CommandLine, Runner};

/// How an exec handler runs.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Name in logs.
    pub name: String,
    /// The program run for each job.
    pub command: CommandLine,
    /// Environment and folder of the processes.
    pub spawn: Spawn,
    /// Longest attempt of a job that sets no timeout of its own.
    pub timeout: Duration,
}

/// Runs each job in a new process.
pub struct Exec {
    config: ExecConfig,
}

impl Exec {
    /// An exec handler.
    pub fn new(config: ExecConfig) -> Self {
        Exec { config }
    }
}

/// Kills a process group when dropped while armed: an attempt abandoned by the runtime
/// (timeout, cancellation, lost lease) must not leave its process running the job.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            process::kill_group(pid);
        }
    }
}

#[async_trait]
impl Runner for Exec {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let job = ctx.job();
        let timeout = job.timeout.unwrap_or(self.config.timeout);
        let mut command = process::command(&self.config.command, &self.config.spawn);
        command
            .env("CONVEYOR_JOB_ID", job.id.to_string())
            .env("CONVEYOR_JOB_KIND", &job.kind)
            .env("CONVEYOR_JOB_QUEUE", &job.queue)
            .env("CONVEYOR_JOB_ATTEMPT", job.attempt.to_string())
            .env("CONVEYOR_JOB_MAX_ATTEMPTS", job.max_attempts.to_string())
            .env(
                "CONVEYOR_JOB_DEADLINE_MS",
                now_ms()
                    .saturating_add(timeout.as_millis() as i64)
                    .to_string(),
            );
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::Retry(format!(
                    "cannot start {:?}: {e}",
                    self.config.command.display
                ))
            }
        };
        let mut guard = GroupGuard(child.id());
        let label = format!("{}[{}]", self.config.name, child.id().unwrap_or_default());
        let current = std::sync::Arc::new(std::sync::Mutex::new(Some(job.id.to_string())));
        let tail = Tail::default();
        let mut readers = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            readers.push(process::forward_stderr(
                stderr,
                label.clone(),
                current.clone(),
                tail.clone(),
            ));
        }
        if let Some(stdout) = child.stdout.take() {
            readers.push(process::forward_stderr(
                stdout,
                label,
                current,
                Tail::default(),
            ));
        }
        if let Some(mut stdin) = child.stdin.take() {
            // Written alongside the wait: a program that never reads a large payload must not
            // block us on a full pipe. One that exits without reading it is no error.
            let payload = job.payload.clone().into_bytes();
            tokio::spawn(async move {
                let _ = stdin.write_all(&payload).await;
            });
        }
        let result = tokio::time::timeout(timeout, child.wait()).await;
        let outcome = match result {
            Ok(Ok(status)) if status.success() => Outcome::Complete,
            Ok(Ok(status)) => {
                guard.0 = None;
                for reader in &mut readers {
                    process::drain_stderr(reader).await;
                }
                Outcome::Retry(error_text(&process::describe(Some(status)), &tail))
            }
            Ok(Err(e)) => Outcome::Retry(format!("waiting for the process failed: {e}")),
            Err(_) => {
                if let Some(pid) = guard.0.take() {
                    process::kill_group(pid);
                }
                let status = child.wait().await.ok();
                for reader in &mut readers {
                    process::drain_stderr(reader).await;
                }
                Outcome::Retry(process::with_tail(
                    format!(
                        "timed out after {timeout:?}: process group killed ({})",
                        process::describe(status)
                    ),
                    &tail,
                ))
            }
        };
        guard.0 = None;
        outcome
    }

    fn describe(&self) -> String {
        format!("exec {:?}", self.config.command.display)
    }
}

/// The error of a failed process: its last stderr lines, after the exit status.
fn error_text(status: &str, tail: &Tail) -> String {
    let text = tail.text();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}
