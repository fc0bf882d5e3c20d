//! Ctrl-C and SIGTERM for the commands that run work: the first asks for a clean stop, the
//! second stops everything at once.
//!
//! Does not stop anything itself beyond exiting: the runner and the role processes act on the
//! tokens.

use tokio_util::sync::CancellationToken;

use orchestrate_engine::runner::exit;

/// First SIGINT/SIGTERM cancels `stop` (finish in-flight work, claim nothing new); a second
/// cancels `kill` (stop everything now).
pub(crate) fn signal_pair() -> (CancellationToken, CancellationToken) {
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let (s, k) = (stop.clone(), kill.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        s.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        k.cancel();
    });
    (stop, kill)
}

/// Cancels the token on the first SIGINT or SIGTERM; exits at once on the second.
pub(crate) fn signal_cancel() -> CancellationToken {
    let (stop, kill) = signal_pair();
    let token = stop.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        eprintln!("interrupted: stopping the current step (press Ctrl-C again to exit at once)");
        kill.cancelled().await;
        // Nothing the run started outlives it.
        orchestrate_base::exec::kill_all_now();
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
    token
}
