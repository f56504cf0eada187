//! The SQLite side of `conveyor bench`: fresh files beside the backend's database (same
//! filesystem, same durability), removed afterwards; the user's database is not touched.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use conveyor::{Engine, SqliteConfig, SqliteEngine, Statistics, Synchronous};

use super::{
    delayed, drain, enqueue_noops, paced, round_trips, sqlite_ceiling, BenchResult, Plan, Workload,
};

/// Runs one workload.
pub async fn run(url: &str, plan: Plan) -> Result<Vec<BenchResult>> {
    let Plan {
        workload,
        jobs,
        concurrency,
        pace,
        seconds,
        workers: _,
    } = plan;
    let config = SqliteConfig::from_url(url).map_err(conveyor::Error::from)?;
    let parent = config
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = tempfile::Builder::new()
        .prefix(".conveyor-bench-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a bench folder in {}", parent.display()))?;
    let sync = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    let backend = format!("sqlite (synchronous={})", sync.to_ascii_lowercase());
    let mut fresh = config.clone();
    fresh.path = dir.path().join("bench.db");
    let sqlite = Arc::new(SqliteEngine::open(fresh)?);
    let engine: Arc<dyn Engine> = sqlite.clone();
    let ceiling_path = dir.path().join("ceiling.db");
    match workload {
        Workload::BurnDown => {
            let enqueue_rate = enqueue_noops(&engine, jobs).await?;
            let seconds = drain(&engine, jobs, concurrency).await?;
            let left = sqlite
                .stats()
                .await?
                .queue("default")
                .map_or(0, |q| q.available + q.running);
            if left > 0 {
                bail!("burn-down left {left} jobs unfinished");
            }
            let ceiling = tokio::task::spawn_blocking(move || {
                sqlite_ceiling::burn_down(&ceiling_path, sync, jobs, concurrency)
            })
            .await??;
            Ok(vec![BenchResult::burn_down(
                backend,
                jobs,
                seconds,
                enqueue_rate,
                ceiling,
            )])
        }
        Workload::Latency => {
            let (samples, seconds) = round_trips(&engine, jobs).await?;
            let ceiling = tokio::task::spawn_blocking(move || {
                sqlite_ceiling::round_trip(&ceiling_path, sync, jobs)
            })
            .await??;
            Ok(vec![BenchResult::latency(
                backend, &samples, seconds, ceiling,
            )])
        }
        // No raw client sends a paced stream through SQLite's own tables; the latency
        // workload's ceiling covers the storage round trip.
        Workload::Delayed => {
            let run = delayed::run(&engine, jobs, seconds, concurrency).await?;
            Ok(vec![BenchResult::delayed(backend, &run)])
        }
        Workload::Pool => super::pool::run(&engine, &backend, jobs, concurrency).await,
        Workload::HotKey => super::hot_key::run(&engine, &backend, jobs, concurrency).await,
        Workload::Fleet => bail!(
            "fleet is a Kafka workload: it measures how joining workers and the group's \
             rebalances stall the queue (SQLite workers share a file, with no group to join)"
        ),
        Workload::Scheduled => {
            super::scheduled::run(&engine, &backend, jobs, pace, concurrency).await
        }
        Workload::DeepBacklog => {
            super::deep_backlog::run(&engine, &backend, jobs, concurrency).await
        }
        Workload::Http => {
            let conveyor = conveyor::Conveyor::from_parts(sqlite.clone(), sqlite.capabilities());
            super::http::run(conveyor, &engine, &backend, jobs).await
        }
        Workload::Sustained | Workload::RetryStorm => {
            let storm = if workload == Workload::RetryStorm {
                jobs
            } else {
                0
            };
            let run = paced::run(&engine, pace, storm, concurrency).await?;
            Ok(vec![BenchResult::paced(workload, backend, &run, None)])
        }
    }
}
