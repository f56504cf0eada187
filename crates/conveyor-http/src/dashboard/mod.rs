//! The web dashboard at `/`: server-rendered pages (askama templates, escaped by default), no
//! script at all, plain forms for actions. Every action is a POST carrying the CSRF token of a
//! `SameSite=Strict` cookie (double submit); with a server token set, pages want the session
//! cookie the login form sets (a random id this server remembers, never the token itself).

mod list;
mod pages;
mod session;
mod workers;

use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::Shared;

/// No script, styles and forms from this server only, never framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes.
pub(crate) fn routes(app: Shared) -> Router<Shared> {
    let pages = Router::new()
        .route("/", get(pages::queues))
        .route("/jobs", get(list::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/cancel", post(pages::cancel))
        .route("/dead-letter", get(pages::dead_letters))
        .route("/dead-letter/retry", post(pages::retry_all))
        .route("/dead-letter/purge", post(pages::purge))
        .route("/dead-letter/{id}/retry", post(pages::retry))
        .route("/cron", get(pages::cron))
        .route("/workers", get(workers::workers))
        .route_layer(axum::middleware::from_fn_with_state(
            app,
            session::require_sign_in,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(pages::login_form).post(session::login))
        .route("/assets/app.css", get(stylesheet))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            // Not `no-referrer`: with it a browser sends `Origin: null` on the dashboard's own
            // form posts, which the CSRF check must refuse.
            HeaderValue::from_static("same-origin"),
        ))
}

async fn stylesheet() -> impl axum::response::IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/app.css"),
    )
}
