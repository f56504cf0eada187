//! `conveyor dlq list | retry ID | retry --all | purge`.

use conveyor::{Conveyor, DeadLetter};
use serde_json::json;

use super::Context;
use crate::cli::DlqCommand;
use crate::{input, output};

/// Runs one `dlq` subcommand.
pub async fn run(ctx: &Context, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { json, limit } => list(&ctx.open().await?, json, limit).await,
        DlqCommand::Retry { id, json, .. } => {
            // Parsed before the backend is opened, so a bad id never touches storage.
            let id = id.as_deref().map(input::job_id).transpose()?;
            let conveyor = ctx.open().await?;
            match id {
                Some(id) => {
                    let info = conveyor.retry_dead(id).await?;
                    if json {
                        output::json(&json!({ "id": info.id, "state": info.state }))
                    } else {
                        output::line(info.id)
                    }
                }
                // clap requires `--all` when there is no id.
                None => {
                    let bar = output::progress_bar(0, "retried");
                    let shown = bar.clone();
                    let retried = conveyor
                        .retry_all_dead_with(&move |done, total| {
                            shown.set_length(total);
                            shown.set_position(done);
                        })
                        .await;
                    bar.finish_and_clear();
                    count(json, "retried", retried?)
                }
            }
        }
        DlqCommand::Purge { json } => {
            let purged = ctx.open().await?.purge_dead().await?;
            count(json, "purged", purged)
        }
    }
}

async fn list(conveyor: &Conveyor, json: bool, limit: u32) -> anyhow::Result<()> {
    let dead = conveyor.dead_letters(limit as usize).await?;
    if json {
        return output::json(&dead);
    }
    output::write(&table(&dead))
}

fn table(dead: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.job.id.to_string(),
                d.job.kind.clone(),
                d.original_queue.clone(),
                format!("{}/{}", d.job.attempt, d.job.max_attempts),
                output::opt_time(d.job.finished_at.as_ref()),
                origin(d),
                output::clip(d.job.last_error.as_deref().unwrap_or("-"), 80),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "KIND",
            "QUEUE",
            "ATTEMPTS",
            "DIED_AT",
            "ORIGIN",
            "LAST_ERROR",
        ],
        &rows,
    )
}

/// Where a dead letter was read from, on engines with topics: `topic/partition@offset`.
fn origin(d: &DeadLetter) -> String {
    match (&d.original_topic, d.original_partition, d.original_offset) {
        (Some(topic), Some(partition), Some(offset)) => format!("{topic}/{partition}@{offset}"),
        (Some(topic), _, _) => topic.clone(),
        _ => "-".to_string(),
    }
}

fn count(json: bool, key: &str, n: u64) -> anyhow::Result<()> {
    if json {
        output::json(&json!({ key: n }))
    } else {
        output::line(n)
    }
}
