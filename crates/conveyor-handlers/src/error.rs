//! The crate's one error type: what can go wrong while setting handlers up.

/// An error found while building a handler (at start-up, never at the first job).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `command` is empty or does not split into words (an unclosed quote).
    #[error("command {command:?}: {message}")]
    BadCommand {
        /// The command as written.
        command: String,
        /// What is wrong with it.
        message: String,
    },
    /// The program of a command is not found (not on `PATH`, or no such file).
    #[error("command {command:?}: program {program:?} not found{hint}")]
    MissingProgram {
        /// The command as written.
        command: String,
        /// The program looked for.
        program: String,
        /// Where it was looked for.
        hint: String,
    },
    /// A setting is out of range (zero workers, an invalid URL, ...).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
