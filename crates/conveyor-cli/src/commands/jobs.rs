//! `conveyor job`, `cancel`, `stats`, `purge` and `cleanup`.

use conveyor::{Error, JobInfo, Stats};
use serde_json::json;

use super::Context;
use crate::cli::{CancelArgs, CleanupArgs, JobArgs, PurgeArgs, ReplayArgs, StatsArgs};
use crate::{input, output};

/// Shows one job. An unknown id is a runtime failure (exit 1, see [`crate::failure`]); a
/// malformed id is bad input (exit 2, `invalid id`).
pub async fn job(ctx: &Context, args: JobArgs) -> anyhow::Result<()> {
    let id = input::job_id(&args.id)?;
    let conveyor = ctx.open().await?;
    let info = conveyor.status(id).await?.ok_or_else(|| Error::NotFound {
        what: "job",
        id: id.to_string(),
    })?;
    if args.json {
        output::json(&info)
    } else {
        output::write(&describe(&info))
    }
}

/// The human view of a job: the fields every job has, then those that are set.
fn describe(info: &JobInfo) -> String {
    let mut pairs = vec![
        ("id", info.id.to_string()),
        ("kind", info.kind.clone()),
        ("queue", info.queue.clone()),
        ("state", info.state.to_string()),
        ("attempt", info.attempt.to_string()),
        ("max_attempts", info.max_attempts.to_string()),
        ("priority", info.priority.to_string()),
        ("run_at", output::time(&info.run_at)),
        ("created_at", output::time(&info.created_at)),
        (
            "last_error",
            info.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(at) = &info.errored_at {
        pairs.push(("errored_at", output::time(at)));
    }
    if let Some(at) = &info.finished_at {
        pairs.push(("finished_at", output::time(at)));
    }
    if let Some(progress) = &info.progress {
        pairs.push(("progress", progress.to_string()));
    }
    if let Some(key) = &info.idempotency_key {
        pairs.push(("idempotency_key", key.clone()));
    }
    if let Some(key) = &info.ordering_key {
        pairs.push(("ordering_key", key.clone()));
    }
    if let Some(original) = info.replay_of {
        pairs.push(("replay_of", original.to_string()));
    }
    pairs.push(("payload", output::clip(&info.payload.to_string(), 200)));
    output::fields(&pairs)
}

/// Cancels a job and prints its state afterwards. A running job stays `running` until its
/// worker stops it at the next heartbeat; a note on stderr says so.
pub async fn cancel(ctx: &Context, args: CancelArgs) -> anyhow::Result<()> {
    let id = input::job_id(&args.id)?;
    let conveyor = ctx.open().await?;
    let info = conveyor.cancel(id).await?;
    let requested = info.cancel_requested;
    if args.json {
        return output::json(&json!({
            "id": info.id,
            "state": info.state,
            "cancel_requested": requested,
        }));
    }
    if requested {
        eprintln!("note: job {id} is running; its worker stops it at its next heartbeat");
    }
    output::line(info.state)
}

/// Prints job counts per queue and state.
pub async fn stats(ctx: &Context, args: StatsArgs) -> anyhow::Result<()> {
    let stats = ctx.open().await?.stats().await?;
    if args.json {
        return output::json(&stats);
    }
    output::write(&stats_table(&stats))?;
    let lag = lag_table(&stats);
    if lag.is_empty() {
        return Ok(());
    }
    output::write("\n")?;
    output::write(&lag)
}

/// Engines with partitions (Kafka): where the workers' group stands in each one.
fn lag_table(stats: &Stats) -> String {
    let rows: Vec<Vec<String>> = stats
        .queues
        .iter()
        .flat_map(|q| &q.partitions)
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed.to_string(),
                p.end.to_string(),
                p.lag.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    output::table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &rows)
}

fn stats_table(stats: &Stats) -> String {
    let rows: Vec<Vec<String>> = stats
        .queues
        .iter()
        .map(|q| {
            let counts = [
                q.available,
                q.scheduled,
                q.running,
                q.retryable,
                q.completed,
                q.dead,
                q.cancelled,
            ];
            std::iter::once(q.queue.clone())
                .chain(counts.iter().map(u64::to_string))
                .collect()
        })
        .collect();
    output::table(
        &[
            "QUEUE",
            "AVAILABLE",
            "SCHEDULED",
            "RUNNING",
            "RETRYABLE",
            "COMPLETED",
            "DEAD",
            "CANCELLED",
        ],
        &rows,
    )
}

/// Removes every job of a queue that waits for its first attempt; prints how many.
pub async fn purge(ctx: &Context, args: PurgeArgs) -> anyhow::Result<()> {
    let purged = ctx.open().await?.purge(&args.queue).await?;
    if args.json {
        output::json(&json!({ "queue": args.queue, "purged": purged }))
    } else {
        output::line(purged)
    }
}

/// Deletes completed and cancelled jobs older than `--older-than`; prints how many.
pub async fn cleanup(ctx: &Context, args: CleanupArgs) -> anyhow::Result<()> {
    let age = input::duration("older-than", &args.older_than)?;
    // Checked here: the facade's subtraction would panic past the calendar's start.
    input::before_now("older-than", age)?;
    let deleted = ctx.open().await?.cleanup(age).await?;
    if args.json {
        output::json(&json!({ "deleted": deleted }))
    } else {
        output::line(deleted)
    }
}

/// `conveyor replay QUEUE --since TIME`, with a progress bar on a terminal.
pub async fn replay(ctx: &Context, args: ReplayArgs) -> anyhow::Result<()> {
    conveyor::check_name("queue", &args.queue)?;
    let since = match input::timestamp("since", &args.since) {
        Ok(at) => at,
        Err(_) => input::before_now("since", input::duration("since", &args.since)?)?,
    };
    // The file's ingest entries count: their topics hold jobs of their queues.
    let conveyor = ctx.open_worker(&crate::cli::WorkerFlags::default()).await?;
    let bar = output::progress_bar(0, "replayed");
    let shown = bar.clone();
    let ids = conveyor
        .replay(&args.queue, since, &move |done, total| {
            shown.set_length(total);
            shown.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    let ids = ids?;
    if args.json {
        output::json(&json!({ "queue": args.queue, "replayed": ids.len(), "ids": ids }))
    } else {
        output::line(ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor::QueueStats;

    #[test]
    fn the_stats_table_has_one_row_per_queue() {
        let stats = Stats {
            queues: vec![QueueStats {
                queue: "default".into(),
                available: 3,
                ..QueueStats::default()
            }],
        };
        let table = stats_table(&stats);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("QUEUE    AVAILABLE"));
        assert!(lines[1].starts_with("default  3"));
        assert_eq!(lag_table(&stats), "", "no partitions, no lag table");
    }

    #[test]
    fn partitions_get_a_lag_table() {
        let stats = Stats {
            queues: vec![QueueStats {
                queue: "mail".into(),
                partitions: vec![conveyor::PartitionLag {
                    topic: "conveyor.queue.mail".into(),
                    partition: 2,
                    committed: 40,
                    end: 45,
                    lag: 5,
                }],
                ..QueueStats::default()
            }],
        };
        let table = lag_table(&stats);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("TOPIC"), "{table}");
        assert!(lines[1].contains("conveyor.queue.mail  2"), "{table}");
        assert!(lines[1].trim_end().ends_with('5'), "{table}");
    }
}
