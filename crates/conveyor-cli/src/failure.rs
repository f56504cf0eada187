//! How errors become exit codes and messages.
//!
//! Exit codes (DESIGN.md §2): 0 success; 1 runtime failure; 2 usage error or bad input.
//!
//! Input errors are [`conveyor::Error::InvalidInput`] (or `PayloadTooLarge`) whichever layer
//! finds them (clap-free checks in this crate, the config file, the engine's validation), so
//! their message always reads `invalid <field>: ...` and they exit 2.
//!
//! "Not found" (an unknown job id, dead letter or cron name) exits **1**, not 2: the input was
//! well formed, the storage just does not hold that item, and scripts polling for a job can
//! tell it apart from a typo in the id (which is `invalid id`, exit 2). A job in the wrong
//! state for the operation (cancelling a completed job) is also a runtime failure, exit 1.

use std::fmt;
use std::process::ExitCode;

/// Exit code of a runtime failure (storage error, not found, wrong state, interrupted).
pub const FAILURE: u8 = 1;
/// Exit code of a usage error or bad input.
pub const USAGE: u8 = 2;

/// The command was stopped by SIGINT or SIGTERM before it finished.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted by a signal")
    }
}

impl std::error::Error for Interrupted {}

/// The exit code an error maps to.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<conveyor::Error>())
        .map_or(FAILURE, |core| {
            if core.is_input_error() {
                USAGE
            } else {
                FAILURE
            }
        })
}

/// Prints `error: ...` on stderr and returns the matching exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(exit_code(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor::Error;

    #[test]
    fn input_errors_exit_2_and_the_rest_1() {
        let input = anyhow::Error::new(Error::invalid("payload", "bad"));
        assert_eq!(exit_code(&input), USAGE);
        let wrapped = input.context("while enqueueing");
        assert_eq!(exit_code(&wrapped), USAGE);
        let missing = anyhow::Error::new(Error::NotFound {
            what: "job",
            id: "x".into(),
        });
        assert_eq!(exit_code(&missing), FAILURE);
        assert_eq!(exit_code(&anyhow::Error::new(Interrupted)), FAILURE);
    }
}
