/// Errors of the SQLite engine.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The database failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The backend URL or an option in it is invalid.
    #[error("invalid sqlite backend URL {url:?}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The file's schema is newer than this build knows.
    #[error(
        "database schema version {found} is newer than this conveyor ({known}); upgrade conveyor"
    )]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// An error the core defines (not found, wrong state, bad input).
    #[error(transparent)]
    Core(#[from] conveyor_core::Error),
    /// The blocking task running the query was lost.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<SqliteError> for conveyor_core::Error {
    fn from(err: SqliteError) -> Self {
        match err {
            SqliteError::Core(core) => core,
            SqliteError::Url { .. } => conveyor_core::Error::invalid("backend", err),
            other => conveyor_core::Error::storage(other),
        }
    }
}

pub(crate) type Result<T, E = SqliteError> = std::result::Result<T, E>;
