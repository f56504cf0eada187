use std::sync::{Arc, Mutex};

use rusqlite::config::DbConfig;
use rusqlite::Connection;

use crate::config::{SqliteConfig, Synchronous};
use crate::error::Result;

/// One connection, used from blocking tasks. SQLite serialises writers anyway; one connection
/// per process keeps its prepared-statement cache warm.
pub(crate) struct Store {
    conn: Mutex<Connection>,
    /// A second connection for reads that may take long (counts over a large file, the
    /// dashboard's lookups): in WAL mode they read a snapshot beside the writer, so a count
    /// over a million rows never holds the workers' fetches and reports back.
    reader: Mutex<Connection>,
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
        stable_plans(&conn)?;
        crate::schema::migrate(&mut conn)?;
        let reader = Connection::open(&config.path)?;
        reader.busy_timeout(config.busy_timeout)?;
        reader.pragma_update(None, "query_only", true)?;
        reader.set_prepared_statement_cache_capacity(16);
        stable_plans(&reader)?;
        // Read once now: the connection opens the WAL and its index here, beside the writer's,
        // not at some later first read (when the file's folder may be gone or unreadable).
        reader.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(Store {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
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

    /// Runs the read-only `f` with the reading connection on a blocking thread (it cannot
    /// write: `query_only`).
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = store.reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await?
    }
}

/// Turns on SQLite's query planner stability guarantee. Without it a statement whose plan may
/// depend on a bound value (a `LIMIT :limit`, a value compared with a partial index's WHERE) is
/// recompiled, triggers and all, each time that value changes: the claim statement was
/// recompiled on nearly every fetch, which made up most of a job's cost on a busy ordering key.
/// Every statement here is written for its index (`INDEXED BY` where it matters), so the
/// values never needed to choose the plan.
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}
