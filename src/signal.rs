//! The shutdown signal, and SIGHUP for reloading the verification policy.

use std::future::Future;

/// Installs the SIGTERM (what Kubernetes and systemd send to stop a service) and SIGINT (Ctrl-C)
/// handlers now, and returns a future that resolves on either. Installing them before the daemon says
/// it is ready matters: a signal that arrives before a handler exists kills the process on the spot,
/// with no drain and the socket left behind. Must be called inside the runtime.
pub fn shutdown() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    }
}

/// Installs the SIGHUP handler now (SIGHUP's default action ends the process, and `systemctl reload` sends
/// it) and returns the stream of hangups. `None` when the handler cannot be installed.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(e) => {
            tracing::error!(cause = %e, "cannot install the SIGHUP handler; the verification policy is not reloaded");
            None
        }
    }
}
