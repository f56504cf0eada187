/// Errors of the Kafka engine. The decode variants say why a record could not be turned into a
/// job; their message names the field, so the dead-letter entry tells the producer what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
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
    #[error("envelope version {0:?} in header `conveyor-version` is not supported (this build reads version 1)")]
    Version(String),
    /// The Kafka client failed (broker unreachable, delivery timed out, ...).
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// Records that should be there could not be read in time (inspection).
    #[error("reading from the broker did not finish: {0}")]
    Incomplete(String),
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        reason: String,
    },
}

impl From<Error> for conveyor_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid { ref field, .. } if field == "backend" => {
                conveyor_core::Error::invalid("backend", err)
            }
            Error::Client(_) | Error::Topic { .. } | Error::Incomplete(_) => {
                conveyor_core::Error::storage(err)
            }
            other => conveyor_core::Error::invalid("record", other),
        }
    }
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }
}
