//! Rebuilding a schedule partition's idempotency key index when it is assigned (see
//! `src/keys` and `state/claims.rs`): the records written within the window before the
//! partition's committed position are read beside the lane, on a thread of their own (the
//! client's reads block), and handed to the session's state.

use std::sync::Arc;
use std::time::Duration;

use conveyor_core::now_ms;

use super::Shared;
use crate::keys::{reading_since, window_ms, Entry, KeyIndex};
use crate::scan::Scanner;
use crate::state::Tp;
use crate::Error;

/// How long a failed rebuild waits before it tries again; the pause doubles up to
/// [`MAX_PAUSE`], so a struggling broker is not met with a storm of new connections.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Rebuilds `tp`'s index from the records before `end` (the committed position the lane
/// reads from; `None`: not known, looked up here), then
/// hands it over as rebuild number `generation`. Tries again until it succeeds or the
/// partition is no longer this session's.
pub(super) fn rebuild(shared: Arc<Shared>, tp: Tp, generation: u64, end: Option<i64>) {
    let spawned = std::thread::Builder::new()
        .name("conveyor-keys".into())
        .spawn(move || {
          let mut pause = RETRY_AFTER;
          loop {
            if !shared.state().wants_keys(&tp, generation) {
                return;
            }
            match read_index(&shared, &tp, end) {
                Ok(index) => {
                    shared.state().keys_rebuilt(&tp, generation, index);
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, topic = %tp.0, partition = tp.1, "cannot read the idempotency keys of a schedule partition yet: its jobs wait; trying again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
          }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the thread that reads idempotency keys");
    }
}

/// The index of the records of `tp` written within the window before `end`.
fn read_index(shared: &Shared, tp: &Tp, end: Option<i64>) -> Result<KeyIndex, Error> {
    let config = &shared.config;
    let mut index = KeyIndex::new(window_ms(config));
    let scanner = Scanner::new(config, &config.schedule_group())?;
    // Unknown when the lane could not read its committed offsets at assignment (it still
    // starts there): asked again here, and an error tries again rather than trusting an empty
    // index.
    let end = match end {
        Some(end) => Some(end),
        None => scanner
            .offsets(&[(tp.0.to_string(), vec![tp.1])])?
            .first()
            .and_then(|at| at.committed),
    };
    let Some(end) = end else {
        return Ok(index); // nothing committed: the lane reads the whole log itself
    };
    let start = scanner.offset_at_time(&tp.0, tp.1, reading_since(config, now_ms()))?;
    let range = [(tp.0.to_string(), tp.1, start, end)];
    scanner.read(&range, |_, _, _, record| {
        if let Some(entry) = Entry::of(&record) {
            index.observe(entry);
        }
    })?;
    Ok(index)
}
