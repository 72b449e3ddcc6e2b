//! One shutdown signal for every task of a process (SIGINT or SIGTERM).

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal: cancelled on SIGINT/SIGTERM or by [`Shutdown::trigger`].
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A signal that fires when the process receives SIGINT or SIGTERM.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let shutdown = Self::default();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = shutdown.0.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                () = token.cancelled() => return,
            };
            tracing::info!(signal = name, "shutting down");
            token.cancel();
        });
        Ok(shutdown)
    }

    /// Fires the signal (for example when a critical task fails).
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Completes once the signal has fired.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_reaches_every_clone() {
        let a = Shutdown::default();
        let b = a.clone();
        assert!(!b.is_triggered());
        a.trigger();
        b.wait().await;
        assert!(b.is_triggered());
    }
}
