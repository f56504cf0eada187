use std::fmt;

/// Every error the core and the engines report to a caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of a request is invalid; `field` names it so a CLI or HTTP caller can point at it.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The offending field, as the user spelled it (`payload`, `queue`, `cron`, ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The payload is bigger than the engine accepts.
    #[error("payload is {size} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the serialized payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No job (or cron entry, or dead letter) with this id or name.
    #[error("{what} not found: {id}")]
    NotFound {
        /// What was looked up (`job`, `cron entry`, `dead letter`).
        what: &'static str,
        /// The id or name that was asked for.
        id: String,
    },
    /// The operation does not apply to the job in its current state.
    #[error("job {id} is {state}: {message}")]
    WrongState {
        /// The job.
        id: String,
        /// Its current state.
        state: String,
        /// Why the operation does not apply.
        message: String,
    },
    /// The storage behind the engine failed (I/O, database, broker).
    #[error("storage error: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A worker stopped before the engine stored every finished attempt; those jobs run again
    /// once their leases expire.
    #[error("{count} finished outcomes could not be stored before shutdown gave up; those jobs run again once their leases expire")]
    OutcomesNotStored {
        /// Reports that were not stored.
        count: usize,
        /// The last storage error.
        source: Box<Error>,
    },
    /// The engine was shut down or a background task it depends on is gone.
    #[error("engine closed: {0}")]
    Closed(String),
}

impl Error {
    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(field: &'static str, message: impl fmt::Display) -> Self {
        Error::InvalidInput {
            field,
            message: message.to_string(),
        }
    }

    /// Wraps any storage-level error.
    pub fn storage(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage(Box::new(err))
    }

    /// True for errors caused by the caller's input (a CLI maps these to exit code 2).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidInput { .. } | Error::PayloadTooLarge { .. }
        )
    }
}

/// Result alias used across Conveyor's core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
