//! A job on its way to a worker process, and the handshake between the job's handler (async)
//! and the process's thread (blocking) over who owns it: a job is taken by exactly one idle
//! process, or given up by its handler before any took it, never both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use conveyor_core::Outcome;
use tokio::sync::mpsc;

use super::queue::JobQueue;
use crate::process::kill_group;

/// A worker process as the jobs it runs see it: its pid, and whether it was reaped. Once
/// reaped its pid may belong to another program, so it is never signalled again.
#[derive(Debug, Clone)]
pub(super) struct ProcRef {
    pub(super) pid: u32,
    pub(super) reaped: Arc<AtomicBool>,
}

impl ProcRef {
    /// Kills the process's group, unless the process was reaped; true when signalled.
    pub(super) fn kill(&self) -> bool {
        if self.reaped.load(Ordering::Acquire) {
            return false;
        }
        kill_group(self.pid);
        true
    }
}

/// Where a dispatched job stands.
#[derive(Debug, Clone)]
enum Slot {
    /// In the pool's queue: no process has it yet.
    Waiting,
    /// A process took it and runs it.
    Taken(ProcRef),
    /// The process answered (or the job never reached it): nothing to kill any more.
    Settled,
    /// The handler gave up on it: a process must not start it, or was killed for it.
    Abandoned,
}

/// What a process's thread (or the task that watches it) tells the job's handler.
#[derive(Debug)]
pub(super) enum Event {
    /// The process with this pid took the job.
    Taken(u32),
    /// A progress line, to store on the job.
    Progress(serde_json::Value),
    /// The process answered.
    Done(Outcome),
    /// The process broke while running the job: the attempt failed, with this explanation.
    Broken(String),
    /// The job never reached the process (it had died while idle): send it to another one.
    Undelivered(String),
}

/// A job in the pool's queue.
pub(super) struct Dispatch {
    /// The job line, newline included.
    pub(super) line: Vec<u8>,
    /// The job id, for the process's stderr lines in the log.
    pub(super) id: String,
    slot: Arc<Mutex<Slot>>,
    events: mpsc::UnboundedSender<Event>,
}

/// The handler's side of a dispatch. Dropped before the job settled (the runtime abandoned the
/// attempt: cancellation, lost lease, shutdown), it gives the job up: a waiting job is never
/// started, a running one has its process group killed at once, so the job can never run
/// twice at the same time.
pub(super) struct Claim {
    slot: Arc<Mutex<Slot>>,
    pool: String,
    /// Where a job given up while waiting is taken back from.
    queue: Arc<JobQueue>,
}

/// A new dispatch of `line` for job `id`, its handler's claim and the handler's event stream.
pub(super) fn dispatch(
    line: Vec<u8>,
    id: String,
    pool: &str,
    queue: &Arc<JobQueue>,
) -> (Dispatch, Claim, mpsc::UnboundedReceiver<Event>) {
    let slot = Arc::new(Mutex::new(Slot::Waiting));
    let (events, received) = mpsc::unbounded_channel();
    let claim = Claim {
        slot: slot.clone(),
        pool: pool.to_string(),
        queue: queue.clone(),
    };
    (
        Dispatch {
            line,
            id,
            slot,
            events,
        },
        claim,
        received,
    )
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dispatch {
    /// Called by an idle process's thread: takes the job unless its handler gave up on it.
    pub(super) fn take(&self, process: &ProcRef) -> bool {
        let mut slot = lock(&self.slot);
        if !matches!(*slot, Slot::Waiting) {
            return false;
        }
        *slot = Slot::Taken(process.clone());
        let _ = self.events.send(Event::Taken(process.pid));
        true
    }

    /// Forwards a progress line to the handler.
    pub(super) fn progress(&self, value: serde_json::Value) {
        let _ = self.events.send(Event::Progress(value));
    }

    /// Ends the dispatch with `event`, unless the handler gave up on it first (then nobody
    /// waits for it).
    pub(super) fn settle(&self, event: Event) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Taken(_) | Slot::Waiting) {
            *slot = Slot::Settled;
            let _ = self.events.send(event);
        }
    }
}

impl Claim {
    /// Gives the job up if no process took it yet (and takes it out of the queue); false when
    /// one did (its events follow).
    pub(super) fn withdraw(&self) -> bool {
        let mut slot = lock(&self.slot);
        if !matches!(*slot, Slot::Waiting) {
            return false;
        }
        *slot = Slot::Abandoned;
        drop(slot);
        self.queue.remove(|job| Arc::ptr_eq(&job.slot, &self.slot));
        true
    }

    /// Gives the job up wherever it is, killing the process group running it. Returns the
    /// pid killed, if any.
    pub(super) fn abandon(&self) -> Option<u32> {
        if self.withdraw() {
            return None;
        }
        let mut slot = lock(&self.slot);
        let killed = match &*slot {
            Slot::Taken(process) if process.kill() => Some(process.pid),
            _ => None,
        };
        if !matches!(*slot, Slot::Settled) {
            *slot = Slot::Abandoned;
        }
        killed
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(pid) = self.abandon() {
            tracing::warn!(pool = %self.pool, pid, "job abandoned while its worker process ran it: process killed and replaced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, reaped: bool) -> ProcRef {
        ProcRef {
            pid,
            reaped: Arc::new(AtomicBool::new(reaped)),
        }
    }

    fn new(queue: &Arc<JobQueue>) -> (Dispatch, Claim, mpsc::UnboundedReceiver<Event>) {
        dispatch(b"{}\n".to_vec(), "id".into(), "p", queue)
    }

    #[test]
    fn a_withdrawn_job_is_never_taken_and_leaves_the_queue() {
        let queue = Arc::new(JobQueue::default());
        let (job, claim, mut events) = new(&queue);
        let (other, _other_claim, _) = new(&queue);
        assert!(queue.push(job).is_ok());
        assert!(queue.push(other).is_ok());
        assert!(claim.withdraw());
        // Only the other job is left: a job given up does not wait for a process.
        let left = queue.take().expect("the other job");
        assert!(left.take(&process(42, true)));
        queue.close();
        assert!(queue.take().is_none());
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn a_dropped_claim_takes_its_waiting_job_back() {
        let queue = Arc::new(JobQueue::default());
        let (job, claim, _) = new(&queue);
        assert!(queue.push(job).is_ok());
        drop(claim);
        queue.close();
        assert!(queue.take().is_none());
    }

    #[test]
    fn a_reaped_process_is_never_signalled() {
        let queue = Arc::new(JobQueue::default());
        let (job, claim, _) = new(&queue);
        // pid 1 would be init: a reaped process's pid may belong to anyone.
        assert!(job.take(&process(1, true)));
        assert_eq!(claim.abandon(), None);
    }

    #[test]
    fn a_taken_job_cannot_be_withdrawn_and_its_answer_arrives() {
        let queue = Arc::new(JobQueue::default());
        let (dispatch, claim, mut events) = new(&queue);
        assert!(dispatch.take(&process(42, true)));
        assert!(!claim.withdraw());
        dispatch.settle(Event::Done(Outcome::Complete));
        assert!(matches!(events.try_recv(), Ok(Event::Taken(42))));
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Done(Outcome::Complete))
        ));
        // Settled: dropping the claim kills nothing.
        assert_eq!(claim.abandon(), None);
    }

    #[test]
    fn an_answer_after_the_handler_gave_up_is_dropped() {
        let queue = Arc::new(JobQueue::default());
        let (dispatch, claim, mut events) = new(&queue);
        // pid 0 is never signalled (kill_group ignores it).
        assert!(dispatch.take(&process(0, false)));
        claim.abandon();
        dispatch.settle(Event::Done(Outcome::Complete));
        assert!(matches!(events.try_recv(), Ok(Event::Taken(0))));
        assert!(events.try_recv().is_err());
    }
}
