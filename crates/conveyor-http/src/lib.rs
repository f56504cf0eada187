//! Conveyor as a service: the JSON API (`/v1`) over the [`Conveyor`] facade, the same on every
//! engine. Documented in `docs/http-api.md`.
//!
//! Safe by default: [`check_exposure`] refuses a listen address other than loopback unless a
//! token is set; with a token every `/v1` route wants `Authorization: Bearer TOKEN`;
//! `/healthz` stays open for load balancers. Without a token only a loopback `Host` is served,
//! and no request a browser sends from another site changes anything (see `guard.rs`). Bodies
//! are JSON only, size-limited, and pages bounded.

mod admin;
mod auth;
mod dashboard;
mod error;
mod guard;
mod history;
mod jobs;
mod listing;
pub mod metrics;
mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::routing::{get, on, MethodFilter};
use axum::{Json, Router};
use conveyor::Conveyor;
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

pub use error::ApiError;
pub use request::MAX_BATCH;

/// Largest request body by default (a batch of jobs included).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// How the API is served.
#[derive(Clone)]
pub struct HttpConfig {
    /// Bearer token every `/v1` route wants (`CONVEYOR_TOKEN`); `None`: no auth (loopback
    /// only, see [`check_exposure`]).
    pub token: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Set once the process stops taking jobs: `/healthz` then answers `503` so a load
    /// balancer sends no more traffic while the workers drain.
    pub draining: Arc<AtomicBool>,
    /// Called at each scrape of `/metrics`, before rendering: sets gauges of things this crate
    /// does not know (the worker-process pools of `conveyor serve`).
    pub on_scrape: Option<Arc<dyn Fn() + Send + Sync>>,
    /// How often the dashboard's charts sample the engine's counts (15 minutes are kept at
    /// the default of 5 s; see `history.rs`).
    pub sample_every: std::time::Duration,
    /// The address users reach the server at (`scheme://host[:port]`), when a reverse proxy
    /// in front rewrites `Host`: browsers' requests from it pass the same-origin check.
    pub public_origin: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body_limit", &self.body_limit)
            .field("draining", &self.draining)
            .field("on_scrape", &self.on_scrape.is_some())
            .field("sample_every", &self.sample_every)
            .field("public_origin", &self.public_origin)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            draining: Arc::new(AtomicBool::new(false)),
            on_scrape: None,
            sample_every: std::time::Duration::from_secs(5),
            public_origin: None,
        }
    }
}

/// What every handler gets.
pub(crate) struct App {
    pub conveyor: Conveyor,
    pub token: Option<String>,
    /// Dashboard sessions signed in with the token (random ids; gone when the server stops).
    pub sessions: std::sync::Mutex<std::collections::HashSet<String>>,
    /// See [`HttpConfig::draining`].
    pub draining: Arc<AtomicBool>,
    /// See [`HttpConfig::on_scrape`].
    pub on_scrape: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Samples for the dashboard's charts.
    pub history: history::History,
    /// See [`HttpConfig::sample_every`].
    pub sample_every: std::time::Duration,
    pub public_origin: Option<String>,
}

pub(crate) type Shared = Arc<App>;

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Listening beyond this machine without a token.
    #[error(
        "refusing to listen on {0} without a token: set CONVEYOR_TOKEN, or listen on 127.0.0.1"
    )]
    Exposed(SocketAddr),
    /// The address could not be bound or served.
    #[error("cannot serve HTTP on {address}: {source}")]
    Io {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Refuses an address other than loopback when no token is set.
pub fn check_exposure(address: SocketAddr, token: Option<&str>) -> Result<(), HttpError> {
    match (address.ip().is_loopback(), token) {
        (false, None) => Err(HttpError::Exposed(address)),
        _ => Ok(()),
    }
}

/// The API's routes over `conveyor`.
pub fn router(conveyor: Conveyor, config: HttpConfig) -> Router {
    let app: Shared = Arc::new(App {
        conveyor,
        token: config.token.filter(|t| !t.is_empty()),
        sessions: Default::default(),
        draining: config.draining,
        on_scrape: config.on_scrape,
        history: Default::default(),
        sample_every: config.sample_every,
        public_origin: config.public_origin,
    });
    history::start(Arc::downgrade(&app), config.sample_every);
    let v1 = guarded_routes()
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
        // Added after the auth layer: the document is open, like /healthz.
        .route("/openapi.json", get(openapi));
    let scrape = Router::new()
        .route("/metrics", get(metrics_route))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(scrape)
        .merge(dashboard::routes(app.clone()))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::same_origin,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(app)
}

/// Registers the `/v1` routes behind the token and lists them in [`ROUTES`] from one table, so
/// the OpenAPI document can be checked against what is served.
macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every `/v1` route behind the token: (method, path under `/v1`).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn guarded_routes() -> Router<Shared> {
            Router::new()$(.route($path, on(MethodFilter::$method, $handler)))*
        }
    };
}

api_routes! {
    POST "/jobs" => jobs::enqueue,
    GET "/jobs" => listing::list,
    POST "/jobs/batch" => jobs::enqueue_batch,
    GET "/jobs/{id}" => jobs::job,
    POST "/jobs/{id}/cancel" => jobs::cancel,
    GET "/queues" => admin::queues,
    POST "/queues/{queue}/purge" => admin::purge,
    GET "/workers" => admin::workers,
    GET "/dead-letter" => admin::dead_letters,
    POST "/dead-letter/retry" => admin::retry_all_dead,
    POST "/dead-letter/purge" => admin::purge_dead,
    POST "/dead-letter/{id}/retry" => admin::retry_dead,
    GET "/cron" => admin::cron_list,
    POST "/cron" => admin::cron_add,
    DELETE "/cron/{name}" => admin::cron_remove,
}

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// `GET /v1/openapi.json`.
async fn openapi() -> impl axum::response::IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// `GET /metrics`: Prometheus text exposition (behind the token when one is set).
async fn metrics_route(State(app): State<Shared>) -> impl axum::response::IntoResponse {
    let text = metrics::render(&app.conveyor, app.on_scrape.as_deref()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `GET /healthz`: open, for load balancers; `503` with status `draining` once the process
/// stops taking jobs (the API still answers while its workers finish).
async fn healthz(State(app): State<Shared>) -> (StatusCode, Json<serde_json::Value>) {
    let engine = app.conveyor.engine().name();
    if app.draining.load(Ordering::Relaxed) {
        let body = json!({ "status": "draining", "engine": engine });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    (
        StatusCode::OK,
        Json(json!({ "status": "ok", "engine": engine })),
    )
}

async fn not_found() -> ApiError {
    ApiError::status(StatusCode::NOT_FOUND, "no such route; the API is under /v1")
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| HttpError::Io { address, source })
}
