//! Feedback while the node runs a long job: a spinner with the elapsed time on a terminal,
//! plain start and end lines otherwise (logs, pipes, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// A job being waited for.
pub struct Waiting {
    bar: Option<ProgressBar>,
    started: Instant,
    what: String,
}

impl Waiting {
    pub fn start(what: &str) -> Waiting {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                    .expect("a valid template"),
            );
            b.set_message(what.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if bar.is_none() {
            eprintln!("{what}: started");
        }
        Waiting { bar, started: Instant::now(), what: what.to_string() }
    }

    /// Ends the wait; prints how it went.
    pub fn finish(self, ok: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let outcome = if ok { "done" } else { "failed" };
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
        eprintln!("{}: {outcome} in {secs:.1} s", self.what);
    }
}

/// Runs a job whose progress the node streams: `f` gets a callback for each progress line.
/// On a terminal the steps show as a spinner's message and byte counts as a bar; otherwise
/// each step is one plain line.
pub fn follow<T>(
    what: &str,
    f: impl FnOnce(&mut dyn FnMut(&Value)) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let w = Waiting::start(what);
    let spinner = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
        .expect("a valid template");
    let bar = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec})",
    )
    .expect("a valid template");
    let mut in_bar = false;
    let mut on_event = |v: &Value| match (v["event"].as_str(), &w.bar) {
        (Some("step"), Some(b)) => {
            if in_bar {
                b.set_style(spinner.clone());
                in_bar = false;
            }
            b.set_message(format!("{what}: {}", v["what"].as_str().unwrap_or("")));
        }
        (Some("step"), None) => eprintln!("{what}: {}", v["what"].as_str().unwrap_or("")),
        (Some("bytes"), Some(b)) => {
            if !in_bar {
                b.set_style(bar.clone());
                in_bar = true;
            }
            b.set_length(v["total"].as_u64().unwrap_or(0));
            b.set_position(v["done"].as_u64().unwrap_or(0));
        }
        _ => {}
    };
    let r = f(&mut on_event);
    w.finish(r.is_ok());
    r
}

/// Runs `f` with a spinner.
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
