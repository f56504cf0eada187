//! `GET /v1/jobs?state=S[&queue=Q][&after=CURSOR][&limit=N]`: the jobs in a state, a page at
//! a time; the dashboard's Jobs page reads the same query.

use axum::extract::{Query, State};
use axum::Json;
use conveyor::{JobPage, JobQuery, JobState, MAX_LIST_PAGE};
use serde::Deserialize;

use crate::error::ApiError;
use crate::Shared;

/// Longest cursor accepted (a cursor is an ordering key and a few numbers).
const MAX_CURSOR: usize = 600;

/// The query string of a job list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The state (required by the API; the dashboard defaults to `available`).
    pub state: Option<String>,
    /// Only this queue's jobs.
    pub queue: Option<String>,
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Jobs per page (default 50, at most [`MAX_LIST_PAGE`]).
    pub limit: Option<usize>,
    /// The dashboard's search box (a job id); not part of the API.
    #[serde(default)]
    pub id: Option<String>,
}

impl ListQuery {
    /// The engine query, or a `400` naming the bad field.
    pub fn to_query(&self, default_state: Option<JobState>) -> Result<JobQuery, ApiError> {
        let state = match (
            self.state.as_deref().filter(|s| !s.is_empty()),
            default_state,
        ) {
            (Some(text), _) => text.parse::<JobState>().map_err(ApiError::from)?,
            (None, Some(state)) => state,
            (None, None) => return Err(ApiError::invalid("state", "give the state to list")),
        };
        let queue = self.queue.clone().filter(|q| !q.is_empty());
        if let Some(queue) = &queue {
            conveyor::check_name("queue", queue)?;
        }
        let after = self.after.clone().filter(|a| !a.is_empty());
        if after.as_ref().is_some_and(|a| a.len() > MAX_CURSOR) {
            return Err(ApiError::invalid("after", "not a cursor of this list"));
        }
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_LIST_PAGE {
            return Err(ApiError::invalid(
                "limit",
                format!("must be 1 to {MAX_LIST_PAGE}"),
            ));
        }
        Ok(JobQuery {
            state,
            queue,
            after,
            limit,
        })
    }
}

/// `GET /v1/jobs`: `{"jobs":[...],"next":CURSOR|null}`.
pub async fn list(
    State(app): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if query.id.is_some() {
        return Err(ApiError::invalid(
            "id",
            "not a filter of this list: GET /v1/jobs/{id} reads one job",
        ));
    }
    let query = query.to_query(None)?;
    Ok(Json(app.conveyor.list_jobs(&query).await?))
}
