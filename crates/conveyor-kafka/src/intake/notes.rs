//! Reading a queue partition's attempt notes when it is assigned (see `src/attempts.rs` and
//! `state/notes.rs`): on a thread of its own (the client's reads block), beside the lane,
//! whose keyed records of the partition wait until the notes are handed over.

use std::sync::Arc;
use std::time::Duration;

use conveyor_core::now_ms;

use super::Shared;
use crate::attempts;
use crate::state::Tp;

/// How long a failed read waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Reads the notes of `tp`'s records from `from` (the position the lane reads from) and hands
/// them over as read number `generation`. Tries again until it succeeds or the partition is
/// no longer this session's.
pub(super) fn load(shared: Arc<Shared>, tp: Tp, generation: u64, from: i64) {
    let spawned = std::thread::Builder::new()
        .name("conveyor-notes".into())
        .spawn(move || loop {
            if !shared.state().wants_notes(&tp, generation) {
                return;
            }
            match attempts::read(&shared.config, &tp, from) {
                Ok(notes) => {
                    if !notes.is_empty() {
                        tracing::info!(topic = %tp.0, partition = tp.1, notes = notes.len(), "keyed jobs go on from their attempt notes");
                    }
                    let ready = shared.state().notes_read(&tp, generation, notes, now_ms());
                    shared.nudge();
                    if ready {
                        shared.waker.notify_waiters();
                    }
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, topic = %tp.0, partition = tp.1, "cannot read the attempt notes of a partition yet: its keyed jobs wait; trying again");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the thread that reads attempt notes");
    }
}
