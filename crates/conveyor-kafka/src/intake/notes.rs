//! Reading the attempt notes of a lane's newly assigned queue partitions (see
//! `src/attempts.rs` and `state/notes.rs`): one thread and one client per rebalance, beside
//! the lane, whose keyed records of those partitions wait until the notes are handed over.
//! A failed read is tried again with a growing pause, on the same client, so a struggling
//! broker is not met with a storm of new connections.

use std::sync::Arc;
use std::time::Duration;

use conveyor_core::now_ms;

use super::Shared;
use crate::attempts;
use crate::scan::Scanner;
use crate::state::Tp;
use crate::Error;

/// The first pause after a failed read; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Reads the notes of each partition (with its read number and the position its lane reads
/// from) and hands them over. Tries again until it succeeds or none of the partitions still
/// waits for this read (revoked, or assigned again since).
pub(super) fn load(shared: Arc<Shared>, wanted: Vec<(Tp, u64, i64)>) {
    if wanted.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("conveyor-notes".into())
        .spawn(move || {
            let mut scanner = None;
            let mut pause = FIRST_PAUSE;
            loop {
                let waiting: Vec<(Tp, u64, i64)> = {
                    let state = shared.state();
                    wanted
                        .iter()
                        .filter(|(tp, generation, _)| state.wants_notes(tp, *generation))
                        .cloned()
                        .collect()
                };
                if waiting.is_empty() {
                    return;
                }
                match read(&shared, &mut scanner, &waiting) {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, partitions = waiting.len(), "cannot read the attempt notes of assigned partitions yet: their keyed jobs wait; trying again");
                        scanner = None; // a new client next time, in case this one is stuck
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(MAX_PAUSE);
                    }
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the thread that reads attempt notes");
    }
}

/// One read of the notes of `waiting`, handed over to the session's state.
fn read(
    shared: &Shared,
    scanner: &mut Option<Scanner>,
    waiting: &[(Tp, u64, i64)],
) -> Result<(), Error> {
    if scanner.is_none() {
        *scanner = Some(Scanner::new(&shared.config, &shared.config.group)?);
    }
    let Some(client) = scanner.as_ref() else {
        return Ok(());
    };
    let froms: Vec<(Tp, i64)> = waiting
        .iter()
        .map(|(tp, _, from)| (tp.clone(), *from))
        .collect();
    let mut by_tp = attempts::read(client, &shared.config, &froms)?;
    let mut ready = false;
    for (tp, generation, _) in waiting {
        let notes = by_tp.remove(tp).unwrap_or_default();
        if !notes.is_empty() {
            tracing::info!(topic = %tp.0, partition = tp.1, notes = notes.len(), "keyed jobs go on from their attempt notes");
        }
        ready |= shared.state().notes_read(tp, *generation, notes, now_ms());
    }
    shared.nudge();
    if ready {
        shared.waker.notify_waiters();
    }
    Ok(())
}
