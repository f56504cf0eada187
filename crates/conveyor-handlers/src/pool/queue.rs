//! The pool's queue: jobs waiting for an idle process. The processes' threads take from it
//! (blocking); a job's handler takes its job back when it gives up on it, so a job nobody
//! waits for any more never lingers, even while no process is alive to take it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::dispatch::Dispatch;

/// Jobs waiting for an idle process, oldest first.
#[derive(Default)]
pub(super) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Dispatch>,
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; gives it back when the pool is closed.
    pub(super) fn push(&self, job: Dispatch) -> Result<(), Dispatch> {
        let mut state = self.lock();
        if state.closed {
            return Err(job);
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the pool is closed.
    pub(super) fn take(&self) -> Option<Dispatch> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Removes the job `is_it` picks, if it still waits.
    pub(super) fn remove(&self, is_it: impl Fn(&Dispatch) -> bool) {
        self.lock().jobs.retain(|job| !is_it(job));
    }

    /// No more jobs: waiting threads wake and end, and jobs still queued are dropped (their
    /// handlers hear that the pool is shut down).
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.jobs.clear();
        drop(state);
        self.ready.notify_all();
    }
}

/// The queue as the pool, its handlers and its threads share it.
pub(super) type Queue = Arc<JobQueue>;
