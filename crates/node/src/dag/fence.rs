//! Self-fencing: an active that cannot renew its lease stops taking mail before the lease can
//! lapse.
//!
//! Why before: once the lease lapses, the primary active manager may mount another copy. If
//! this node still took commits then, two databases would accept mail for one storage group and
//! their histories would diverge. etcd counts the lease's time to live from the last renewal it
//! received; this node counts from the last renewal etcd *confirmed*, which is later, so fencing
//! at [`FENCE_AT`] of the time to live leaves a margin for the dismount itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use events::EventSink;
use serde_json::json;
use tokio::sync::watch;

use super::Dag;

/// How often the lease's age is checked.
const CHECK: Duration = Duration::from_millis(100);
/// The fraction of the lease's time to live after which an active dismounts, in percent.
pub const FENCE_AT: u32 = 70;

impl Dag {
    /// Watches the member lease: past [`FENCE_AT`] % of its time to live without a confirmed
    /// renewal, every storage group mounted here is dismounted (and kept so while it lasts);
    /// once renewals come back, the reconciler mounts again what the cluster database still
    /// names this node active for, at the epoch of its marker.
    pub(super) async fn fence_forever(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(CHECK) => {}
                _ = shutdown.changed() => return,
            }
            let Some((age, ttl)) =
                self.lease.lock().as_ref().map(|l| (l.last_renewed().elapsed(), l.ttl()))
            else {
                continue;
            };
            let limit = ttl * FENCE_AT / 100;
            if age >= limit {
                let first = !self.fenced.swap(true, Ordering::SeqCst);
                let mounted: Vec<_> = self
                    .node
                    .store()
                    .storage_groups()
                    .into_iter()
                    .filter(|g| g.is_mounted())
                    .collect();
                for g in mounted {
                    let d = self.clone();
                    let group = g.clone();
                    // Sealed: the last generation is closed, so the copies (still reachable
                    // over the replication network, perhaps) fetch every acknowledged commit.
                    let done = tokio::task::spawn_blocking(move || {
                        d.claims.abort_all(&d.node, group.name(), "this node fenced itself");
                        d.seal(group.name()).map(|_| ()).or_else(|sealing| {
                            group.dismount(true).map_err(|e| {
                                format!("closing the log: {sealing}; dismounting: {e}")
                            })
                        })
                    })
                    .await;
                    self.mounted_epochs.lock().remove(g.name());
                    self.forget_followers(g.name());
                    match &done {
                        // Copies keep refusing an older epoch only while it is known here.
                        Ok(Ok(())) => {
                            self.epochs.lock().remove(g.name());
                        }
                        Ok(Err(e)) => tracing::error!(sg = %g.name(), "fencing: {e}"),
                        Err(e) => tracing::error!(sg = %g.name(), "fencing: {e}"),
                    }
                    if matches!(done, Ok(Ok(()))) {
                        self.node.events().emit(
                            &events::catalog::REPL_FENCED,
                            None,
                            json!({"node": self.me(), "sg": g.name(),
                                   "age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX)}),
                        );
                    }
                }
                if first {
                    tracing::error!(age_ms = age.as_millis(), "lease not renewed: fenced");
                }
            } else if age < limit / 2 && self.fenced.swap(false, Ordering::SeqCst) {
                tracing::info!("lease renewed again: no longer fenced");
                self.kick.notify_one();
            }
        }
    }
}
