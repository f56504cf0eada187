//! One long-lived worker process of a pool. A thread of its own speaks the protocol with it
//! over blocking pipes: it takes the next job from the pool's queue as soon as the process
//! answered the last one, so no async task (and no wake-up of another CPU) sits between a
//! result and the next job. A task watches the process and cleans up when the thread ends.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::affinity::{self, CpuAffinity};
use super::dispatch::{Dispatch, Event, ProcRef};
use super::queue::Queue;
use super::Inner;
use crate::process::{self, rss_bytes, Tail};
use crate::protocol::{WorkerLine, PROTOCOL_VERSION};

/// Why a process can take no more jobs.
pub(super) enum Broken {
    /// It closed stdout: it exited or is exiting.
    Exited,
    /// It wrote something not in the protocol, or a pipe failed.
    Protocol(String),
    /// The job could not even be written to it (it died while idle): the job never ran.
    Undelivered(String),
}

/// How a process's thread ended.
enum End {
    /// The pool closed its queue: the process is retired.
    Closed,
    /// Over `max_memory_mb` after a job: retired and replaced.
    OverMemory(u64),
    /// Broken, with the job it held (if any): killed and replaced.
    Broken(Broken, Option<Dispatch>),
}

/// What the thread owns.
struct Pipes {
    /// The process (its `reaped` flag is set by the watching task once it exited).
    proc: ProcRef,
    stdin: File,
    stdout: BufReader<File>,
    /// The job it runs (or ran last), for its stderr lines in the log. Not cleared when the
    /// job ends: stderr is a pipe of its own, so a line written just before the result may be
    /// read just after it, and it belongs to that job.
    job: Arc<Mutex<Option<String>>>,
    /// True while it runs a job (the watching task reads it).
    busy: Arc<AtomicBool>,
    max_memory_mb: Option<u64>,
    cpu_affinity: CpuAffinity,
}

/// The process as the watching task holds it.
struct Watched {
    child: Child,
    pid: u32,
    /// Set once the process was reaped: its pid is then never signalled again.
    reaped: Arc<AtomicBool>,
    /// Its thread runs a job.
    busy: Arc<AtomicBool>,
    tail: Tail,
    stderr: JoinHandle<()>,
}

/// Spawns the pool's command, waits (within `allocate_timeout`) for its `ready` line and
/// starts serving the pool's queue. The error says what went wrong, with the process's last
/// stderr lines.
pub(super) async fn start(inner: &Arc<Inner>, queue: Queue) -> Result<JoinHandle<()>, String> {
    let config = &inner.config;
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
    let reaped = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicBool::new(false));
    let mut watched = Watched {
        child,
        pid,
        reaped: reaped.clone(),
        busy: busy.clone(),
        tail,
        stderr,
    };
    let pipes = match (stdin.into_owned_fd(), stdout.into_owned_fd()) {
        (Ok(stdin), Ok(stdout)) => Pipes {
            proc: ProcRef { pid, reaped },
            stdin: File::from(stdin),
            stdout: BufReader::new(File::from(stdout)),
            job,
            busy,
            max_memory_mb: config.max_memory_mb,
            cpu_affinity: config.cpu_affinity,
        },
        _ => {
            let broken = Broken::Protocol("pipes unusable".into());
            return Err(watched.explain("at start-up", broken).await);
        }
    };
    let (ready_tx, mut ready_rx) = oneshot::channel();
    let (end_tx, end_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("pool-{pid}"))
        .spawn(move || serve(pipes, queue, ready_tx, end_tx));
    if let Err(e) = spawned {
        let broken = Broken::Protocol(format!("no thread to serve it: {e}"));
        return Err(watched.explain("at start-up", broken).await);
    }
    let no_ready_line = || {
        Broken::Protocol(format!(
            "no ready line within allocate_timeout ({:?})",
            config.allocate_timeout
        ))
    };
    let ready = match tokio::time::timeout(config.allocate_timeout, &mut ready_rx).await {
        Ok(Ok(ready)) => ready,
        Ok(Err(_)) => Err(Broken::Protocol(
            "its thread ended before the ready line".into(),
        )),
        // A ready line read just as the wait ran out still counts: the thread serves jobs now.
        Err(_) => ready_rx.try_recv().unwrap_or_else(|_| Err(no_ready_line())),
    };
    let broken = match ready {
        Ok(()) => {
            inner.live.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pool = %config.name, pid, "worker process ready");
            return Ok(tokio::spawn(watch(inner.clone(), watched, end_rx)));
        }
        Err(broken) => broken,
    };
    // Killing it ends the thread's read, so the thread ends too.
    Err(watched.explain("at start-up", broken).await)
}

/// The thread: handshake, then one job at a time until the queue closes or the process breaks.
fn serve(
    mut pipes: Pipes,
    queue: Queue,
    ready: oneshot::Sender<Result<(), Broken>>,
    end: oneshot::Sender<End>,
) {
    // Held while this thread serves the process: its CPU's place is given back when it ends.
    let _pinned = match pipes.cpu_affinity {
        CpuAffinity::Paired => affinity::pair(pipes.proc.pid),
        CpuAffinity::None => None,
    };
    if let Err(broken) = pipes.handshake() {
        let _ = ready.send(Err(broken));
        return;
    }
    if ready.send(Ok(())).is_err() {
        return; // start-up timed out meanwhile: the process is being killed
    }
    let ended = pipes.jobs(&queue);
    // Closing stdin first lets a worker loop end on end of input before any signal.
    drop(pipes);
    let _ = end.send(ended);
}

impl Pipes {
    fn handshake(&mut self) -> Result<(), Broken> {
        match self.next_line()? {
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
    fn next_line(&mut self) -> Result<WorkerLine, Broken> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) => return Err(Broken::Exited),
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => {
                    return WorkerLine::parse(line.trim_end_matches(['\n', '\r']))
                        .map_err(|e| Broken::Protocol(format!("wrote {e}")))
                }
                Err(e) => return Err(Broken::Protocol(format!("stdout unreadable: {e}"))),
            }
        }
    }

    /// Takes jobs from the queue, one at a time, while the process is healthy.
    fn jobs(&mut self, queue: &Queue) -> End {
        loop {
            let Some(dispatch) = queue.take() else {
                return End::Closed;
            };
            if !dispatch.take(&self.proc) {
                continue; // its handler gave up on it while it waited
            }
            self.busy.store(true, Ordering::Release);
            let ran = self.run(&dispatch);
            self.busy.store(false, Ordering::Release);
            if let Err(broken) = ran {
                return End::Broken(broken, Some(dispatch));
            }
            if let Some(limit) = self.max_memory_mb {
                let rss_mb = rss_bytes(self.proc.pid).unwrap_or(0) / (1024 * 1024);
                if rss_mb > limit {
                    return End::OverMemory(rss_mb);
                }
            }
        }
    }

    /// Sends one job line and reads until its result, forwarding progress lines.
    fn run(&mut self, dispatch: &Dispatch) -> Result<(), Broken> {
        if self.proc.reaped.load(Ordering::Acquire) {
            return Err(Broken::Undelivered("it had exited while idle".into()));
        }
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(dispatch.id.clone());
        if let Err(e) = self.stdin.write_all(&dispatch.line) {
            return Err(Broken::Undelivered(format!(
                "cannot write the job to it: {e}"
            )));
        }
        loop {
            let line = self.next_line()?;
            if let WorkerLine::Progress { progress } = line {
                dispatch.progress(progress);
                continue;
            }
            match line.outcome() {
                Some(outcome) => {
                    dispatch.settle(Event::Done(outcome));
                    return Ok(());
                }
                None => return Err(Broken::Protocol(format!("sent {line:?} during a job"))),
            }
        }
    }
}

/// Waits for the process's thread to end (noting meanwhile when the process exits), then
/// retires or replaces the process and tells the job it held why it broke.
async fn watch(inner: Arc<Inner>, mut watched: Watched, mut end: oneshot::Receiver<End>) {
    let grace = inner.config.destroy_timeout;
    let end = tokio::select! {
        end = &mut end => end,
        _ = watched.child.wait() => {
            // Reaped: kill what is left of its group at once (a child of the worker holding
            // the pipes open), then never signal that pid again, it may be reused.
            process::kill_group(watched.pid);
            watched.reaped.store(true, Ordering::Release);
            // Its thread ends at end of output, or at its next job when it was idle. A pipe
            // held open by a process outside the group would keep a busy thread reading: then
            // it is left behind, and its job ends at its timeout.
            match tokio::time::timeout(grace + Duration::from_secs(5), &mut end).await {
                Ok(end) => end,
                Err(_) if !watched.busy.load(Ordering::Acquire) => end.await,
                Err(_) => Ok(End::Broken(
                    Broken::Protocol("left its output open after it exited".into()),
                    None,
                )),
            }
        }
    };
    inner.live.fetch_sub(1, Ordering::Relaxed);
    let name = &inner.config.name;
    match end {
        Ok(End::Closed) => watched.retire(grace).await,
        Ok(End::OverMemory(rss_mb)) => {
            tracing::info!(pool = %name, pid = watched.pid, rss_mb, max_memory_mb = ?inner.config.max_memory_mb, "worker process over its memory limit: retired after its job");
            inner.replace();
            watched.retire(grace).await;
        }
        Ok(End::Broken(broken, job)) => {
            inner.replace();
            let undelivered = matches!(broken, Broken::Undelivered(_));
            let when = if job.is_some() {
                "while running the job"
            } else {
                "while idle"
            };
            let message = format!("pool {name}: {}", watched.explain(when, broken).await);
            match job {
                Some(job) if undelivered => {
                    tracing::debug!("{message}: the job goes to another process");
                    job.settle(Event::Undelivered(message));
                }
                Some(job) => {
                    tracing::warn!("{message}");
                    job.settle(Event::Broken(message));
                }
                None => tracing::warn!("{message}; replacing it"),
            }
        }
        Err(_) => {
            inner.replace();
            let broken = Broken::Protocol("lost its thread".into());
            let message = watched.explain("while idle", broken).await;
            tracing::error!(pool = %name, "{message}; replacing it");
        }
    }
}

impl Watched {
    /// Kills the process (if still running) and says why it broke `when`, with its exit status
    /// and last stderr lines.
    async fn explain(&mut self, when: &str, broken: Broken) -> String {
        let what = match broken {
            Broken::Exited => "exited".to_string(),
            Broken::Protocol(message) => format!("was killed: it {message}"),
            Broken::Undelivered(message) => format!("was replaced: {message}"),
        };
        if !self.reaped.load(Ordering::Acquire) {
            process::kill_group(self.pid);
        }
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
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

    /// Stops a process whose stdin is closed (a worker loop ends on end of input): SIGTERM,
    /// then SIGKILL after `grace`.
    async fn retire(mut self, grace: Duration) {
        let status = process::terminate(&mut self.child, grace).await;
        tracing::debug!(pid = self.pid, status = %process::describe(status), "worker process stopped");
    }
}
