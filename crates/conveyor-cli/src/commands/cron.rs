//! `conveyor cron list | add NAME EXPR KIND [JSON] | remove NAME`.

use conveyor::{CronEntry, Error};

use super::Context;
use crate::cli::CronCommand;
use crate::{input, output};

/// Runs one `cron` subcommand.
pub async fn run(ctx: &Context, command: CronCommand) -> anyhow::Result<()> {
    match command {
        CronCommand::List { json } => {
            let entries = ctx.open().await?.schedules().await?;
            if json {
                output::json(&entries)
            } else {
                output::write(&table(&entries))
            }
        }
        CronCommand::Add {
            name,
            expr,
            kind,
            payload,
            queue,
            json,
        } => {
            let payload = input::payload(payload.as_deref()).await?;
            let mut entry = CronEntry::new(name, expr, kind, payload);
            entry.queue = queue;
            // Checked before the backend is opened: a bad expression never touches storage.
            entry.validate(chrono::Utc::now())?;
            let stored = ctx.open().await?.schedule(entry).await?;
            if json {
                output::json(&stored)
            } else {
                output::line(format!(
                    "{}  next run {}",
                    stored.name,
                    output::opt_time(stored.next_run_at.as_ref())
                ))
            }
        }
        CronCommand::Remove { name } => {
            if ctx.open().await?.unschedule(&name).await? {
                output::line(name)
            } else {
                Err(Error::NotFound {
                    what: "cron entry",
                    id: name,
                }
                .into())
            }
        }
    }
}

fn table(entries: &[CronEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.expr.clone(),
                e.kind.clone(),
                e.queue.clone(),
                output::opt_time(e.next_run_at.as_ref()),
                output::opt_time(e.last_run_at.as_ref()),
                output::clip(&e.payload.to_string(), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "EXPR", "KIND", "QUEUE", "NEXT_RUN", "LAST_RUN", "PAYLOAD",
        ],
        &rows,
    )
}
