//! How a node runs work that blocks (fsync, checksumming a snapshot): on
//! threads in production, or inline in virtual time under the
//! deterministic simulator, where another thread would make the order of
//! events depend on the operating system's scheduler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Where blocking work runs.
#[derive(Clone, Default)]
pub(crate) enum IoMode {
    /// Log writes on a dedicated writer thread, other blocking work on
    /// tokio's blocking pool.
    #[default]
    Threads,
    /// Everything on the node's own thread; a log write becomes durable
    /// after a simulated delay drawn by `write_latency`. Built only by the
    /// simulator (feature `testing`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Simulated {
        write_latency: Arc<dyn Fn() -> Duration + Send + Sync>,
        /// How fast this node's clock runs, in percent of true time (a
        /// skewed clock: 100 runs true). Drives the time a leader stamps
        /// on session entries.
        clock_percent: u64,
    },
}

/// A boxed future, for handing to actix's `into_actor`.
pub(crate) type Boxed<T> = Pin<Box<dyn Future<Output = T>>>;

impl IoMode {
    /// `elapsed_ms` of true time as this node's clock measures it.
    pub(crate) fn clock_ms(&self, elapsed_ms: u64) -> u64 {
        match self {
            IoMode::Threads => elapsed_ms,
            IoMode::Simulated { clock_percent, .. } => {
                elapsed_ms.saturating_mul(*clock_percent) / 100
            }
        }
    }

    /// Runs `work`, which may block, without blocking the node's thread
    /// (or, simulated, at once). `Err` says the worker thread failed.
    pub(crate) fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Boxed<Result<T, String>> {
        match self {
            IoMode::Threads => Box::pin(async move {
                actix_rt::task::spawn_blocking(work)
                    .await
                    .map_err(|e| format!("worker thread failed: {e}"))
            }),
            IoMode::Simulated { .. } => {
                let result = work();
                Box::pin(async move { Ok(result) })
            }
        }
    }
}
