//! `conveyor workers`: the connected workers and what each runs.

use crate::cli::WorkersArgs;
use crate::output;

use super::Context;

/// Prints the workers as a table, or as JSON.
pub async fn run(ctx: &Context, args: WorkersArgs) -> anyhow::Result<()> {
    let workers = ctx.open().await?.workers().await?;
    if args.json {
        return output::json(&workers);
    }
    if workers.is_empty() {
        return output::write("no worker is connected\n");
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let per_queue: Vec<String> = w
                .running
                .iter()
                .map(|(queue, n)| format!("{queue}={n}"))
                .collect();
            vec![
                w.owner.clone(),
                w.running_total().to_string(),
                per_queue.join(","),
                w.started_at
                    .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                w.seen_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    output::write(&output::table(
        &[
            "WORKER",
            "RUNNING",
            "PER QUEUE",
            "STARTED",
            "LAST HEARTBEAT",
        ],
        &rows,
    ))
}
