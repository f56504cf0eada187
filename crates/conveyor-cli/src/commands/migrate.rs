//! `conveyor migrate --from URL --to URL`: moves jobs and cron entries between backends.

use conveyor::{Conveyor, Migration};
use serde_json::json;

use super::Context;
use crate::cli::MigrateArgs;
use crate::output;

/// Runs `conveyor migrate`, with a progress bar on a terminal and a summary at the end.
pub async fn migrate(ctx: &Context, args: MigrateArgs) -> anyhow::Result<()> {
    let from_url = args.from.unwrap_or_else(|| ctx.backend_url.clone());
    if from_url == args.to {
        return Err(conveyor::Error::invalid("to", "the target is the source backend").into());
    }
    let from = Conveyor::connect(&from_url).await?;
    let to = Conveyor::connect(&args.to).await?;
    let bar = output::progress_bar(0, "moved");
    let done = from
        .migrate_to(&to, args.batch.get(), |m| {
            if let Some(total) = m.total {
                bar.set_length(total.max(m.moved));
            }
            bar.set_position(m.moved);
        })
        .await;
    bar.finish_and_clear();
    let done = done?;
    if args.json {
        return output::json(&json!({
            "moved": done.moved,
            "already": done.already,
            "by_state": done.by_state,
            "cron": done.cron,
        }));
    }
    output::line(summary(&done, &from_url, &args.to))
}

/// `moved 3 jobs (available 2, dead 1) and 1 cron entry from A to B`, and what an earlier run
/// had moved already.
fn summary(done: &Migration, from: &str, to: &str) -> String {
    let states: Vec<String> = done
        .by_state
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    let states = match states.is_empty() {
        true => String::new(),
        false => format!(" ({})", states.join(", ")),
    };
    let entries = if done.cron == 1 { "entry" } else { "entries" };
    let mut line = format!(
        "moved {} jobs{states} and {} cron {entries} from {from} to {to}",
        done.moved, done.cron
    );
    if done.already > 0 {
        line.push_str(&format!(
            "; {} of them were already there from an interrupted run and were not stored twice",
            done.already
        ));
    }
    line
}
