//! Where each flush-and-hold went: the software provider logs the hold's steps (drain of the
//! writes in flight, preparing the snapshots and any rescan, the nested work) as fields of its
//! "snapshot set committed" event; this layer collects them, so a bench can explain a long
//! hold by its parts instead of guessing.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

use crate::args::latency_summary;

/// One hold, in milliseconds (and how many volumes were rescanned).
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    pub hold: f64,
    pub drain: f64,
    pub prepare: f64,
    pub rescan: f64,
    pub within: f64,
    pub rescanned: u64,
}

impl Visit for Parts {
    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            "hold_ms" => self.hold = value,
            "drain_ms" => self.drain = value,
            "prepare_ms" => self.prepare = value,
            "rescan_ms" => self.rescan = value,
            "within_ms" => self.within = value,
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rescanned" {
            self.rescanned = value;
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// The collected holds; cloned handles share them.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Parts>>>);

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    /// Only the hold's own event is of interest: every other callsite stays disabled, so the
    /// measured code pays nothing for the recorder.
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if meta.is_event() && meta.fields().field("drain_ms").is_some() {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        meta.is_event() && meta.fields().field("drain_ms").is_some()
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().fields().field("drain_ms").is_none() {
            return;
        }
        let mut parts = Parts::default();
        event.record(&mut parts);
        self.0.lock().push(parts);
    }
}

impl Recorder {
    /// Installs a recorder as this process's subscriber (the bench logs nothing else).
    pub fn install() -> anyhow::Result<Recorder> {
        let recorder = Recorder::default();
        tracing::subscriber::set_global_default(Registry::default().with(recorder.clone()))?;
        Ok(recorder)
    }

    /// p50/p99/max of each part over every hold recorded so far, and the number of holds that
    /// rescanned a volume.
    pub fn summary(&self) -> Value {
        let all = self.0.lock().clone();
        let of = |f: fn(&Parts) -> f64| latency_summary(all.iter().map(f).collect());
        json!({
            "holds": all.len(),
            "drain_ms": of(|p| p.drain),
            "prepare_ms": of(|p| p.prepare),
            "rescan_ms": of(|p| p.rescan),
            "within_ms": of(|p| p.within),
            "holds_with_rescan": all.iter().filter(|p| p.rescanned > 0).count(),
        })
    }
}
