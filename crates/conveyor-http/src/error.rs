//! The API's errors: a status code and `{"error": "...", "field": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One error the API answers with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

impl ApiError {
    /// A `400` naming `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid {field}: {message}"),
            field: Some(field.to_string()),
        }
    }

    /// An error of `status` without a field.
    pub fn status(status: StatusCode, message: impl std::fmt::Display) -> Self {
        ApiError {
            status,
            message: message.to_string(),
            field: None,
        }
    }
}

impl From<conveyor::Error> for ApiError {
    fn from(error: conveyor::Error) -> Self {
        use conveyor::Error as E;
        let message = error.to_string();
        let (status, field) = match &error {
            E::InvalidInput { field, .. } if *field == "backend" => {
                // An engine without the capability: the route exists, this engine lacks it.
                (StatusCode::NOT_IMPLEMENTED, None)
            }
            E::InvalidInput { field, .. } => (StatusCode::BAD_REQUEST, Some(field.to_string())),
            E::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Some("payload".into())),
            E::NotFound { .. } => (StatusCode::NOT_FOUND, None),
            E::WrongState { .. } => (StatusCode::CONFLICT, None),
            _ => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        ApiError {
            status,
            message,
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "API request failed");
        }
        let body = json!({ "error": self.message, "field": self.field });
        (self.status, Json(body)).into_response()
    }
}
