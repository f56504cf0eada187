//! Starts the pool's processes, one request at a time, and backs off when start-ups fail so
//! a command that dies at once is not restarted in a hot loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::process;
use super::{lock, Inner};

/// Delay after the first failed start-up; doubled per consecutive failure up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// The delay before the next start-up after `failures` consecutive failed ones.
pub(super) fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// Runs until the pool is shut down or dropped.
pub(super) async fn supervise(inner: Arc<Inner>, mut requests: mpsc::UnboundedReceiver<()>) {
    let mut closed = inner.closed.subscribe();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            request = requests.recv() => if request.is_none() { return },
            _ = closed.wait_for(|closed| *closed) => return,
        }
        loop {
            if *closed.borrow() {
                return;
            }
            match process::start(&inner, inner.queue.clone()).await {
                Ok(watcher) => {
                    failures = 0;
                    let mut watchers = lock(&inner.watchers);
                    watchers.retain(|w| !w.is_finished());
                    watchers.push(watcher);
                    break;
                }
                Err(error) => {
                    failures += 1;
                    inner.start_failures.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff(failures);
                    tracing::error!(pool = %inner.config.name, failures, retry_in = ?delay, "worker process failed at start-up: {error}");
                    *inner
                        .last_start_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(error);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = closed.wait_for(|closed| *closed) => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ups_back_off_exponentially_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
