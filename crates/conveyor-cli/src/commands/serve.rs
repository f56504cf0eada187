//! `conveyor serve` (workers + cron scheduler) and `conveyor worker` (workers only).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use conveyor::{Conveyor, Error, JobEvent, Registry, WorkerConfig};

use super::Context;
use crate::cli::{ServeArgs, WorkerArgs};
use crate::handlers::{self, Built};

/// How long requests in flight may take to finish once the workers stopped.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Where `conveyor serve` listens when neither `--listen`, `CONVEYOR_LISTEN` nor the file says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Runs the HTTP API, workers and the cron scheduler until `shutdown` resolves, after
/// upserting the cron entries of the configuration file; then drains all three.
pub async fn serve(
    ctx: &Context,
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let config = ctx
        .config
        .worker_config(&args.worker.queues, args.worker.concurrency)?;
    let listen = args
        .listen
        .or_else(|| ctx.config.file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    check_listen(&listen)?;
    let public_origin = args
        .public_origin
        .as_deref()
        .filter(|o| !o.is_empty())
        .map(origin_of)
        .transpose()?;
    let token = std::env::var("CONVEYOR_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if public_origin.is_some() && token.is_none() {
        // Behind a proxy that rewrites Host every request looks loopback: without a token
        // anyone who reaches the proxy would have the API and the dashboard.
        return Err(Error::invalid(
            "public-origin",
            "a server reached through a public address needs CONVEYOR_TOKEN",
        )
        .into());
    }
    // Bound first: a taken port fails before anything is started or stored.
    let http = bind_http(&listen, token.as_deref()).await?;
    let conveyor = ctx.open_worker(&args.worker).await?;
    let entries = ctx.config.cron_entries();
    for entry in &entries {
        conveyor.schedule(entry.clone()).await?;
    }
    announce("serve", ctx, &config, &conveyor);
    tracing::info!(
        cron_entries = entries.len(),
        "cron entries from the configuration upserted"
    );
    let (registry, built) = registry(ctx, &config)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let draining = Arc::new(AtomicBool::new(false));
    let pools = built.pools.clone();
    let app = conveyor_http::router(
        conveyor.clone(),
        conveyor_http::HttpConfig {
            token,
            draining: draining.clone(),
            on_scrape: Some(Arc::new(move || handlers::publish_pool_metrics(&pools))),
            public_origin,
            ..conveyor_http::HttpConfig::default()
        },
    );
    let mut http_stop = stopped;
    let server = tokio::spawn(conveyor_http::serve(http, app, async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));
    let mut worker = conveyor.worker(registry, config);
    worker.observe(log_event);
    worker.observe(conveyor_http::metrics::record);
    // The API answers (status, stats) while the workers drain, and stops after them; its
    // health check says it is draining, so load balancers send no more traffic.
    let shutdown = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
    };
    let result = conveyor.serve_worker(worker, shutdown).await;
    let _ = stop.send(true);
    built.shutdown().await;
    let abort = server.abort_handle();
    match tokio::time::timeout(HTTP_DRAIN, server).await {
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the HTTP API stopped with an error"),
        Err(_) => {
            abort.abort();
            tracing::warn!("HTTP requests still open after {HTTP_DRAIN:?}: dropped");
        }
        _ => {}
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the API's address, refusing one beyond this machine without a token, and says where
/// it listens (the port the system chose, for `:0`).
async fn bind_http(listen: &str, token: Option<&str>) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr()?;
    conveyor_http::check_exposure(address, token)
        .map_err(|e| Error::invalid("listen", e.to_string()))?;
    tracing::info!(
        "HTTP API on http://{address}/v1 (health: /healthz){}",
        if token.is_some() {
            ", bearer token required"
        } else {
            ""
        }
    );
    Ok(listener)
}

/// Runs workers (no cron scheduler, no HTTP) until `shutdown` resolves.
pub async fn worker(
    ctx: &Context,
    args: WorkerArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let config = ctx
        .config
        .worker_config(&args.worker.queues, args.worker.concurrency)?;
    let conveyor = ctx.open_worker(&args.worker).await?;
    announce("worker", ctx, &config, &conveyor);
    let (registry, built) = registry(ctx, &config)?;
    let mut worker = conveyor.worker(registry, config);
    worker.observe(log_event);
    let result = worker.run(shutdown).await;
    built.shutdown().await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// The built-in kinds and the configuration's `[[handlers]]`, whose pools start now and log
/// their counts every 30 s while they change.
fn registry(ctx: &Context, config: &WorkerConfig) -> Result<(Registry, Built), Error> {
    let mut registry = Registry::with_builtins();
    let built = handlers::build(
        &ctx.config.file.handlers,
        &ctx.config.base_dir(),
        config.default_timeout,
        &mut registry,
    )?;
    built.log_stats(std::time::Duration::from_secs(30));
    Ok((registry, built))
}

/// The startup line on stderr.
fn announce(verb: &str, ctx: &Context, config: &WorkerConfig, conveyor: &Conveyor) {
    let queues = if config.queues.is_empty() {
        "*".to_string()
    } else {
        config.queues.join(",")
    };
    tracing::info!(
        backend = %ctx.backend_url,
        engine = conveyor.engine().name(),
        queues = %queues,
        concurrency = config.concurrency,
        config = %ctx.config.path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string()),
        "conveyor {verb} starting"
    );
}

/// Checks that `addr` looks like `HOST:PORT`.
fn check_listen(addr: &str) -> Result<(), Error> {
    let port = addr
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(()),
        _ => Err(Error::invalid(
            "listen",
            format!("{addr:?} is not HOST:PORT (example: 127.0.0.1:7070)"),
        )),
    }
}

/// `scheme://host[:port]` of a public URL, as browsers send it in `Origin`; anything more (a
/// path, a query, credentials) is refused, since an origin never carries it.
fn origin_of(text: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::invalid("public-origin", format!("{text:?}: {why}"));
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("give an http:// or https:// address"));
    }
    if url.host_str().is_none() {
        return Err(bad("no host"));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad(
            "an origin is scheme://host[:port], without a path, query or user",
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// Logs a job event (every one: the worker calls it inline, so a burst never skips a line that
/// a reader of the log, or the chaos test's ledger, relies on): failures at warn, dead letters
/// at error, the rest at debug.
fn log_event(event: &JobEvent) {
    match event {
        JobEvent::Started {
            id, kind, attempt, ..
        } => {
            tracing::debug!(job = %id, kind, attempt, "started");
        }
        JobEvent::Completed { id, kind, took, .. } => {
            tracing::debug!(job = %id, kind, took_ms = took.as_millis() as u64, "completed");
        }
        JobEvent::Failed {
            id,
            kind,
            attempt,
            error,
            ..
        } => {
            tracing::warn!(job = %id, kind, attempt, error, "attempt failed; will retry");
        }
        JobEvent::Dead {
            id, kind, error, ..
        } => {
            tracing::error!(job = %id, kind, error, "dead-lettered");
        }
        JobEvent::Cancelled { id, kind, .. } => {
            tracing::info!(job = %id, kind, "stopped while running (cancelled or released)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert!(check_listen("127.0.0.1:7070").is_ok());
        assert!(check_listen("[::1]:80").is_ok());
        assert!(check_listen("localhost:8080").is_ok());
        assert!(check_listen("7070").is_err());
        assert!(check_listen(":7070").is_err());
        assert!(check_listen("host:http").is_err());
    }

    #[test]
    fn a_public_origin_is_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://Jobs.Example.com").expect("origin"),
            "https://jobs.example.com"
        );
        assert_eq!(
            origin_of("http://10.0.0.5:8080/").expect("origin"),
            "http://10.0.0.5:8080"
        );
        assert_eq!(
            origin_of("https://jobs.example.com:443").expect("origin"),
            "https://jobs.example.com"
        );
        for bad in [
            "jobs.example.com",
            "ftp://jobs.example.com",
            "https://jobs.example.com/conveyor",
            "https://jobs.example.com/?a=1",
            "https://user@jobs.example.com",
            "https://:secret@jobs.example.com",
            "https://jobs.example.com#top",
        ] {
            let err = origin_of(bad).expect_err(bad).to_string();
            assert!(err.contains("public-origin"), "{bad}: {err}");
        }
    }
}
