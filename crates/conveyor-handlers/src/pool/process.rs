//! One long-lived worker process of a pool: start-up handshake, one job at a time, and the
//! message that explains why it broke.

use std::sync::{Arc, Mutex};

use conveyor_core::{JobContext, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use super::PoolConfig;
use crate::process::{self, Tail};
use crate::protocol::{WorkerLine, PROTOCOL_VERSION};

/// A started worker process that announced itself ready.
pub(super) struct Proc {
    child: Child,
    pub(super) pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The job it runs (or ran last), for its stderr lines in the log. Not cleared when the
    /// job ends: stderr is a pipe of its own, so a line written just before the result may be
    /// read just after it, and it belongs to that job.
    job: Arc<Mutex<Option<String>>>,
    tail: Tail,
    stderr: JoinHandle<()>,
}

/// Why a process can take no more jobs; its job (if any) failed.
pub(super) enum Broken {
    /// It closed stdout: it exited or is exiting.
    Exited,
    /// It wrote something not in the protocol, or a pipe failed.
    Protocol(String),
    /// The job could not even be written to it (it died while idle): the job never ran.
    Undelivered(String),
}

impl Proc {
    /// Spawns the pool's command and waits (within `allocate_timeout`) for its `ready` line.
    /// The error says what went wrong, with the process's last stderr lines.
    pub(super) async fn start(config: &PoolConfig) -> Result<Proc, String> {
        let mut command = process::command(&config.command, &config.spawn);
        command.env("CONVEYOR_PROTOCOL", PROTOCOL_VERSION.to_string());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", config.command.display))?;
        let (Some(pid), Some(stdin), Some(stdout), Some(stderr)) = (
            child.id(),
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take(),
        ) else {
            return Err("the process has no pipes".into());
        };
        let job = Arc::new(Mutex::new(None));
        let tail = Tail::default();
        let label = format!("{}[{pid}]", config.name);
        let stderr = process::forward_stderr(stderr, label, job.clone(), tail.clone());
        let mut proc = Proc {
            child,
            pid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            job,
            tail,
            stderr,
        };
        match tokio::time::timeout(config.allocate_timeout, proc.handshake()).await {
            Ok(Ok(())) => Ok(proc),
            Ok(Err(broken)) => Err(proc.explain("at start-up", broken).await),
            Err(_) => {
                let broken = Broken::Protocol(format!(
                    "no ready line within allocate_timeout ({:?})",
                    config.allocate_timeout
                ));
                Err(proc.explain("at start-up", broken).await)
            }
        }
    }

    async fn handshake(&mut self) -> Result<(), Broken> {
        match self.next_line().await? {
            WorkerLine::Ready { protocol } if protocol == PROTOCOL_VERSION => Ok(()),
            WorkerLine::Ready { protocol } => Err(Broken::Protocol(format!(
                "speaks protocol version {protocol}; this Conveyor speaks {PROTOCOL_VERSION}"
            ))),
            other => Err(Broken::Protocol(format!(
                "sent {other:?} before its ready line"
            ))),
        }
    }

    /// The next non-blank line, parsed.
    async fn next_line(&mut self) -> Result<WorkerLine, Broken> {
        loop {
            match self.stdout.next_line().await {
                Ok(Some(line)) if line.trim().is_empty() => continue,
                Ok(Some(line)) => {
                    return WorkerLine::parse(&line)
                        .map_err(|e| Broken::Protocol(format!("wrote {e}")))
                }
                Ok(None) => return Err(Broken::Exited),
                Err(e) => return Err(Broken::Protocol(format!("stdout unreadable: {e}"))),
            }
        }
    }

    /// True when the process has already exited (checked before handing it a job).
    pub(super) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends one job line and reads until its result, storing progress lines on the job.
    pub(super) async fn run(&mut self, line: &[u8], ctx: &JobContext) -> Result<Outcome, Broken> {
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.id().to_string());
        let stdin = self.stdin.as_mut().ok_or(Broken::Exited)?;
        if let Err(e) = write(stdin, line).await {
            return Err(Broken::Undelivered(format!(
                "cannot write the job to it: {e}"
            )));
        }
        let outcome = loop {
            let line = self.next_line().await?;
            if let WorkerLine::Progress { progress } = &line {
                if let Err(e) = ctx.progress(progress.clone()).await {
                    tracing::warn!(job = %ctx.id(), error = %e, "progress not stored");
                }
                continue;
            }
            match line.outcome() {
                Some(outcome) => break outcome,
                None => return Err(Broken::Protocol(format!("sent {line:?} during a job"))),
            }
        };
        Ok(outcome)
    }

    /// Kills the process (if still running) and says why it broke `when`, with its exit status
    /// and last stderr lines.
    pub(super) async fn explain(mut self, when: &str, broken: Broken) -> String {
        let what = match broken {
            Broken::Exited => "exited".to_string(),
            Broken::Protocol(message) => format!("was killed: it {message}"),
            Broken::Undelivered(message) => format!("was replaced: {message}"),
        };
        process::kill_group(self.pid);
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        process::drain_stderr(&mut self.stderr).await;
        let message = format!(
            "worker process {} {what} {when} ({})",
            self.pid,
            process::describe(status)
        );
        process::with_tail(message, &self.tail)
    }

    /// Stops an idle process: closes its stdin (a worker loop ends on end of input), sends
    /// SIGTERM, and kills it after `grace`.
    pub(super) async fn retire(mut self, grace: std::time::Duration) {
        drop(self.stdin.take());
        let status = process::terminate(&mut self.child, grace).await;
        tracing::debug!(pid = self.pid, status = %process::describe(status), "worker process stopped");
    }
}

async fn write(stdin: &mut ChildStdin, line: &[u8]) -> std::io::Result<()> {
    stdin.write_all(line).await?;
    stdin.flush().await
}
