//! [`SentIds`]: the job ids a handle enqueued lately, so a producer that retries `enqueue`
//! with the same job (after a timeout, say) stores it once. Across processes the workers'
//! memory of ids they ran lately, and idempotency keys, do that job (docs/kafka-engine.md).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use conveyor_core::JobId;

/// How many ids a handle remembers (about 2 MB).
const REMEMBERED: usize = 100_000;

/// The newest [`REMEMBERED`] ids this handle enqueued.
#[derive(Default)]
pub(crate) struct SentIds {
    inner: Mutex<(HashSet<JobId>, VecDeque<JobId>)>,
}

impl SentIds {
    /// Remembers `id`; false when it was enqueued through this handle before.
    pub fn claim(&self, id: JobId) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        if !set.insert(id) {
            return false;
        }
        order.push_back(id);
        if order.len() > REMEMBERED {
            if let Some(oldest) = order.pop_front() {
                set.remove(&oldest);
            }
        }
        true
    }

    /// Forgets `id` (its produce failed: a retry must send it).
    pub fn release(&self, id: JobId) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_claimed_once_until_released() {
        let sent = SentIds::default();
        let id = JobId::new();
        assert!(sent.claim(id));
        assert!(!sent.claim(id));
        sent.release(id);
        assert!(sent.claim(id));
    }
}
