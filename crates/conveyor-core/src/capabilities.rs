//! What an engine offers beyond the core [`Engine`] trait, as it declares it.

use std::sync::Arc;

use crate::{
    Backend, Control, DeadLetterList, DeadLetters, Engine, Export, Import, Inspect, ListJobs,
    Replay, Schedules, Statistics, Workers,
};

/// The capabilities an engine offers beyond the core trait; `None` where it has none. An
/// engine says what it offers (its `capabilities()`); a verb that needs a capability the
/// engine lacks fails with an error naming it, never at runtime inside the engine.
#[derive(Clone, Default)]
pub struct Capabilities {
    /// Job status by id.
    pub inspect: Option<Arc<dyn Inspect>>,
    /// Jobs listed by state.
    pub list_jobs: Option<Arc<dyn ListJobs>>,
    /// Counts per queue and state.
    pub statistics: Option<Arc<dyn Statistics>>,
    /// Cancel, purge, cleanup.
    pub control: Option<Arc<dyn Control>>,
    /// Reading the dead-letter list.
    pub dead_letter_list: Option<Arc<dyn DeadLetterList>>,
    /// Retrying and purging dead letters.
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// Recurring schedules (and the cron scheduler that fires them).
    pub schedules: Option<Arc<dyn Schedules>>,
    /// The connected workers and what they run.
    pub workers: Option<Arc<dyn Workers>>,
    /// Running a queue's jobs again.
    pub replay: Option<Arc<dyn Replay>>,
    /// Handing jobs over to another engine (the source of `conveyor migrate`).
    pub export: Option<Arc<dyn Export>>,
    /// Taking in jobs from another engine (the target of `conveyor migrate`).
    pub import: Option<Arc<dyn Import>>,
}

impl Capabilities {
    /// Every capability of a [`Backend`]; an engine adds [`ListJobs`], [`Export`] or
    /// [`Import`] when it has them.
    pub fn all(backend: &Arc<dyn Backend>) -> Self {
        Capabilities {
            inspect: Some(backend.clone()),
            list_jobs: None,
            statistics: Some(backend.clone()),
            control: Some(backend.clone()),
            dead_letter_list: Some(backend.clone()),
            dead_letters: Some(backend.clone()),
            schedules: Some(backend.clone().as_schedules()),
            workers: Some(backend.clone()),
            replay: Some(backend.clone().as_replay()),
            export: None,
            import: None,
        }
    }
}

/// An engine and the capabilities it declares: what opening a backend URL gives.
#[derive(Clone)]
pub struct Opened {
    /// The core engine.
    pub engine: Arc<dyn Engine>,
    /// What it offers beyond the core.
    pub capabilities: Capabilities,
}
