//! A job on its way to a worker process, and the handshake between the job's handler (async)
//! and the process's thread (blocking) over who owns it: a job is taken by exactly one idle
//! process, or given up by its handler before any took it, never both.

use std::sync::{Arc, Mutex};

use conveyor_core::Outcome;
use tokio::sync::mpsc;

use crate::process::kill_group;

/// Where a dispatched job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// In the pool's queue: no process has it yet.
    Waiting,
    /// A process took it; it runs in the process with this pid.
    Taken(u32),
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
}

/// A new dispatch of `line` for job `id`, its handler's claim and the handler's event stream.
pub(super) fn dispatch(
    line: Vec<u8>,
    id: String,
    pool: &str,
) -> (Dispatch, Claim, mpsc::UnboundedReceiver<Event>) {
    let slot = Arc::new(Mutex::new(Slot::Waiting));
    let (events, received) = mpsc::unbounded_channel();
    let claim = Claim {
        slot: slot.clone(),
        pool: pool.to_string(),
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
    pub(super) fn take(&self, pid: u32) -> bool {
        let mut slot = lock(&self.slot);
        if *slot != Slot::Waiting {
            return false;
        }
        *slot = Slot::Taken(pid);
        let _ = self.events.send(Event::Taken(pid));
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
    /// Gives the job up if no process took it yet; false when one did (its events follow).
    pub(super) fn withdraw(&self) -> bool {
        let mut slot = lock(&self.slot);
        if *slot == Slot::Waiting {
            *slot = Slot::Abandoned;
            return true;
        }
        false
    }

    /// Gives the job up wherever it is, killing the process group running it. Returns the
    /// pid killed, if any.
    pub(super) fn abandon(&self) -> Option<u32> {
        let mut slot = lock(&self.slot);
        let killed = match *slot {
            Slot::Taken(pid) => {
                kill_group(pid);
                Some(pid)
            }
            _ => None,
        };
        if *slot != Slot::Settled {
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

    #[test]
    fn a_withdrawn_job_is_never_taken() {
        let (dispatch, claim, mut events) = dispatch(b"{}\n".to_vec(), "id".into(), "p");
        assert!(claim.withdraw());
        assert!(!dispatch.take(42));
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn a_taken_job_cannot_be_withdrawn_and_its_answer_arrives() {
        let (dispatch, claim, mut events) = dispatch(b"{}\n".to_vec(), "id".into(), "p");
        assert!(dispatch.take(42));
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
        let (dispatch, claim, mut events) = dispatch(b"{}\n".to_vec(), "id".into(), "p");
        // pid 0 is never signalled (kill_group ignores it).
        assert!(dispatch.take(0));
        claim.abandon();
        dispatch.settle(Event::Done(Outcome::Complete));
        assert!(matches!(events.try_recv(), Ok(Event::Taken(0))));
        assert!(events.try_recv().is_err());
    }
}
