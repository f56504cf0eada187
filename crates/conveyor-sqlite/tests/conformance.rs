//! The engine conformance suite, run against SQLite files.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conveyor_conformance::{conformance_tests, EngineHarness, EngineSite, Harness, Site};
use conveyor_core::{Backend, Engine};
use conveyor_sqlite::{SqliteConfig, SqliteEngine};

struct SqliteHarness;

struct SqliteSite {
    // Kept so the folder lives as long as the site.
    _dir: tempfile::TempDir,
    config: SqliteConfig,
}

#[async_trait]
impl EngineSite for SqliteSite {
    async fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(SqliteEngine::open(self.config.clone()).expect("open sqlite"))
    }
}

#[async_trait]
impl Site for SqliteSite {
    async fn open(&self) -> Arc<dyn Backend> {
        Arc::new(SqliteEngine::open(self.config.clone()).expect("open sqlite"))
    }
}

#[async_trait]
impl EngineHarness for SqliteHarness {
    async fn engine_site(&self) -> Box<dyn EngineSite> {
        Harness::site(self).await
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn site(&self) -> Box<dyn Site> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = SqliteConfig::new(dir.path().join("conformance.db"));
        // Short leases so that the crash tests finish quickly.
        config.lease = Duration::from_secs(1);
        Box::new(SqliteSite { _dir: dir, config })
    }
}

conformance_tests!(SqliteHarness);
