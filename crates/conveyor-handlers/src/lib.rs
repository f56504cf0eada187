//! Handlers in any language. Three [`Runner`]s turn jobs into work outside the Rust process:
//!
//! - [`Pool`]: a supervised pool of long-lived worker processes speaking JSON lines on
//!   stdin/stdout (RoadRunner's `jobs.pool`; the protocol is in `docs/worker-protocol.md`);
//! - [`Exec`]: one process per job, payload on stdin, exit status as the outcome;
//! - [`Http`]: each job POSTed to a URL, the status code as the outcome.
//!
//! [`handlers`] makes one core [`Handler`] per kind a runner serves, to register in a
//! [`conveyor_core::Registry`] beside Rust handlers.

mod command;
mod error;
mod exec;
mod http;
mod pool;
mod process;
mod protocol;

use std::sync::Arc;

use async_trait::async_trait;
use conveyor_core::{Handler, JobContext, Outcome};

pub use command::{CommandLine, CommandSpec};
pub use error::{Error, Result};
pub use exec::{Exec, ExecConfig};
pub use http::{Http, HttpConfig};
pub use pool::{CpuAffinity, Pool, PoolConfig, PoolStats};
pub use process::Spawn;
pub use protocol::PROTOCOL_VERSION;

/// Runs jobs of any kind it is given (the kinds come from the configuration).
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs one attempt. Dropping the future (the runtime's timeout, a cancellation, a lost
    /// lease) stops the work: the process (group) running it is killed.
    async fn run(&self, ctx: JobContext) -> Outcome;
    /// A short description for logs ("pool \"php\" (2 x php worker.php)").
    fn describe(&self) -> String;
}

/// One core handler per kind in `kinds`, all run by `runner`.
pub fn handlers(runner: Arc<dyn Runner>, kinds: &[String]) -> Vec<Arc<dyn Handler>> {
    kinds
        .iter()
        .map(|kind| {
            Arc::new(KindHandler {
                kind: kind.clone(),
                runner: runner.clone(),
            }) as Arc<dyn Handler>
        })
        .collect()
}

struct KindHandler {
    kind: String,
    runner: Arc<dyn Runner>,
}

#[async_trait]
impl Handler for KindHandler {
    fn kind(&self) -> &str {
        &self.kind
    }
    async fn handle(&self, ctx: JobContext) -> Outcome {
        self.runner.run(ctx).await
    }
}
