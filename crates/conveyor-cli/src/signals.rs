//! The shutdown signal: SIGINT or SIGTERM.

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// A future that resolves on the first SIGINT or SIGTERM.
///
/// The handlers are installed when this function is called (so a signal that arrives before
/// the future is polled is not lost). After the first signal a second one ends the process at
/// once with exit code 1, for when a graceful drain takes too long.
pub fn shutdown() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = next(&mut term, &mut int).await;
        tracing::info!(
            signal = name,
            "shutdown requested; send it again to exit at once"
        );
        tokio::spawn(async move {
            let name = next(&mut term, &mut int).await;
            eprintln!("error: second {name}: exiting without waiting for running jobs");
            std::process::exit(i32::from(crate::failure::FAILURE));
        });
    })
}

async fn next(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
