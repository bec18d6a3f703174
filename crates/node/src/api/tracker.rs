//! Work in flight on the blocking pool, counted so that a shutdown can wait for it.
//!
//! A request whose client went away leaves its job running on the blocking pool (the handler
//! is dropped, the thread is not), so waiting for the HTTP servers to finish is not enough:
//! the service waits for this count to reach zero before it dismounts the databases.

use std::sync::Arc;

use tokio::sync::watch;

/// How many jobs are running.
#[derive(Debug)]
pub struct Tracker {
    running: watch::Sender<usize>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self { running: watch::Sender::new(0) }
    }
}

/// One running job; it is counted until dropped.
#[derive(Debug)]
pub struct Running(Arc<Tracker>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n -= 1);
    }
}

impl Tracker {
    /// Counts a job until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running(self.clone())
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Completes when no job is running.
    pub async fn idle(&self) {
        let mut rx = self.running.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
