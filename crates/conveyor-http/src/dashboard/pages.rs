//! The dashboard's pages and actions. Values from job data reach the HTML only through the
//! templates, which escape them.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use conveyor::{JobId, JobState, PartitionLag, QueueStats};
use serde::Deserialize;

use super::session::{form_is_ours, Csrf};
use crate::Shared;

/// Most dead letters a page lists.
const DEAD_PAGE: usize = 100;

/// What every page shows around its content.
pub(super) struct Frame {
    pub(super) title: &'static str,
    pub(super) engine: &'static str,
    pub(super) searched: String,
    pub(super) notice: String,
}

impl Frame {
    pub(super) fn new(app: &Shared, title: &'static str) -> Self {
        Frame {
            title,
            engine: app.conveyor.engine().name(),
            searched: String::new(),
            notice: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    queues: Vec<QueueStats>,
    charts: Vec<Chart>,
    partitions: Vec<(String, PartitionLag)>,
}

/// Width and height of a chart's plot, in SVG units.
const CHART_W: f64 = 240.0;
const CHART_H: f64 = 40.0;

/// One queue's depth and throughput over the last minutes, as SVG polylines.
struct Chart {
    queue: String,
    depth: String,
    depth_max: String,
    rate: String,
    rate_max: String,
    /// Minutes the samples cover.
    minutes: String,
}

impl Chart {
    fn of(app: &Shared, queue: &str) -> Option<Chart> {
        let series = app.history.series(queue);
        if series.depth.len() < 2 {
            return None;
        }
        let (depth, depth_max) = crate::history::polyline(&series.depth, CHART_W, CHART_H);
        let (rate, rate_max) = crate::history::polyline(&series.per_second, CHART_W, CHART_H);
        let minutes = series.depth.len() as f64 * app.sample_every.as_secs_f64() / 60.0;
        Some(Chart {
            queue: queue.to_string(),
            depth,
            depth_max: format!("{depth_max:.0}"),
            rate,
            rate_max: format!("{rate_max:.1}"),
            minutes: format!("{minutes:.1}"),
        })
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    id: String,
    fields: Vec<(&'static str, String)>,
    payload: String,
    cancellable: bool,
    csrf: String,
}

/// One dead letter as a row.
struct Letter {
    id: String,
    kind: String,
    queue: String,
    attempts: String,
    died_at: String,
    origin: String,
    error: String,
}

#[derive(Template)]
#[template(path = "dead.html")]
struct DeadPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    letters: Vec<Letter>,
    /// The page holds [`DEAD_PAGE`] letters, and the engine lists jobs by state: a link to
    /// page through the rest.
    full: bool,
    csrf: String,
}

/// One cron entry as a row.
struct Entry {
    name: String,
    expr: String,
    kind: String,
    queue: String,
    next: String,
    last: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "cron.html")]
struct CronPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    entries: Vec<Entry>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
    heading: String,
    text: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: &'static str,
    engine: &'static str,
    searched: String,
    notice: String,
}

/// Renders a template into a page, with `status`.
pub(super) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "dashboard template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// A page saying what went wrong.
pub(super) fn message(app: &Shared, status: StatusCode, heading: &str, text: String) -> Response {
    let frame = Frame::new(app, "Conveyor");
    page(
        status,
        &MessagePage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            heading: heading.to_string(),
            text,
        },
    )
}

pub(super) fn failed(app: &Shared, err: conveyor::Error) -> Response {
    let status = crate::ApiError::from(err);
    message(app, status.status, "Something went wrong", status.message)
}

pub(super) fn time(t: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

/// The notice a redirect after an action asks for (a fixed text per action).
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

impl Notice {
    fn text(&self) -> String {
        match self.done.as_deref() {
            Some("retried") => "Put back in its queue with a fresh set of attempts.",
            Some("retried-all") => "Every dead letter was put back.",
            Some("purged") => "The dead-letter list was purged.",
            Some("cancelled") => "Cancel requested.",
            _ => "",
        }
        .to_string()
    }
}

/// `GET /`: counts per queue and, on Kafka, each partition's lag.
pub async fn queues(State(app): State<Shared>) -> Response {
    let stats = match app.conveyor.stats().await {
        Ok(stats) => stats,
        Err(err) => return failed(&app, err),
    };
    let partitions = stats
        .queues
        .iter()
        .flat_map(|q| q.partitions.iter().map(|p| (q.queue.clone(), p.clone())))
        .collect();
    app.history.viewed();
    let charts = stats
        .queues
        .iter()
        .filter_map(|q| Chart::of(&app, &q.queue))
        .collect();
    let frame = Frame::new(&app, "Queues");
    page(
        StatusCode::OK,
        &QueuesPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            queues: stats.queues,
            charts,
            partitions,
        },
    )
}

/// `GET /jobs/{id}`: one job.
pub async fn job(
    State(app): State<Shared>,
    Path(id): Path<String>,
    notice: Query<Notice>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return message(
            &app,
            StatusCode::BAD_REQUEST,
            "Not a job id",
            "That is not a UUID.".into(),
        );
    };
    let info = match app.conveyor.status(id).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            return message(
                &app,
                StatusCode::NOT_FOUND,
                "Job not found",
                format!("No job {id}."),
            )
        }
        Err(err) => return failed(&app, err),
    };
    let csrf = Csrf::of(&headers);
    let mut fields = vec![
        ("state", info.state.to_string()),
        ("kind", info.kind.clone()),
        ("queue", info.queue.clone()),
        (
            "attempt",
            format!("{} of {}", info.attempt, info.max_attempts),
        ),
        ("priority", info.priority.to_string()),
        ("run at", time(Some(&info.run_at))),
        ("created", time(Some(&info.created_at))),
        ("finished", time(info.finished_at.as_ref())),
        (
            "last error",
            info.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
        ("errored at", time(info.errored_at.as_ref())),
        (
            "progress",
            info.progress
                .as_ref()
                .map_or_else(|| "-".into(), |p| p.to_string()),
        ),
    ];
    for (name, value) in [
        ("idempotency key", info.idempotency_key.clone()),
        ("ordering key", info.ordering_key.clone()),
        ("replay of", info.replay_of.map(|id| id.to_string())),
    ] {
        if let Some(value) = value {
            fields.push((name, value));
        }
    }
    if info.cancel_requested {
        fields.push(("cancel", "requested".into()));
    }
    let mut frame = Frame::new(&app, "Job");
    frame.searched = id.to_string();
    frame.notice = notice.text();
    let rendered = page(
        StatusCode::OK,
        &JobPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            id: id.to_string(),
            fields,
            payload: serde_json::to_string_pretty(&info.payload).unwrap_or_default(),
            cancellable: !info.state.is_final() && info.state != JobState::Dead,
            csrf: csrf.token.clone(),
        },
    );
    csrf.attach(rendered)
}

/// `GET /dead-letter`: the newest letters with their retry buttons.
pub async fn dead_letters(
    State(app): State<Shared>,
    notice: Query<Notice>,
    headers: HeaderMap,
) -> Response {
    let dead = match app.conveyor.dead_letters(DEAD_PAGE).await {
        Ok(dead) => dead,
        Err(err) => return failed(&app, err),
    };
    let full = dead.len() >= DEAD_PAGE && app.conveyor.capabilities().list_jobs.is_some();
    let letters = dead
        .into_iter()
        .map(|d| Letter {
            id: d.job.id.to_string(),
            kind: d.job.kind,
            queue: d.original_queue,
            attempts: format!("{}/{}", d.job.attempt, d.job.max_attempts),
            died_at: time(d.job.finished_at.as_ref()),
            origin: match (d.original_topic, d.original_partition, d.original_offset) {
                (Some(t), Some(p), Some(o)) => format!("{t}/{p}@{o}"),
                (Some(t), _, _) => t,
                _ => "-".into(),
            },
            error: d.job.last_error.unwrap_or_else(|| "-".into()),
        })
        .collect();
    let csrf = Csrf::of(&headers);
    let mut frame = Frame::new(&app, "Dead letters");
    frame.notice = notice.text();
    let rendered = page(
        StatusCode::OK,
        &DeadPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            letters,
            full,
            csrf: csrf.token.clone(),
        },
    );
    csrf.attach(rendered)
}

/// `GET /cron`: every entry with its next tick.
pub async fn cron(State(app): State<Shared>) -> Response {
    let entries = match app.conveyor.schedules().await {
        Ok(entries) => entries,
        Err(err) => return failed(&app, err),
    };
    let entries = entries
        .into_iter()
        .map(|e| Entry {
            next: time(e.next_run_at.as_ref()),
            last: time(e.last_run_at.as_ref()),
            payload: e.payload.to_string(),
            name: e.name,
            expr: e.expr,
            kind: e.kind,
            queue: e.queue,
        })
        .collect();
    let frame = Frame::new(&app, "Cron");
    page(
        StatusCode::OK,
        &CronPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
            entries,
        },
    )
}

/// `GET /login`.
pub async fn login_form(State(app): State<Shared>) -> Response {
    let frame = Frame::new(&app, "Sign in");
    page(
        StatusCode::OK,
        &LoginPage {
            title: frame.title,
            engine: frame.engine,
            searched: frame.searched,
            notice: frame.notice,
        },
    )
}

/// The CSRF field every action's form carries.
#[derive(Debug, Deserialize)]
pub struct Action {
    csrf: String,
}

/// Runs an action when its form is ours, then goes to `to`.
async fn act<F>(app: &Shared, headers: &HeaderMap, form: &Action, to: String, run: F) -> Response
where
    F: std::future::Future<Output = Result<(), conveyor::Error>>,
{
    if !form_is_ours(headers, &form.csrf, app.public_origin.as_deref()) {
        return message(
            app,
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this dashboard (CSRF check failed); reload the page and try again.".into(),
        );
    }
    match run.await {
        Ok(()) => Redirect::to(&to).into_response(),
        Err(err) => failed(app, err),
    }
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Action>,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return message(
            &app,
            StatusCode::BAD_REQUEST,
            "Not a job id",
            "That is not a UUID.".into(),
        );
    };
    let to = format!("/jobs/{id}?done=cancelled");
    act(&app, &headers, &form, to, async {
        app.conveyor.cancel(id).await.map(|_| ())
    })
    .await
}

/// `POST /dead-letter/{id}/retry`.
pub async fn retry(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Action>,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return message(
            &app,
            StatusCode::BAD_REQUEST,
            "Not a job id",
            "That is not a UUID.".into(),
        );
    };
    let to = "/dead-letter?done=retried".to_string();
    act(&app, &headers, &form, to, async {
        app.conveyor.retry_dead(id).await.map(|_| ())
    })
    .await
}

/// `POST /dead-letter/retry`.
pub async fn retry_all(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Action>,
) -> Response {
    let to = "/dead-letter?done=retried-all".to_string();
    act(&app, &headers, &form, to, async {
        app.conveyor.retry_all_dead().await.map(|_| ())
    })
    .await
}

/// `POST /dead-letter/purge`.
pub async fn purge(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Action>,
) -> Response {
    let to = "/dead-letter?done=purged".to_string();
    act(&app, &headers, &form, to, async {
        app.conveyor.purge_dead().await.map(|_| ())
    })
    .await
}
