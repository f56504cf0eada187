//! `/v1/jobs`: enqueue (one or a batch), status by id, cancel.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conveyor::{Enqueued, JobId, JobInfo};
use serde_json::json;

use crate::error::ApiError;
use crate::request::{parse, BatchRequest, JobRequest, MAX_BATCH};
use crate::Shared;

fn enqueued(e: &Enqueued) -> serde_json::Value {
    json!({ "id": e.id, "state": e.state, "duplicate": e.duplicate })
}

/// `POST /v1/jobs`: `201` with the new job, `200` with the existing one for a duplicate
/// idempotency key.
pub async fn enqueue(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut job = parse::<JobRequest>(&headers, body)?.into_job()?;
    job.traceparent = traceparent(&headers)?;
    let (queue, kind) = (job.queue.clone(), job.kind.clone());
    let done = app.conveyor.dispatch(job).await?;
    if !done.duplicate {
        crate::metrics::enqueued(&queue, &kind, 1);
    }
    let status = match done.duplicate {
        true => StatusCode::OK,
        false => StatusCode::CREATED,
    };
    Ok((status, Json(enqueued(&done))).into_response())
}

/// `POST /v1/jobs/batch`: `{"jobs":[...]}`, every job checked before any is stored.
pub async fn enqueue_batch(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let trace = traceparent(&headers)?;
    let batch = parse::<BatchRequest>(&headers, body)?;
    if batch.jobs.is_empty() || batch.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "jobs",
            format!("give 1 to {MAX_BATCH} jobs (got {})", batch.jobs.len()),
        ));
    }
    let jobs = batch
        .jobs
        .into_iter()
        .enumerate()
        .map(|(n, j)| {
            let mut job = j.into_job().map_err(|e| ApiError {
                message: format!("jobs[{n}]: {}", e.message),
                ..e
            })?;
            job.traceparent = trace.clone();
            Ok::<_, ApiError>(job)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let labels: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.queue.clone(), j.kind.clone()))
        .collect();
    let done = app.conveyor.dispatch_batch(jobs).await?;
    for ((queue, kind), e) in labels.iter().zip(&done) {
        if !e.duplicate {
            crate::metrics::enqueued(queue, kind, 1);
        }
    }
    let jobs: Vec<_> = done.iter().map(enqueued).collect();
    Ok(Json(json!({ "jobs": jobs })))
}

/// The request's W3C `traceparent` header, carried with the job to its handler.
fn traceparent(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("traceparent") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("traceparent", "the header is not text"))?;
    conveyor::check_traceparent(text)?;
    Ok(Some(text.to_string()))
}

/// A job id from the path; a malformed one is a `400` naming `id`.
pub fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse::<JobId>()
        .map_err(|_| ApiError::invalid("id", format!("{text:?} is not a job id (a UUID)")))
}

/// `GET /v1/jobs/{id}`.
pub async fn job(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    let id = job_id(&id)?;
    match app.conveyor.status(id).await? {
        Some(info) => Ok(Json(info)),
        None => Err(ApiError::status(
            StatusCode::NOT_FOUND,
            format!("job not found: {id}"),
        )),
    }
}

/// `POST /v1/jobs/{id}/cancel`: the job as it is after the call.
pub async fn cancel(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    let id = job_id(&id)?;
    Ok(Json(app.conveyor.cancel(id).await?))
}
