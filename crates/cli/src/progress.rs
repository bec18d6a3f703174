//! Feedback while the node runs a long job.
//!
//! On a terminal: a spinner with the elapsed time, turning into a bar with bytes, rate and ETA
//! while the node reports byte counts. Otherwise (logs, pipes, CI), where a redrawn bar would
//! be noise: plain lines — the start, each step, each tenth of the bytes with rate and ETA, a
//! "still running" line every ten seconds, and the end.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::ProgressLine;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// How often a plain report says a job without news is still running: often enough that a
/// CI log shows the job alive, rarely enough not to drown it.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// A job being waited for.
pub struct Waiting {
    bar: Option<ProgressBar>,
    started: Instant,
    what: String,
    /// Plain reports only: stops the "still running" lines.
    heartbeat: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Waiting {
    pub fn start(what: &str) -> Waiting {
        let started = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(spinner_style());
            b.set_message(what.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let heartbeat = bar.is_none().then(|| {
            eprintln!("{what}: started");
            let (stop, stopped) = mpsc::channel::<()>();
            let what = what.to_string();
            let ticker = std::thread::spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                    eprintln!("{what}: still running ({:.0} s)", started.elapsed().as_secs_f64());
                }
            });
            (stop, ticker)
        });
        Waiting { bar, started, what: what.to_string(), heartbeat }
    }

    /// Ends the wait; prints how it went.
    pub fn finish(self, ok: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let outcome = if ok { "done" } else { "failed" };
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
        if let Some((stop, ticker)) = self.heartbeat {
            drop(stop);
            let _ = ticker.join();
        }
        eprintln!("{}: {outcome} in {secs:.1} s", self.what);
    }
}

// The templates are constants, checked by every run that shows progress.
#[allow(clippy::expect_used)]
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]").expect("a valid template")
}

#[allow(clippy::expect_used)]
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
    )
    .expect("a valid template")
}

/// Runs a job whose progress the node streams: `f` gets a callback for each progress line.
/// On a terminal the steps (with files done of the total) show as a spinner's message and
/// byte counts as a bar with ETA; otherwise each step is one plain line and the bytes one line
/// per tenth done, with the file count.
pub fn follow<T>(
    what: &str,
    f: impl FnOnce(&mut dyn FnMut(&ProgressLine<Value>)) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let w = Waiting::start(what);
    let mut in_bar = false;
    let mut plain = PlainBytes::default();
    let mut step = String::new();
    let mut files: Option<(u64, u64)> = None;
    let mut on_event = |v: &ProgressLine<Value>| match (v, &w.bar) {
        (ProgressLine::Step { what: s }, Some(b)) => {
            if in_bar {
                b.set_style(spinner_style());
                in_bar = false;
            }
            step = s.clone();
            files = None;
            b.set_message(format!("{what}: {step}"));
        }
        (ProgressLine::Step { what: s }, None) => {
            plain = PlainBytes::default();
            files = None;
            eprintln!("{what}: {s}");
        }
        (&ProgressLine::Files { done, total }, bar) => {
            files = Some((done, total));
            match bar {
                Some(b) => b.set_message(format!("{what}: {step} (files {done}/{total})")),
                // Off a terminal the count rides on the byte lines, and the last file gets
                // its own line.
                None if done == total && total > 0 => eprintln!("{what}: {done}/{total} files"),
                None => {}
            }
        }
        (&ProgressLine::Bytes { done, total }, Some(b)) => {
            if !in_bar {
                b.set_style(bar_style());
                // The rate and ETA are of the copy, not of the steps before it.
                b.reset_eta();
                in_bar = true;
            }
            b.set_length(total);
            b.set_position(done);
        }
        (&ProgressLine::Bytes { done, total }, None) => {
            if let Some(line) = plain.update(done, total, Instant::now()) {
                match files {
                    Some((d, t)) => eprintln!("{what}: {line}, files {d}/{t}"),
                    None => eprintln!("{what}: {line}"),
                }
            }
        }
        _ => {}
    };
    let r = f(&mut on_event);
    w.finish(r.is_ok());
    r
}

/// Byte progress as plain lines: one each time another tenth of the total is done, so that a
/// log shows the copy moving without a line for every update the node sends.
#[derive(Debug, Default)]
struct PlainBytes {
    /// When the first byte count of this step arrived: the rate is measured from there.
    first: Option<(Instant, u64)>,
    /// The last tenth reported.
    tenth: u64,
}

impl PlainBytes {
    /// The line to print for this update, if it crosses into a new tenth.
    fn update(&mut self, done: u64, total: u64, now: Instant) -> Option<String> {
        let (t0, done0) = *self.first.get_or_insert((now, done));
        if total == 0 {
            return None;
        }
        let tenth = (done.min(total) * 10 / total).min(10);
        if tenth <= self.tenth {
            return None;
        }
        self.tenth = tenth;
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = (secs > 0.0).then(|| (done.saturating_sub(done0)) as f64 / secs);
        let mut line = format!("{}% ({} of {}", tenth * 10, bytes(done), bytes(total));
        match rate {
            Some(r) if r > 0.0 => {
                line.push_str(&format!(", {}/s", bytes(r as u64)));
                if done < total {
                    let eta = (total - done) as f64 / r;
                    if eta < 1.0 {
                        line.push_str(", ETA <1 s");
                    } else {
                        line.push_str(&format!(", ETA {eta:.0} s"));
                    }
                }
            }
            _ => {}
        }
        line.push(')');
        Some(line)
    }
}

/// Runs `f` with a spinner (or, off a terminal, start, "still running" and end lines): for
/// jobs the node answers only when they end.
pub fn run<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let w = Waiting::start(what);
    let r = f();
    w.finish(r.is_ok());
    r
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_byte_lines_come_once_per_tenth_with_rate_and_eta() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mib = 1u64 << 20;
        let mut p = PlainBytes::default();
        assert_eq!(p.update(0, 100 * mib, at(0)), None, "nothing done yet");
        assert_eq!(p.update(5 * mib, 100 * mib, at(1)), None, "still in the first tenth");
        assert_eq!(
            p.update(20 * mib, 100 * mib, at(2)).as_deref(),
            Some("20% (20.0 MiB of 100.0 MiB, 10.0 MiB/s, ETA 8 s)"),
            "a jump over a tenth reports where it landed"
        );
        assert_eq!(p.update(25 * mib, 100 * mib, at(3)), None);
        assert_eq!(
            p.update(95 * mib, 100 * mib, at(10)).as_deref(),
            Some("90% (95.0 MiB of 100.0 MiB, 9.5 MiB/s, ETA <1 s)")
        );
        assert_eq!(
            p.update(100 * mib, 100 * mib, at(20)).as_deref(),
            Some("100% (100.0 MiB of 100.0 MiB, 5.0 MiB/s)")
        );
        assert_eq!(p.update(100 * mib, 100 * mib, at(21)), None, "the end is said once");
        assert_eq!(PlainBytes::default().update(1, 0, at(0)), None, "no total, no percentage");
    }

    #[test]
    fn byte_sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
