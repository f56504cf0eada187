//! `conveyor bench --workload http`: the HTTP API and dashboard of `conveyor serve`, served in
//! this process on a port of 127.0.0.1 the system picks, over the same engine.
//!
//! - enqueue through `POST /v1/jobs/batch` (1000 per request), beside the library's batch
//!   enqueue of the same number of jobs (the ceiling);
//! - enqueue through single `POST /v1/jobs` on one keep-alive connection, beside the library's
//!   single enqueue;
//! - then, with every job of the run stored (`--jobs 1000000` gives a 1M-job file), the time of
//!   each dashboard page and of `GET /v1/queues`, as p50/p99 over [`PAGE_LOADS`] loads.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use conveyor::{Conveyor, Engine, NewJob};
use serde_json::json;

use super::{enqueue_in_batches, BenchResult, Workload};
use crate::output::progress_bar;

/// Loads of each page timed.
const PAGE_LOADS: usize = 50;
/// Jobs a request of the batch figure carries (the API's limit).
const BATCH: usize = 1000;

/// The figures of one run: batch, single, then one per page.
pub async fn run(
    conveyor: Conveyor,
    engine: &Arc<dyn Engine>,
    backend: &str,
    jobs: usize,
) -> Result<Vec<BenchResult>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let lists_jobs = conveyor.capabilities().list_jobs.is_some();
    let app = conveyor_http::router(conveyor, conveyor_http::HttpConfig::default());
    let server = tokio::spawn(conveyor_http::serve(listener, app, std::future::pending()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let singles = (jobs / 10).clamp(1, 20_000);
    let mut results = Vec::new();

    let library = library_batch(engine, jobs).await?;
    let seconds = api_batch(&client, &base, jobs).await?;
    results.push(with_ceiling(
        BenchResult::empty(
            Workload::Http,
            format!("{backend}, POST /v1/jobs/batch"),
            jobs,
            seconds,
        ),
        library,
    ));
    let library = library_single(engine, singles).await?;
    let seconds = api_single(&client, &base, singles).await?;
    results.push(with_ceiling(
        BenchResult::empty(
            Workload::Http,
            format!("{backend}, POST /v1/jobs"),
            singles,
            seconds,
        ),
        library,
    ));
    let id = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await?
        .id
        .to_string();
    let mut paths = vec![
        "/".to_string(),
        "/dead-letter".into(),
        "/cron".into(),
        "/workers".into(),
        format!("/jobs/{id}"),
        "/v1/queues".into(),
    ];
    if lists_jobs {
        paths.extend([
            "/jobs?state=available".into(),
            "/jobs?state=completed".into(),
        ]);
    }
    for path in &paths {
        let (samples, seconds) = page_times(&client, &base, path).await?;
        let mut result = BenchResult::empty(
            Workload::Http,
            format!(
                "{backend}, GET {path} with {} jobs stored",
                2 * (jobs + singles) + 1
            ),
            samples.len(),
            seconds,
        );
        result.with_latencies(&samples);
        results.push(result);
    }
    server.abort();
    Ok(results)
}

fn with_ceiling(mut result: BenchResult, ceiling: f64) -> BenchResult {
    result.ceiling_jobs_per_s = Some(ceiling);
    result.ratio_to_ceiling = Some(result.jobs_per_s / ceiling);
    result
}

/// The library's batch enqueue: jobs per second.
async fn library_batch(engine: &Arc<dyn Engine>, jobs: usize) -> Result<f64> {
    let bar = progress_bar(jobs, "library batch");
    let started = Instant::now();
    enqueue_in_batches(engine, jobs, || NewJob::new("noop", json!({})), &bar).await?;
    bar.finish_and_clear();
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// The library's single enqueue, one after the other: jobs per second.
async fn library_single(engine: &Arc<dyn Engine>, jobs: usize) -> Result<f64> {
    let bar = progress_bar(jobs, "library single");
    let started = Instant::now();
    for _ in 0..jobs {
        engine.enqueue(NewJob::new("noop", json!({}))).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// `POST /v1/jobs/batch` with [`BATCH`] jobs a request: seconds for all.
async fn api_batch(client: &reqwest::Client, base: &str, jobs: usize) -> Result<f64> {
    let bar = progress_bar(jobs, "POST /v1/jobs/batch");
    let one = json!({"kind": "noop"});
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(BATCH);
        let body = json!({ "jobs": vec![one.clone(); n] }).to_string();
        post(client, &format!("{base}/v1/jobs/batch"), body).await?;
        left -= n;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

/// Single `POST /v1/jobs`, one after the other on a keep-alive connection: seconds for all.
async fn api_single(client: &reqwest::Client, base: &str, jobs: usize) -> Result<f64> {
    let bar = progress_bar(jobs, "POST /v1/jobs");
    let body = json!({"kind": "noop"}).to_string();
    let started = Instant::now();
    for _ in 0..jobs {
        post(client, &format!("{base}/v1/jobs"), body.clone()).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<()> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "POST {url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Loads `path` [`PAGE_LOADS`] times: sorted milliseconds of each load, and seconds for all.
async fn page_times(client: &reqwest::Client, base: &str, path: &str) -> Result<(Vec<f64>, f64)> {
    let url = format!("{base}{path}");
    let mut samples = Vec::with_capacity(PAGE_LOADS);
    let all = Instant::now();
    for _ in 0..PAGE_LOADS {
        let started = Instant::now();
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples, all.elapsed().as_secs_f64()))
}
