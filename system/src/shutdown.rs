//! Shutdown: SIGTERM or SIGINT (Ctrl-C) starts a graceful stop.

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process still stops on the default action of a signal.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(event = "shutdown_signal", signal = "SIGTERM", "Shutting down"),
        _ = int.recv() => tracing::info!(event = "shutdown_signal", signal = "SIGINT", "Shutting down"),
    }
}
