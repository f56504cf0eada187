//! Sign-in (when the server has a token) and the CSRF token of the dashboard's forms.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use crate::Shared;

/// The sign-in cookie: a random session id, never the token (`HttpOnly`, `SameSite=Strict`).
const SESSION_COOKIE: &str = "conveyor_session";
/// The CSRF cookie; every form repeats its value.
const CSRF_COOKIE: &str = "conveyor_csrf";

/// The value of cookie `name` in `headers`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn set_cookie(name: &str, value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict"
    ))
    .ok()
}

/// Pages want the sign-in cookie when the server has a token; without one, the login form.
pub async fn require_sign_in(State(app): State<Shared>, request: Request, next: Next) -> Response {
    if app.token.is_none() {
        return next.run(request).await;
    }
    let signed_in = cookie(request.headers(), SESSION_COOKIE).is_some_and(|id| {
        app.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    });
    match signed_in {
        true => next.run(request).await,
        false => Redirect::to("/login").into_response(),
    }
}

/// The sign-in form's field.
#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: sets the sign-in cookie when the token is right.
pub async fn login(State(app): State<Shared>, Form(login): Form<Login>) -> Response {
    let right = app
        .token
        .as_ref()
        .is_some_and(|t| crate::auth::same(login.token.as_bytes(), t.as_bytes()));
    if !right {
        return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
    }
    let session = uuid::Uuid::new_v4().simple().to_string();
    app.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session.clone());
    let mut response = Redirect::to("/").into_response();
    if let Some(value) = set_cookie(SESSION_COOKIE, &session) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The CSRF token of this browser (its cookie), or a new one to set with the page.
pub struct Csrf {
    /// The token the page's forms carry.
    pub token: String,
    /// Set when the browser had none.
    pub new: bool,
}

impl Csrf {
    /// The browser's token, or a fresh random one.
    pub fn of(headers: &HeaderMap) -> Self {
        match cookie(headers, CSRF_COOKIE).filter(|t| t.len() == 32) {
            Some(token) => Csrf { token, new: false },
            None => Csrf {
                token: uuid::Uuid::new_v4().simple().to_string(),
                new: true,
            },
        }
    }

    /// Adds the cookie to `response` when the browser had none.
    pub fn attach(&self, mut response: Response) -> Response {
        if self.new {
            if let Some(value) = set_cookie(CSRF_COOKIE, &self.token) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// True when a form's `csrf` field matches the browser's CSRF cookie and the browser does not
/// say the request comes from another site (the same check as every state change's, see
/// `guard.rs`).
pub fn form_is_ours(headers: &HeaderMap, field: &str, public_origin: Option<&str>) -> bool {
    let cookie_ok = cookie(headers, CSRF_COOKIE)
        .is_some_and(|c| c.len() == 32 && crate::auth::same(c.as_bytes(), field.as_bytes()));
    cookie_ok && crate::guard::from_here(headers, public_origin)
}
