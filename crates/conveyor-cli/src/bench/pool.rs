//! `conveyor bench --workload pool`: jobs/s through a pool of 2 worker processes with a
//! trivial Python handler and a trivial PHP handler (the libraries of `examples/workers`,
//! built into the binary), beside the built-in `noop` figure of the same run and engine: the
//! difference is what the protocol and the processes cost. Each language runs twice: with the
//! default CPU placement, then with `cpu_affinity = "paired"`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use conveyor::{Engine, Handler, JobContext, NewJob, Outcome, Registry};
use conveyor_handlers::{CommandSpec, CpuAffinity, Pool, PoolConfig, Runner};

use super::{drain, drain_counted, enqueue_in_batches, enqueue_noops, BenchResult, Workload};
use crate::output::progress_bar as progress;

const PY_LIB: &str = include_str!("../../../../examples/workers/python/conveyor_worker.py");
const PHP_CONSUMER: &str =
    include_str!("../../../../examples/workers/php/lib/Conveyor/Jobs/Consumer.php");
const PHP_TASK: &str =
    include_str!("../../../../examples/workers/php/lib/Conveyor/Jobs/Task/ReceivedTask.php");
const PHP_INTERFACE: &str = include_str!(
    "../../../../examples/workers/php/lib/Conveyor/Jobs/Task/ReceivedTaskInterface.php"
);
const PHP_AUTOLOAD: &str = include_str!("../../../../examples/workers/php/lib/autoload.php");

const PY_WORKER: &str = "from conveyor_worker import Consumer\n\
consumer = Consumer()\n\
while (task := consumer.wait_task()) is not None:\n    task.complete()\n";
const PHP_WORKER: &str = "<?php\nrequire __DIR__ . '/lib/autoload.php';\n\
$consumer = new Conveyor\\Jobs\\Consumer();\n\
while ($task = $consumer->waitTask()) {\n    $task->complete();\n}\n";

/// The noop figure, then one figure per language whose runtime is installed.
pub async fn run(
    engine: &Arc<dyn Engine>,
    backend: &str,
    jobs: usize,
    concurrency: usize,
) -> Result<Vec<BenchResult>> {
    enqueue_noops(engine, jobs).await?;
    let noop = jobs as f64 / drain(engine, jobs, concurrency).await?;
    let dir = tempfile::tempdir()?;
    write_workers(dir.path())?;
    let mut results = Vec::new();
    let runs = [("python", "python3 worker.py"), ("php", "php worker.php")]
        .into_iter()
        .flat_map(|run| [(run, CpuAffinity::None), (run, CpuAffinity::Paired)]);
    for ((language, command), affinity) in runs {
        let Ok(command) = CommandSpec::Line(command.into()).resolve(dir.path()) else {
            eprintln!("bench pool: {language} is not installed, skipped");
            continue;
        };
        let mut config = PoolConfig::new(format!("bench-{language}"), command, 2);
        config.spawn.dir = Some(dir.path().to_path_buf());
        config.destroy_timeout = Duration::from_secs(5);
        config.cpu_affinity = affinity;
        let pool = Pool::start(config)?;
        let seconds = through_pool(engine, &pool, jobs, concurrency, language).await?;
        pool.shutdown().await;
        let label = match affinity {
            CpuAffinity::None => format!("{backend}, {language}"),
            CpuAffinity::Paired => format!("{backend}, {language}, cpu_affinity=paired"),
        };
        let mut result = BenchResult::empty(Workload::Pool, label, jobs, seconds);
        result.ceiling_jobs_per_s = Some(noop);
        result.ratio_to_ceiling = Some(result.jobs_per_s / noop);
        results.push(result);
    }
    Ok(results)
}

fn write_workers(dir: &Path) -> Result<()> {
    let lib = dir.join("lib/Conveyor/Jobs/Task");
    std::fs::create_dir_all(&lib)?;
    for (path, text) in [
        ("conveyor_worker.py", PY_LIB),
        ("worker.py", PY_WORKER),
        ("worker.php", PHP_WORKER),
        ("lib/autoload.php", PHP_AUTOLOAD),
        ("lib/Conveyor/Jobs/Consumer.php", PHP_CONSUMER),
        ("lib/Conveyor/Jobs/Task/ReceivedTask.php", PHP_TASK),
        (
            "lib/Conveyor/Jobs/Task/ReceivedTaskInterface.php",
            PHP_INTERFACE,
        ),
    ] {
        std::fs::write(dir.join(path), text).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// Enqueues `jobs` jobs for the pool and drains them; seconds from the first job done.
async fn through_pool(
    engine: &Arc<dyn Engine>,
    pool: &Arc<Pool>,
    jobs: usize,
    concurrency: usize,
    language: &str,
) -> Result<f64> {
    let kind = format!("bench_pool_{language}");
    let bar = progress(jobs, "enqueue");
    let k = kind.clone();
    enqueue_in_batches(
        engine,
        jobs,
        || NewJob::new(k.clone(), serde_json::json!({})),
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    let done = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register(Arc::new(Counted {
        kind,
        pool: pool.clone(),
        done: done.clone(),
    }));
    drain_counted(engine, registry, done, jobs, concurrency, language).await
}

/// The pool as a handler that counts completed jobs.
struct Counted {
    kind: String,
    pool: Arc<Pool>,
    done: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Handler for Counted {
    fn kind(&self) -> &str {
        &self.kind
    }
    async fn handle(&self, ctx: JobContext) -> Outcome {
        let outcome = self.pool.run(ctx).await;
        if outcome == Outcome::Complete {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}
