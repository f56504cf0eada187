//! The conformance tests: [`engine`] for the core trait, [`observe`] for statistics and the
//! dead-letter list, [`backend`] for the other capabilities.

mod backend;
mod engine;
mod observe;

pub use backend::*;
pub use engine::*;
pub use observe::*;

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
