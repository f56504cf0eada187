/// Why a record could not be turned into a job. The message names the field, so the
/// dead-letter entry tells the producer exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value is not JSON (or not UTF-8).
    #[error("record value is not valid JSON: {0}")]
    NotJson(String),
    /// The JSON does not match any shape this ingest accepts.
    #[error("unknown record shape: {0}")]
    UnknownShape(String),
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field is present but has the wrong type or value.
    #[error("invalid field `{field}`: {message}")]
    Invalid {
        /// The field (a header name or a JSON key).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The envelope version is newer than this build understands.
    #[error("envelope version {0} is not supported (this build reads version 1)")]
    Version(String),
}

impl DecodeError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        DecodeError::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }
}
