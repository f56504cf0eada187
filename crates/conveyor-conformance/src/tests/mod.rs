//! The conformance tests, grouped by property. Each takes a [`crate::Harness`].

mod admin;
mod faults;
mod keys;
mod lifecycle;
mod scheduling;

pub use admin::*;
pub use faults::*;
pub use keys::*;
pub use lifecycle::*;
pub use scheduling::*;

use std::sync::{Arc, Mutex};

use conveyor_core::{handler_fn, Handler, Outcome};

/// A handler of `kind` that records a value derived from each job, then completes.
pub(crate) fn recorder<T: Send + 'static>(
    kind: &str,
    log: Arc<Mutex<Vec<T>>>,
    f: impl Fn(&conveyor_core::JobContext) -> T + Send + Sync + 'static,
) -> Arc<dyn Handler> {
    handler_fn(kind, move |ctx| {
        let value = f(&ctx);
        log.lock().expect("log lock").push(value);
        async { Outcome::Complete }
    })
}
