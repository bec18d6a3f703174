//! CPU time of the whole process (every thread, user and system), as `getrusage(RUSAGE_SELF)`
//! reports it: what a scenario divides by its operations to give CPU microseconds per
//! operation. On a 2-core machine throughput is bounded by CPU, not the disk, so this is the
//! figure that says whether a change made the code cheaper or only moved the wait.
#![allow(unsafe_code)]

use std::time::Duration;

/// User and system CPU time consumed by the process so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    pub user: Duration,
    pub sys: Duration,
}

impl Cpu {
    /// Now.
    pub fn now() -> Cpu {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `ru` points to writable memory the size of a `rusage`, which getrusage fills
        // in; RUSAGE_SELF is a valid `who`. The call cannot fail with these arguments (EFAULT
        // and EINVAL are the only errors), and on failure the zeroed value is used anyway.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
        if rc != 0 {
            return Cpu::default();
        }
        // SAFETY: zero-initialized above, and filled by getrusage; every bit pattern of the
        // plain integer fields is a valid `rusage`.
        let ru = unsafe { ru.assume_init() };
        let d = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Cpu { user: d(ru.ru_utime), sys: d(ru.ru_stime) }
    }

    /// CPU time used since `earlier`.
    pub fn since(earlier: Cpu) -> Cpu {
        let now = Cpu::now();
        Cpu {
            user: now.user.saturating_sub(earlier.user),
            sys: now.sys.saturating_sub(earlier.sys),
        }
    }

    /// Microseconds (user, system, total) per operation, one decimal.
    pub fn per_op_us(&self, ops: u64) -> (f64, f64, f64) {
        let per = |d: Duration| {
            let us = d.as_secs_f64() * 1e6 / ops.max(1) as f64;
            (us * 10.0).round() / 10.0
        };
        (per(self.user), per(self.sys), per(self.user + self.sys))
    }
}
