//! Kinds every worker serves, for demos, benchmarks and tests (DESIGN.md §2).

use std::time::Duration;

use serde::Deserialize;

use crate::{handler_fn, Outcome, Registry};

#[derive(Deserialize)]
struct SleepArgs {
    ms: u64,
}

#[derive(Deserialize, Default)]
struct FailArgs {
    times: Option<u32>,
}

/// Registers `noop`, `sleep` `{"ms":N}`, `fail` `{"times":N}` and `echo`.
pub fn register_builtins(registry: &mut Registry) {
    registry.register(handler_fn("noop", |_ctx| async { Outcome::Complete }));
    registry.register(handler_fn("sleep", |ctx| async move {
        match ctx.payload::<SleepArgs>() {
            Ok(args) => {
                tokio::time::sleep(Duration::from_millis(args.ms)).await;
                Outcome::Complete
            }
            Err(discard) => discard,
        }
    }));
    registry.register(handler_fn("fail", |ctx| async move {
        // `fail` accepts an empty or null payload: it then fails every attempt.
        let args = if ctx.job().payload.trim() == "null" {
            FailArgs::default()
        } else {
            match ctx.payload::<FailArgs>() {
                Ok(args) => args,
                Err(discard) => return discard,
            }
        };
        match args.times {
            Some(times) if ctx.attempt() > times => Outcome::Complete,
            Some(times) => Outcome::Retry(format!(
                "fail: attempt {} of {times} planned failures",
                ctx.attempt()
            )),
            None => Outcome::Retry(format!("fail: attempt {} always fails", ctx.attempt())),
        }
    }));
    registry.register(handler_fn("echo", |ctx| async move {
        tracing::info!(job = %ctx.id(), payload = %ctx.job().payload, "echo");
        Outcome::Complete
    }));
}
