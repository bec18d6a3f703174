//! Serialization of snapshot-set creation per node.
//!
//! From prepare_backup to post_snapshot only one job at a time talks to the writers (the
//! reference serializes exactly this stretch). A second job *waits* for the gate up to a
//! deadline instead of failing at once — backup applications that start several jobs together
//! then simply queue — and only when the deadline passes does it fail with "snapshot set in
//! progress", naming the job that holds the gate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

/// The per-node gate.
#[derive(Debug, Default)]
pub(crate) struct SnapshotSetGate {
    holder: Mutex<Option<Uuid>>,
    freed: Condvar,
    /// Jobs waiting for the gate (changed under `holder`'s lock), so a test can see a job
    /// waiting without timing it.
    waiting: AtomicUsize,
}

impl SnapshotSetGate {
    /// Takes the gate for `job`, waiting at most `wait`. On time-out returns the holder.
    pub(crate) fn acquire(&self, job: Uuid, wait: Duration) -> Result<(), Uuid> {
        let deadline = Instant::now() + wait;
        let mut holder = self.holder.lock();
        loop {
            match *holder {
                None => {
                    *holder = Some(job);
                    return Ok(());
                }
                Some(h) if h == job => return Ok(()),
                Some(h) => {
                    self.waiting.fetch_add(1, Ordering::SeqCst);
                    let timed_out = self.freed.wait_until(&mut holder, deadline).timed_out();
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    if timed_out && holder.is_some() {
                        return Err(holder.unwrap_or(h));
                    }
                }
            }
        }
    }

    /// Releases the gate if `job` holds it (harmless otherwise).
    pub(crate) fn release(&self, job: Uuid) {
        let mut holder = self.holder.lock();
        if *holder == Some(job) {
            *holder = None;
            self.freed.notify_all();
        }
    }

    /// The job holding the gate.
    pub(crate) fn holder(&self) -> Option<Uuid> {
        *self.holder.lock()
    }

    /// Jobs waiting for the gate.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn second_job_waits_then_gets_the_gate_or_times_out() {
        let gate = Arc::new(SnapshotSetGate::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        gate.acquire(a, Duration::ZERO).unwrap();
        assert_eq!(gate.acquire(b, Duration::from_millis(10)), Err(a));
        let g = gate.clone();
        let t = std::thread::spawn(move || g.acquire(b, Duration::from_secs(60)));
        // The job counts itself as waiting under the gate's lock and waits on the condition
        // variable in the same critical section, so the release below wakes a waiting job.
        let deadline = Instant::now() + Duration::from_secs(30);
        while gate.waiting() == 0 {
            assert!(Instant::now() < deadline, "timed out waiting for the second job to wait");
            std::thread::yield_now();
        }
        gate.release(a);
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(gate.holder(), Some(b));
        gate.release(a); // not the holder: no effect
        assert_eq!(gate.holder(), Some(b));
    }
}
