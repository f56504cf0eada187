use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, SqliteError};

/// The numbered migrations, in order; `PRAGMA user_version` records how many are applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    (
        "0002_canonical_ids_attempt_budget_retired_keys",
        include_str!("../migrations/0002_canonical_ids_attempt_budget_retired_keys.sql"),
    ),
    (
        "0003_replay_of",
        include_str!("../migrations/0003_replay_of.sql"),
    ),
    (
        "0004_traceparent",
        include_str!("../migrations/0004_traceparent.sql"),
    ),
    (
        "0005_blocked_keys",
        include_str!("../migrations/0005_blocked_keys.sql"),
    ),
    (
        "0006_queue_counts",
        include_str!("../migrations/0006_queue_counts.sql"),
    ),
    (
        "0007_workers",
        include_str!("../migrations/0007_workers.sql"),
    ),
];

/// The schema version this build creates.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies the missing migrations in one immediate transaction, so processes opening the same
/// new file at once do not both apply them.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(SqliteError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (name, sql) in &MIGRATIONS[found as usize..] {
        tracing::info!(migration = name, "applying migration");
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}
