//! Conveyor as a service: the JSON API (`/v1`) over the [`Conveyor`] facade, the same on every
//! engine. Documented in `docs/http-api.md`.
//!
//! Safe by default: [`check_exposure`] refuses a listen address other than loopback unless a
//! token is set; with a token every `/v1` route wants `Authorization: Bearer TOKEN`;
//! `/healthz` stays open for load balancers. Bodies are size-limited and pages bounded.

mod admin;
mod auth;
mod error;
mod jobs;
mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use conveyor::Conveyor;
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

pub use error::ApiError;
pub use request::MAX_BATCH;

/// Largest request body by default (a batch of jobs included).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Bearer token every `/v1` route wants (`CONVEYOR_TOKEN`); `None`: no auth (loopback
    /// only, see [`check_exposure`]).
    pub token: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// What every handler gets.
pub(crate) struct App {
    pub conveyor: Conveyor,
    pub token: Option<String>,
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
    });
    let v1 = Router::new()
        .route("/jobs", post(jobs::enqueue))
        .route("/jobs/batch", post(jobs::enqueue_batch))
        .route("/jobs/{id}", get(jobs::job))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/queues", get(admin::queues))
        .route("/queues/{queue}/purge", post(admin::purge))
        .route("/dead-letter", get(admin::dead_letters))
        .route("/dead-letter/retry", post(admin::retry_all_dead))
        .route("/dead-letter/purge", post(admin::purge_dead))
        .route("/dead-letter/{id}/retry", post(admin::retry_dead))
        .route("/cron", get(admin::cron_list).post(admin::cron_add))
        .route("/cron/{name}", delete(admin::cron_remove))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .fallback(not_found)
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

/// `GET /healthz`: open, for load balancers.
async fn healthz(State(app): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "engine": app.conveyor.engine().name() }))
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
