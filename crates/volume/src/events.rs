//! What a volume reports: snapshot deletions (and why), shadow storage filling up, failures to
//! preserve. The node's event log subscribes; nothing is ever dropped silently.

use std::sync::mpsc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a snapshot was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// An administrator or the provider's caller asked for it.
    Requested,
    /// A non-persistent snapshot's set was released (the backup ended).
    Released,
    /// A write needed shadow storage beyond its maximum size: the oldest snapshot made room.
    Overflow,
    /// A non-persistent snapshot found when the volume was opened after a restart or crash.
    Restart,
    /// Preserving a block failed (e.g. the shadow-storage device is full or failing): the
    /// snapshot can no longer be exact, so it is removed and the live write proceeds.
    PreservationFailed,
}

/// An event of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum VolumeEvent {
    SnapshotCreated {
        volume: Uuid,
        snapshot: Uuid,
        set: Uuid,
        persistent: bool,
    },
    SnapshotDeleted {
        volume: Uuid,
        snapshot: Uuid,
        reason: DeleteReason,
        bytes_freed: u64,
    },
    /// Shadow storage passed 90% of its maximum.
    ShadowStorageNearFull {
        volume: Uuid,
        used: u64,
        max: u64,
    },
    /// Preserving a block into a snapshot's diff area failed; the snapshot is deleted next.
    PreservationFailed {
        volume: Uuid,
        snapshot: Uuid,
        error: String,
    },
}

/// Events kept for the first subscriber (those of opening the volume happen before anyone can
/// subscribe).
const BACKLOG: usize = 1024;

#[derive(Debug, Default)]
struct Subs {
    senders: Vec<mpsc::Sender<VolumeEvent>>,
    backlog: Vec<VolumeEvent>,
    ever_subscribed: bool,
}

/// Subscribers of one volume.
#[derive(Debug, Default)]
pub struct EventHub {
    subs: Mutex<Subs>,
}

impl EventHub {
    /// A new receiver of every later event; the first subscriber also receives the events sent
    /// before it subscribed (up to 1024).
    pub fn subscribe(&self) -> mpsc::Receiver<VolumeEvent> {
        let (tx, rx) = mpsc::channel();
        let mut s = self.subs.lock();
        if !s.ever_subscribed {
            s.ever_subscribed = true;
            for ev in s.backlog.drain(..) {
                let _ = tx.send(ev);
            }
        }
        s.senders.push(tx);
        rx
    }

    /// Sends `ev` to every live subscriber (and logs it).
    pub fn emit(&self, ev: VolumeEvent) {
        tracing::info!(event = ?ev, "volume event");
        let mut s = self.subs.lock();
        if !s.ever_subscribed {
            if s.backlog.len() < BACKLOG {
                s.backlog.push(ev);
            }
            return;
        }
        s.senders.retain(|tx| tx.send(ev.clone()).is_ok());
    }
}
