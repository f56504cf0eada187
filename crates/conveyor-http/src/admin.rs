//! Queues, dead letters and cron schedules.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use conveyor::{CronEntry, DeadLetter, JobInfo, Stats, WorkerInfo};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::jobs::job_id;
use crate::request::parse;
use crate::Shared;

/// Longest dead-letter page.
pub const MAX_PAGE: usize = 1_000;

/// `GET /v1/queues`: counts per queue and state (and, on Kafka, each partition's lag).
pub async fn queues(State(app): State<Shared>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(app.conveyor.stats().await?))
}

/// `POST /v1/queues/{queue}/purge`: removes the jobs waiting for their first attempt.
pub async fn purge(
    State(app): State<Shared>,
    Path(queue): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    conveyor::check_name("queue", &queue)?;
    let purged = app.conveyor.purge(&queue).await?;
    Ok(Json(json!({ "queue": queue, "purged": purged })))
}

/// `GET /v1/workers`: the connected workers and what each runs.
pub async fn workers(State(app): State<Shared>) -> Result<Json<Vec<WorkerInfo>>, ApiError> {
    Ok(Json(app.conveyor.workers().await?))
}

/// The query of the dead-letter list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Most letters to list (default 100, at most [`MAX_PAGE`]).
    limit: Option<usize>,
}

/// `GET /v1/dead-letter?limit=N`: most recent first.
pub async fn dead_letters(
    State(app): State<Shared>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::invalid("limit", e.body_text()))?;
    let limit = page.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    Ok(Json(app.conveyor.dead_letters(limit).await?))
}

/// `POST /v1/dead-letter/{id}/retry`: back to its queue with fresh attempts.
pub async fn retry_dead(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    let id = job_id(&id)?;
    Ok(Json(app.conveyor.retry_dead(id).await?))
}

/// `POST /v1/dead-letter/retry`: every dead job back.
pub async fn retry_all_dead(
    State(app): State<Shared>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retried = app.conveyor.retry_all_dead().await?;
    Ok(Json(json!({ "retried": retried })))
}

/// `POST /v1/dead-letter/purge`: empties the list.
pub async fn purge_dead(State(app): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let purged = app.conveyor.purge_dead().await?;
    Ok(Json(json!({ "purged": purged })))
}

/// `GET /v1/cron`: every entry with its next tick.
pub async fn cron_list(State(app): State<Shared>) -> Result<Json<Vec<CronEntry>>, ApiError> {
    Ok(Json(app.conveyor.schedules().await?))
}

/// A cron entry to add or replace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronRequest {
    name: String,
    expr: String,
    kind: String,
    queue: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

/// `POST /v1/cron`: adds or replaces an entry; answers it with its next tick.
pub async fn cron_add(
    State(app): State<Shared>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CronEntry>, ApiError> {
    let request = parse::<CronRequest>(&headers, body)?;
    let payload = request.payload.unwrap_or_else(|| json!({}));
    let mut entry = CronEntry::new(request.name, request.expr, request.kind, payload);
    if let Some(queue) = request.queue {
        entry.queue = queue;
    }
    Ok(Json(app.conveyor.schedule(entry).await?))
}

/// `DELETE /v1/cron/{name}`: `204`, or `404` when there was none.
pub async fn cron_remove(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match app.conveyor.unschedule(&name).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::status(
            StatusCode::NOT_FOUND,
            format!("cron entry not found: {name}"),
        )),
    }
}
