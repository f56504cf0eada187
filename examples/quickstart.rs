//! The library in one file: a typed handler, jobs now / later / with keys, progress, events,
//! status, and a graceful stop. Run with `cargo run -p conveyor --example quickstart`.

use std::time::Duration;

use conveyor::{handler_fn, Conveyor, JobEvent, JobState, NewJob, Outcome, Registry, WorkerConfig};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Resize {
    image: String,
    width: u32,
}

#[tokio::main]
async fn main() -> conveyor::Result<()> {
    let dir = std::env::temp_dir().join(format!("conveyor-quickstart-{}", std::process::id()));
    let conveyor = Conveyor::open(&format!("sqlite://{}/jobs.db", dir.display()))?;

    let mut registry = Registry::with_builtins();
    registry.register(handler_fn("resize", |ctx| async move {
        let job: Resize = match ctx.payload() {
            Ok(job) => job,
            Err(discard) => return discard, // a payload that can never decode is dead-lettered
        };
        if let Err(e) = ctx.progress(json!({"step": "decoding"})).await {
            return Outcome::Retry(e.to_string());
        }
        println!(
            "resizing {} to {} px (attempt {})",
            job.image,
            job.width,
            ctx.attempt()
        );
        Outcome::Complete
    }));

    let now = conveyor
        .dispatch(NewJob::new(
            "resize",
            json!({"image": "cat.png", "width": 64}),
        ))
        .await?;
    let later = NewJob::new("resize", json!({"image": "dog.png", "width": 32}))
        .run_in(Duration::from_millis(500))
        .idempotency_key("dog-32")
        .max_attempts(3);
    let later = conveyor.dispatch(later).await?;
    println!(
        "enqueued {} ({}) and {} ({})",
        now.id, now.state, later.id, later.state
    );

    let worker = conveyor.worker(registry, WorkerConfig::default());
    let mut events = worker.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let mut completed = 0;
    while completed < 2 {
        match events.recv().await {
            Ok(JobEvent::Completed { id, took, .. }) => {
                completed += 1;
                println!("completed {id} in {took:?}");
            }
            Ok(_) => {}
            Err(e) => return Err(conveyor::Error::Closed(e.to_string())),
        }
    }
    let _ = stop.send(());
    running
        .await
        .map_err(|e| conveyor::Error::Closed(e.to_string()))??;

    let status = conveyor
        .status(later.id)
        .await?
        .ok_or_else(|| conveyor::Error::Closed("job vanished".into()))?;
    assert_eq!(status.state, JobState::Completed);
    println!(
        "{} is {} after {} attempt(s), progress {:?}",
        status.id, status.state, status.attempt, status.progress
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
