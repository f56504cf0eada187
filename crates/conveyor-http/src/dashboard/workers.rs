//! The Workers page: who is connected and what each runs.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::pages::{failed, page, time, Frame};
use crate::Shared;

/// One worker as a row.
struct Row {
    owner: String,
    started: String,
    seen: String,
    running: String,
    total: u64,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    workers: Vec<Row>,
    running: u64,
}

/// `GET /workers`.
pub async fn workers(State(app): State<Shared>) -> Response {
    let workers = match app.conveyor.workers().await {
        Ok(workers) => workers,
        Err(err) => return failed(&app, err),
    };
    let rows: Vec<Row> = workers
        .into_iter()
        .map(|w| Row {
            total: w.running_total(),
            started: time(w.started_at.as_ref()),
            seen: time(Some(&w.seen_at)),
            running: w
                .running
                .iter()
                .map(|(queue, n)| format!("{queue}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            owner: w.owner,
        })
        .collect();
    let frame = Frame::new(&app, "Workers");
    page(
        StatusCode::OK,
        &WorkersPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            running: rows.iter().map(|r| r.total).sum(),
            workers: rows,
        },
    )
}
