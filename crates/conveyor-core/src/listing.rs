//! Jobs listed by state, a page at a time, with keyset cursors (no offset: a page costs the
//! same however deep into the list it is).

use serde::{Deserialize, Serialize};

use crate::{JobInfo, JobState};

/// Most jobs one page may hold.
pub const MAX_LIST_PAGE: usize = 500;

/// Which jobs to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Their state.
    pub state: JobState,
    /// Only this queue's (`None`: every queue).
    pub queue: Option<String>,
    /// Where the page starts: the previous page's [`JobPage::next`] (`None`: the first page).
    pub after: Option<String>,
    /// Most jobs on the page (1 to [`MAX_LIST_PAGE`]).
    pub limit: usize,
}

impl JobQuery {
    /// The first page of `state`'s jobs in every queue, 50 at most.
    pub fn new(state: JobState) -> Self {
        JobQuery {
            state,
            queue: None,
            after: None,
            limit: 50,
        }
    }
}

/// One page of a job list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs, in the state's order (see the engine's docs).
    pub jobs: Vec<JobInfo>,
    /// The cursor of the next page; `None` when this page is the last.
    pub next: Option<String>,
}
