//! Calls under a deadline.
//!
//! The coordinator never waits on a writer (or a provider) without a deadline: every call runs
//! on its own worker thread and the caller waits on a channel with a timeout. A call that
//! misses its deadline is abandoned — its thread finishes on its own and its late result is
//! dropped — so one hung writer cannot hold up the job, the thaw, or the other writers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

/// How a call under a deadline ended, when it did not return a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError<E> {
    /// The callee returned an error.
    Failed(E),
    /// No answer within the deadline.
    TimedOut(Duration),
    /// The callee panicked.
    Panicked(String),
}

/// A call in flight.
pub(crate) struct Pending<T, E> {
    rx: Receiver<Result<T, E>>,
    started: Instant,
}

/// Starts `f` on a worker thread named `name`.
pub(crate) fn spawn<T, E, F>(name: String, f: F) -> Pending<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let (tx, rx) = sync_channel(1);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        // A panic drops `tx`; the waiter sees the channel disconnect and reports it.
        if let Ok(r) = catch_unwind(AssertUnwindSafe(f)) {
            let _ = tx.send(r);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot spawn a worker thread for a coordinator call");
    }
    Pending { rx, started: Instant::now() }
}

impl<T, E> Pending<T, E> {
    /// Waits until `deadline`.
    pub(crate) fn wait_until(self, deadline: Instant) -> Result<T, CallError<E>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Failed(e)),
            Err(RecvTimeoutError::Timeout) => Err(CallError::TimedOut(self.started.elapsed())),
            Err(RecvTimeoutError::Disconnected) => {
                Err(CallError::Panicked("the call panicked or could not start".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_errors_timeouts_and_panics_are_told_apart() {
        let far = || Instant::now() + Duration::from_secs(5);
        assert_eq!(spawn::<_, (), _>("t".into(), || Ok(7)).wait_until(far()), Ok(7));
        assert_eq!(
            spawn::<(), _, _>("t".into(), || Err("no")).wait_until(far()),
            Err(CallError::Failed("no"))
        );
        let slow = spawn::<(), (), _>("t".into(), || {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        assert!(matches!(
            slow.wait_until(Instant::now() + Duration::from_millis(20)),
            Err(CallError::TimedOut(_))
        ));
        let p = spawn::<(), (), _>("t".into(), || panic!("writer bug"));
        assert!(matches!(p.wait_until(far()), Err(CallError::Panicked(_))));
    }
}
