//! The properties of DESIGN.md §4, written once and generic over the engine.
//!
//! Three groups: [`engine_conformance_tests!`] proves the core [`Engine`] (observed only through
//! worker events, so any engine can run it), [`observe_conformance_tests!`] statistics and the
//! dead-letter list, and [`backend_conformance_tests!`] the remaining capability traits (status,
//! cancel, dead-letter retry, cron). An engine's test crate implements [`EngineHarness`],
//! [`ObserveHarness`] and/or [`Harness`] (fresh isolated storage, and another handle on it as a
//! second process would open) and instantiates the groups it implements with one macro call;
//! a [`Harness`] is an [`ObserveHarness`] too.

mod support;
pub mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use conveyor_core::{Backend, DeadLetterList, DeadLetters, Engine, Schedules, Statistics};

pub use support::*;

/// Isolated storage for one test of the core engine: a temp file, a topic prefix, ...
#[async_trait]
pub trait EngineSite: Send + Sync {
    /// Opens a new handle on this storage, as another process would.
    async fn engine(&self) -> Arc<dyn Engine>;
}

/// Isolated storage for one test of an engine with every capability.
#[async_trait]
pub trait Site: EngineSite {
    /// Opens a new handle on this storage, as another process would.
    async fn open(&self) -> Arc<dyn Backend>;
}

/// Isolated storage for the observation and admin tests: statistics, the dead-letter list and
/// its retry and purge, cron entries.
#[async_trait]
pub trait ObserveSite: EngineSite {
    /// Counts of this storage, read as another process would.
    async fn statistics(&self) -> Arc<dyn Statistics>;
    /// The dead-letter list of this storage, read as another process would.
    async fn dead_letter_list(&self) -> Arc<dyn DeadLetterList>;
    /// Dead-letter retry and purge on this storage, as another process would.
    async fn dead_letters(&self) -> Arc<dyn DeadLetters>;
    /// Cron entries of this storage, as another process would.
    async fn schedules(&self) -> Arc<dyn Schedules>;
}

#[async_trait]
impl<S: Site + ?Sized> ObserveSite for S {
    async fn statistics(&self) -> Arc<dyn Statistics> {
        self.open().await
    }
    async fn dead_letter_list(&self) -> Arc<dyn DeadLetterList> {
        self.open().await
    }
    async fn dead_letters(&self) -> Arc<dyn DeadLetters> {
        self.open().await
    }
    async fn schedules(&self) -> Arc<dyn Schedules> {
        self.open().await.as_schedules()
    }
}

/// Makes sites for an engine's core tests ([`engine_conformance_tests!`]).
///
/// Engines under test must use a short lease (about one second) so that crash tests finish
/// quickly.
#[async_trait]
pub trait EngineHarness: Send + Sync {
    /// Fresh, empty storage that no other test shares.
    async fn engine_site(&self) -> Box<dyn EngineSite>;
}

/// Makes sites for the capability tests ([`backend_conformance_tests!`]).
#[async_trait]
pub trait Harness: Send + Sync {
    /// Fresh, empty storage that no other test shares.
    async fn site(&self) -> Box<dyn Site>;
}

/// Makes sites for the observation tests ([`observe_conformance_tests!`]).
#[async_trait]
pub trait ObserveHarness: Send + Sync {
    /// Fresh, empty storage that no other test shares.
    async fn observe_site(&self) -> Box<dyn ObserveSite>;
}

#[async_trait]
impl<H: Harness + ?Sized> ObserveHarness for H {
    async fn observe_site(&self) -> Box<dyn ObserveSite> {
        Box::new(BoxedSite(self.site().await))
    }
}

/// A boxed [`Site`] as an [`ObserveSite`].
struct BoxedSite(Box<dyn Site>);

#[async_trait]
impl EngineSite for BoxedSite {
    async fn engine(&self) -> Arc<dyn Engine> {
        self.0.engine().await
    }
}

#[async_trait]
impl Site for BoxedSite {
    async fn open(&self) -> Arc<dyn Backend> {
        self.0.open().await
    }
}

/// The properties of the core [`Engine`] trait: every engine runs these.
#[macro_export]
macro_rules! engine_conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            completes_a_job,
            trace_context_reaches_the_handler,
            retries_with_backoff_then_completes,
            discard_goes_straight_to_dead,
            events_report_the_lifecycle,
            acknowledged_jobs_survive_reopening,
            handler_panic_is_an_error_not_a_crash,
            timeout_fails_the_attempt,
            unknown_kind_is_dead_lettered_naming_the_kind,
            malformed_payload_is_dead_lettered_with_the_decode_error,
            oversized_payload_is_refused_at_enqueue,
            graceful_shutdown_lets_running_jobs_finish,
            shutdown_releases_jobs_past_the_grace_period,
            a_crashed_worker_handle_loses_its_jobs_and_they_run_again,
            ordering_key_runs_one_at_a_time_in_order,
            different_ordering_keys_run_in_parallel,
            workers_take_only_their_queues,
            delayed_jobs_never_start_early_in_any_order,
            delayed_jobs_survive_a_worker_restart,
            idempotency_keys_hold_across_racing_handles,
            a_keyed_retry_keeps_its_attempts_across_crashed_workers
        );
    };
}

/// Statistics and the dead-letter list, observed from outside the worker.
#[macro_export]
macro_rules! observe_conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            stats_count_each_state_per_queue,
            stats_count_running_jobs,
            dead_letter_list_shows_jobs_newest_first,
            a_dead_letter_retried_runs_again_with_fresh_attempts,
            dead_letters_retried_all_then_purged,
            cron_fires_each_tick_once_across_handles
        );
    };
}

/// The properties of the capability traits (inspect, control, dead letters, schedules).
#[macro_export]
macro_rules! backend_conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            dead_letters_after_max_attempts_with_provenance,
            dead_letter_retry_all_and_purge,
            scheduled_jobs_never_fire_early,
            cancel_before_start,
            cancel_while_running,
            idempotency_key_holds_across_handles,
            idempotency_key_outlives_the_deleted_job,
            same_job_id_is_stored_once,
            priorities_run_high_first,
            stats_are_true_and_purge_removes,
            graceful_shutdown_fetches_nothing_new,
            progress_is_visible_in_status,
            cleanup_removes_old_finished_jobs,
            purge_keeps_jobs_waiting_for_a_retry,
            replay_reruns_a_queues_jobs_since_a_time,
            connected_workers_are_listed_with_what_they_run
        );
    };
}

/// Per-job leases meeting user actions, for engines whose [`conveyor_core::Engine::lease`] is
/// `Some` (a lease that expires and is rescued). Engines whose lease is group membership (Kafka)
/// prove the same outcomes through crashed handles instead: the engine group's
/// `a_crashed_worker_handle_loses_its_jobs_and_they_run_again` and the cancel-before-handover
/// test of the Kafka CLI.
#[macro_export]
macro_rules! lease_conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            cancel_survives_a_released_lease,
            cancel_survives_a_rescued_lease,
            a_late_report_never_matches_a_retried_job
        );
    };
}

/// Instantiates every group, for an engine with every capability.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::engine_conformance_tests!($harness);
        $crate::observe_conformance_tests!($harness);
        $crate::backend_conformance_tests!($harness);
        $crate::lease_conformance_tests!($harness);
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
