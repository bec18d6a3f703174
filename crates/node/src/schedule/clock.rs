//! The scheduler's clock: injectable, so that tests move time by hand instead of waiting.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A sleep of the clock.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wall-clock time and sleeping until a time of it.
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Resolves at `at_ms` of this clock, or earlier: the caller looks at the time again
    /// when it wakes.
    fn sleep_until(&self, at_ms: u64) -> Sleep;
}

/// The longest the real clock sleeps at once. Tokio's timers run on the monotonic clock; a
/// wall clock set forward or back (NTP stepping it, an administrator) would otherwise move
/// a run by as much. Waking every minute bounds that to a minute.
pub const MAX_NAP: Duration = Duration::from_secs(60);

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> u64 {
        events::now_ms()
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        let wait = Duration::from_millis(at_ms.saturating_sub(self.now_ms())).min(MAX_NAP);
        Box::pin(tokio::time::sleep(wait))
    }
}

#[cfg(test)]
pub mod fake {
    use tokio::sync::watch;

    use super::{Clock, Sleep};

    /// A clock that stands still until the test sets it; its sleeps end when it passes their
    /// time.
    pub struct FakeClock {
        now: watch::Sender<u64>,
    }

    impl FakeClock {
        pub fn at(ms: u64) -> Self {
            Self { now: watch::Sender::new(ms) }
        }

        pub fn set(&self, ms: u64) {
            self.now.send_replace(ms);
        }
    }

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            *self.now.borrow()
        }

        fn sleep_until(&self, at_ms: u64) -> Sleep {
            let mut rx = self.now.subscribe();
            Box::pin(async move {
                let _ = rx.wait_for(|t| *t >= at_ms).await;
            })
        }
    }
}
