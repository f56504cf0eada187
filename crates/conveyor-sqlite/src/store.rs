use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::config::{SqliteConfig, Synchronous};
use crate::error::Result;

/// One connection, used from blocking tasks. SQLite serialises writers anyway; one connection
/// per process keeps its prepared-statement cache warm.
pub(crate) struct Store {
    conn: Mutex<Connection>,
    pub(crate) config: SqliteConfig,
}

impl Store {
    pub(crate) fn open(config: SqliteConfig) -> Result<Self> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| crate::SqliteError::Url {
                url: config.path.display().to_string(),
                message: format!("cannot create folder {}: {e}", dir.display()),
            })?;
        }
        let mut conn = Connection::open(&config.path)?;
        conn.busy_timeout(config.busy_timeout)?;
        // WAL lets readers (stats, the dashboard) run beside the writer.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.set_prepared_statement_cache_capacity(64);
        crate::schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            config,
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (the transaction
            // rolls back on drop), so a poisoned lock is safe to keep using.
            let mut conn = store.conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await?
    }
}
