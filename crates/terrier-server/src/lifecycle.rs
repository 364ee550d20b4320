//! The node's lifetime, as every task that spawns work sees it: where tasks
//! are tracked (so `run` waits for them under the drain deadline), the
//! shutdown signal (stop taking new work) and the hard stop (cut what is
//! still running when the drain deadline passed).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A handle on the node's lifetime; clones share it.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Every task the node spawns, awaited on shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the node must stop taking new work.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain deadline after shutdown ran out: what is
    /// still open then is cut, so `run` returns with nothing left running.
    pub hard_stop: CancellationToken,
}

impl Lifecycle {
    /// A lifecycle that stops when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { tasks: TaskTracker::new(), shutdown, hard_stop: CancellationToken::new() }
    }

    /// Runs `work` in a tracked task that the hard stop cuts.
    pub fn spawn_until_hard_stop<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let hard_stop = self.hard_stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = work => {}
                () = hard_stop.cancelled() => {}
            }
        });
    }
}
