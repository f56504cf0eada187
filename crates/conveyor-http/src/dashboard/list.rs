//! The Jobs page (`/jobs`): the jobs in a state, a page at a time, filtered by queue; and the
//! search box's target (`/jobs?id=`), which goes to the job's page.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use conveyor::{JobId, JobInfo, JobQuery, JobState};

use super::pages::{failed, message, page, time, Frame};
use crate::listing::ListQuery;
use crate::Shared;

/// One job as a row.
struct Row {
    id: String,
    kind: String,
    queue: String,
    attempts: String,
    /// When it runs (waiting states) or finished (final states).
    when: String,
    error: String,
}

/// A state's tab.
struct Tab {
    name: &'static str,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    tabs: Vec<Tab>,
    state: &'static str,
    queue: String,
    when: &'static str,
    jobs: Vec<Row>,
    /// The next page's address, when there is one.
    next: Option<String>,
}

/// Percent-encodes a query-string value (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The address of a page of the list: the page size is carried when it is not the default.
fn href(state: JobState, queue: &str, limit: usize, after: Option<&str>) -> String {
    let mut href = format!("/jobs?state={}", state.as_str());
    if !queue.is_empty() {
        href.push_str(&format!("&queue={}", encode(queue)));
    }
    if limit != JobQuery::new(state).limit {
        href.push_str(&format!("&limit={limit}"));
    }
    if let Some(after) = after {
        href.push_str(&format!("&after={}", encode(after)));
    }
    href
}

fn row(job: JobInfo, state: JobState) -> Row {
    let when = match state {
        JobState::Completed | JobState::Dead | JobState::Cancelled => {
            time(job.finished_at.as_ref())
        }
        _ => time(Some(&job.run_at)),
    };
    Row {
        id: job.id.to_string(),
        attempts: format!("{}/{}", job.attempt, job.max_attempts),
        error: job.last_error.unwrap_or_default(),
        kind: job.kind,
        queue: job.queue,
        when,
    }
}

/// `GET /jobs`: with `id`, to that job's page; otherwise a page of the list.
pub async fn jobs(
    State(app): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return message(
            &app,
            StatusCode::BAD_REQUEST,
            "Bad address",
            "This page takes state, queue, after, limit and id.".into(),
        );
    };
    if let Some(text) = query.id.as_deref().map(str::trim) {
        return match text.parse::<JobId>() {
            Ok(id) => Redirect::to(&format!("/jobs/{id}")).into_response(),
            Err(_) => message(
                &app,
                StatusCode::BAD_REQUEST,
                "Not a job id",
                format!(
                    "{:?} is not a job id (a UUID).",
                    text.chars().take(64).collect::<String>()
                ),
            ),
        };
    }
    let wanted = match query.to_query(Some(JobState::Available)) {
        Ok(wanted) => wanted,
        Err(err) => return message(&app, err.status, "Bad address", err.message),
    };
    let found = match app.conveyor.list_jobs(&wanted).await {
        Ok(found) => found,
        Err(err) => return failed(&app, err),
    };
    let queue = wanted.queue.clone().unwrap_or_default();
    let state = wanted.state;
    let frame = Frame::new(&app, "Jobs");
    page(
        StatusCode::OK,
        &JobsPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            tabs: JobState::ALL
                .into_iter()
                .map(|s| Tab {
                    name: s.as_str(),
                    href: href(s, &queue, wanted.limit, None),
                    current: s == state,
                })
                .collect(),
            state: state.as_str(),
            when: if state.is_final() {
                "finished"
            } else {
                "runs at"
            },
            jobs: found.jobs.into_iter().map(|j| row(j, state)).collect(),
            next: found
                .next
                .as_deref()
                .map(|n| href(state, &queue, wanted.limit, Some(n))),
            queue,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_what_they_carry() {
        assert_eq!(
            href(JobState::Available, "mail", 50, Some("b:7:user 1&x=<y>")),
            "/jobs?state=available&queue=mail&after=b%3A7%3Auser%201%26x%3D%3Cy%3E"
        );
        assert_eq!(
            href(JobState::Dead, "", 2, None),
            "/jobs?state=dead&limit=2"
        );
    }
}
