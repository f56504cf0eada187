//! The properties of DESIGN.md §4, written once and generic over the engine.
//!
//! An engine's test crate implements [`Harness`] (how to get fresh, isolated storage and how
//! to open another handle on it, as a second process would) and instantiates every test with
//! [`conformance_tests!`]. Adding an engine means implementing the traits and one macro call.

mod support;
pub mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use conveyor_core::Backend;

pub use support::*;

/// Isolated storage for one test: a temp file, a topic prefix, ...
#[async_trait]
pub trait Site: Send + Sync {
    /// Opens a new handle on this storage, as another process would.
    async fn open(&self) -> Arc<dyn Backend>;
}

/// Makes sites for an engine.
///
/// Engines under test must use a short lease (about one second) so that crash tests finish
/// quickly.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Fresh, empty storage that no other test shares.
    async fn site(&self) -> Box<dyn Site>;
}

/// Instantiates every conformance test as a `#[tokio::test]` for the harness `$harness`.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            completes_a_job,
            retries_with_backoff_then_completes,
            dead_letters_after_max_attempts_with_provenance,
            discard_goes_straight_to_dead,
            dead_letter_retry_all_and_purge,
            scheduled_jobs_never_fire_early,
            cancel_before_start,
            cancel_while_running,
            ordering_key_runs_one_at_a_time_in_order,
            different_ordering_keys_run_in_parallel,
            idempotency_key_holds_across_handles,
            same_job_id_is_stored_once,
            priorities_run_high_first,
            workers_take_only_their_queues,
            stats_are_true_and_purge_removes,
            handler_panic_is_an_error_not_a_crash,
            timeout_fails_the_attempt,
            unknown_kind_is_dead_lettered_naming_the_kind,
            malformed_payload_is_dead_lettered_with_the_decode_error,
            oversized_payload_is_refused_at_enqueue,
            graceful_shutdown_lets_running_jobs_finish,
            shutdown_releases_jobs_past_the_grace_period,
            crashed_worker_loses_its_lease_and_the_job_runs_again,
            progress_is_visible_in_status,
            cron_fires_each_tick_once_across_handles,
            cleanup_removes_old_finished_jobs,
            events_report_the_lifecycle,
            acknowledged_jobs_survive_reopening
        );
    };
    (@each $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::tests::$name(&$harness).await;
            }
        )*
    };
}
