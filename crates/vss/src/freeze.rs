//! The freeze window and its watchdog.
//!
//! Once freeze is issued, the writers must be thawed within the freeze window whatever else
//! happens. The thaw deadline is enforced by a watchdog thread of its own, not by the thread
//! driving the job: if the job's thread is stuck (a provider commit that ignores its timeout,
//! a bug), the watchdog still thaws. Thaw is *dispatched once*: whoever comes first — the job
//! after the commit, the job's abort path, or the watchdog — takes the list of writers to
//! thaw; the others find it taken.
//!
//! Every writer that was sent freeze is sent thaw, including one whose freeze timed out: its
//! freeze may still complete after the deadline, and a thaw a writer did not need is harmless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::catalog;
use parking_lot::{Condvar, Mutex};
use serde_json::json;

use crate::coordinator::{Inner, JobRef, Participant};
use crate::writer::{Phase, WriterFailure, WriterState};

struct State {
    /// Writers still to thaw; `None` once thaw was dispatched.
    to_thaw: Option<Vec<Arc<Participant>>>,
    finished: bool,
    expired: bool,
}

/// One snapshot set's freeze window.
pub(crate) struct FreezeControl {
    state: Mutex<State>,
    changed: Condvar,
    window: Duration,
}

impl FreezeControl {
    /// Opens the window for `frozen` and starts its watchdog.
    pub(crate) fn start(
        inner: Arc<Inner>,
        job: JobRef,
        frozen: Vec<Arc<Participant>>,
    ) -> Arc<FreezeControl> {
        let window = inner.config.freeze_window;
        let fc = Arc::new(FreezeControl {
            state: Mutex::new(State { to_thaw: Some(frozen), finished: false, expired: false }),
            changed: Condvar::new(),
            window,
        });
        let deadline = Instant::now() + window;
        let watched = fc.clone();
        let spawned = std::thread::Builder::new()
            .name("vss-freeze-watchdog".into())
            .spawn(move || watched.watch(&inner, &job, deadline));
        if let Err(e) = spawned {
            // Without a watchdog the job's own thaw (every wait of which is bounded) remains.
            tracing::error!(error = %e, "cannot start the freeze watchdog");
        }
        fc
    }

    fn watch(&self, inner: &Inner, job: &JobRef, deadline: Instant) {
        let targets = {
            let mut s = self.state.lock();
            while !s.finished && !self.changed.wait_until(&mut s, deadline).timed_out() {}
            if s.finished {
                return;
            }
            s.expired = true;
            match s.to_thaw.take() {
                Some(t) => t,
                None => return,
            }
        };
        let window_ms = self.window.as_millis() as u64;
        tracing::error!(window_ms, job = %job.job, "freeze window expired; the watchdog thaws");
        inner.emit(
            &catalog::COORD_FREEZE_WINDOW_EXPIRED,
            Some(job.job),
            json!({"window_ms": window_ms,
                   "snapshot_set": job.set.map(|s| s.to_string()).unwrap_or_default()}),
        );
        for p in &targets {
            let state = p.status().state;
            if matches!(state, WriterState::WaitingForThaw | WriterState::WaitingForFreeze) {
                p.fail(
                    WriterState::FailedAtFreeze,
                    WriterFailure::Timeout,
                    &format!("freeze window of {window_ms} ms expired before thaw"),
                );
            }
        }
        inner.call_all(job, Phase::Thaw, &targets, None, |w, ctx| w.thaw(ctx));
    }

    /// Takes the writers to thaw, if nobody has yet.
    pub(crate) fn take_thaw(&self) -> Option<Vec<Arc<Participant>>> {
        self.state.lock().to_thaw.take()
    }

    /// Whether the watchdog fired.
    pub(crate) fn expired(&self) -> bool {
        self.state.lock().expired
    }

    /// Closes the window: the watchdog exits without acting.
    pub(crate) fn finish(&self) {
        self.state.lock().finished = true;
        self.changed.notify_all();
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}
