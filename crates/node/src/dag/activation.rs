//! This node's side of who is active: claiming a storage group nobody holds, mounting it only
//! under the epoch the cluster database names, activating a passive copy when the primary active
//! manager moves the storage group here, closing the log for a switchover away from here, and
//! setting aside the files of a storage group that was moved away while this node held it.
//!
//! The rule that keeps two nodes from taking mail for one storage group: a node mounts a
//! storage group only when `active/<sg>` names it, and (for files it mounted before) only at the
//! epoch of its own marker ([`super::marker`]). Every change of active bumps the epoch through a
//! compare-and-swap, so a node whose marker is older knows it was replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::EventSink;
use replication::cluster::ActiveRecord;
use serde_json::json;

use super::marker::{self, ActiveMarker, Location};
use super::{Dag, copy_dir};

/// A storage group that failed to mount is tried again after this long (each failure is an
/// event: not every tick).
const MOUNT_RETRY: Duration = Duration::from_secs(10);
/// A switchover that did not complete within this long gives the storage group back to the
/// node that closed its log for it (the primary active manager died, or the target failed).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an activation waits for the copy to fetch the last logs the old active still
/// serves.
const LAST_LOGS_WAIT: Duration = Duration::from_secs(5);
/// How long a returning old active waits for the new active to record its epoch's first
/// generation before it sets its files aside without knowing what was lost.
const SINCE_WAIT: Duration = Duration::from_secs(30);
/// How long a woken copy takes, at most, for a round against the old active (it asks at once
/// when woken; a dead node refuses the connection at once).
const FRESH_ROUND: Duration = Duration::from_millis(600);

/// What an activation of a passive copy did.
#[derive(Debug, Clone)]
pub struct Activated {
    pub first_generation: u32,
}

impl Dag {
    fn data_dir(&self) -> std::path::PathBuf {
        self.node.config().node.data_dir.clone()
    }

    /// Claims the storage groups this node defines that nobody holds yet (epoch 1, or one past
    /// a marker of an older cluster database). Returns whether it wrote.
    pub(super) async fn claim_unheld(
        &self,
        actives: &[(String, ActiveRecord)],
    ) -> Result<bool, replication::cluster::ClusterError> {
        let mut wrote = false;
        for sg in self.node.store().storage_groups() {
            let name = sg.name().to_string();
            if actives.iter().any(|(n, _)| n == &name) {
                continue;
            }
            let old = marker::load(&self.data_dir(), &name).ok().flatten();
            let mut mine = ActiveRecord::first(self.me());
            if let Some(m) = &old {
                mine.epoch = m.epoch + 1;
            }
            wrote = true;
            if !self.cluster.set_active_if(&name, None, &mine).await? {
                continue; // Another member claimed it first: seen at the next tick.
            }
            let location = old.map(|m| m.location).unwrap_or(Location::Config);
            let m = ActiveMarker { sg: name.clone(), epoch: mine.epoch, location };
            if let Err(e) = marker::save(&self.data_dir(), &m) {
                tracing::error!(sg = %name, "recording the active epoch: {e}");
            }
        }
        Ok(wrote)
    }

    /// `rec` names this node: mount the storage group under its epoch (activating the passive
    /// copy here when the epoch is new to this node). Returns the storage group when mounted.
    pub(super) async fn be_active(
        self: &Arc<Self>,
        name: &str,
        rec: &ActiveRecord,
    ) -> Option<Arc<store::StorageGroup>> {
        if self.fenced.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let handing_over = self.handing_over.lock().get(name).copied();
        if let Some((epoch, since)) = handing_over
            && epoch == rec.epoch
            && since.elapsed() < HANDOVER_TIMEOUT
        {
            return None; // Closed for a switchover that is under way.
        }
        self.handing_over.lock().remove(name);
        let data_dir = self.data_dir();
        let current = match marker::load(&data_dir, name) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(sg = %name, "{e}");
                return None;
            }
        };
        let current = match current {
            Some(m) if m.epoch >= rec.epoch => m,
            Some(_) | None if self.has_copy(name) || self.seed_manifest_on_disk(name).is_some() => {
                // The primary active manager moved the storage group here.
                let d = self.clone();
                let (n, r) = (name.to_string(), rec.clone());
                let activated = tokio::task::spawn_blocking(move || d.activate_copy(&n, &r)).await;
                match activated {
                    Ok(Ok(a)) => {
                        self.pending_since.lock().insert(name.to_string(), a.first_generation);
                        self.record_since(name, rec).await;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(sg = %name, "activating the copy: {e}");
                        *self.activation_error.lock() = Some((name.to_string(), e));
                    }
                    Err(e) => tracing::error!(sg = %name, "activating the copy: {e}"),
                }
                return self.node.store().storage_group(name).ok().filter(|g| g.is_mounted());
            }
            None if self.node.store().storage_group(name).is_ok() => {
                // Held before this node kept markers (or claimed and the marker write was
                // lost): its configured files are the active's.
                let m = ActiveMarker {
                    sg: name.to_string(),
                    epoch: rec.epoch,
                    location: Location::Config,
                };
                if let Err(e) = marker::save(&data_dir, &m) {
                    tracing::error!(sg = %name, "recording the active epoch: {e}");
                    return None;
                }
                m
            }
            _ => {
                *self.activation_error.lock() = Some((
                    name.to_string(),
                    format!(
                        "storage group {name} is assigned to node {} (epoch {}) but the node holds no seeded copy of it",
                        self.me(),
                        rec.epoch
                    ),
                ));
                return None;
            }
        };
        let group = match self.group_at(name, current.location) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(sg = %name, "{e}");
                return None;
            }
        };
        if !group.is_mounted() && self.mounted_epochs.lock().get(name) == Some(&rec.epoch) {
            // Mounted under this epoch before and dismounted since by an administrator (a
            // fence or a switchover clears this): left dismounted.
            return None;
        }
        if !group.is_mounted() {
            let due = self.mount_tried.lock().get(name).is_none_or(|t| t.elapsed() >= MOUNT_RETRY);
            if due {
                self.mount_tried.lock().insert(name.to_string(), Instant::now());
                let g = group.clone();
                let mounted = tokio::task::spawn_blocking(move || g.mount()).await;
                if let Ok(Err(e)) = mounted {
                    tracing::error!(sg = %name, "mounting the active copy: {e}");
                }
            }
        }
        if group.is_mounted() {
            self.mounted_epochs.lock().insert(name.to_string(), rec.epoch);
            self.sealed.lock().remove(name);
            self.mount_tried.lock().remove(name);
            self.epochs.lock().insert(name.to_string(), rec.epoch);
            Some(group)
        } else {
            None
        }
    }

    /// Whether an administrator may mount `name` here: only where the cluster database names
    /// this node active (at the epoch it holds), never while it is fenced. A storage group
    /// the cluster database does not know is this node's own.
    pub(crate) async fn may_mount(&self, name: &str) -> Result<(), crate::api::error::ApiError> {
        use axum::http::StatusCode;
        let refuse =
            |why: String| crate::api::error::ApiError::new(StatusCode::CONFLICT, "not_active", why);
        if self.fenced.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(refuse(format!(
                "node {} cannot renew its lease in the cluster database (fenced): it mounts nothing",
                self.me()
            )));
        }
        let rec = self.cluster.active(name).await.map_err(|e| {
            crate::api::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unreachable",
                e.to_string(),
            )
        })?;
        let Some(rec) = rec else { return Ok(()) };
        if rec.node != self.me() {
            return Err(refuse(format!(
                "storage group {name} is active on node {} (epoch {}): a copy here must not take mail; use `copy activate` to move it",
                rec.node, rec.epoch
            )));
        }
        let held = marker::load(&self.data_dir(), name).ok().flatten().map(|m| m.epoch);
        if held.is_some_and(|e| e < rec.epoch) {
            return Err(refuse(format!(
                "this node's files of {name} are from epoch {} but the storage group moved on to epoch {}",
                held.unwrap_or(0),
                rec.epoch
            )));
        }
        // An administrator's mount: the reconciler keeps it mounted again.
        self.mounted_epochs.lock().remove(name);
        Ok(())
    }

    /// Records in the active record the first generation of the epoch this node activated
    /// (a node that held the storage group before reports from it what it lost); retried
    /// every tick until etcd took it.
    pub(super) async fn record_since(&self, name: &str, rec: &ActiveRecord) {
        let Some(first) = self.pending_since.lock().get(name).copied() else { return };
        if rec.since_generation != 0 {
            self.pending_since.lock().remove(name);
            return;
        }
        match self.cluster.update_active_since(name, rec, first).await {
            Ok(_) => {
                self.pending_since.lock().remove(name);
            }
            Err(e) => tracing::warn!(sg = %name, "recording the epoch's first generation: {e}"),
        }
    }

    /// The store's storage group `name` with its files at `location`, replacing a definition
    /// that points elsewhere (a node that activated its copy has the storage group's configured
    /// directories too, set aside or stale).
    fn group_at(&self, name: &str, location: Location) -> Result<Arc<store::StorageGroup>, String> {
        let store = self.node.store();
        let existing = store.storage_group(name).ok();
        match location {
            Location::Config => existing.ok_or_else(|| {
                format!("storage group {name} is not defined in this node's configuration")
            }),
            Location::Copy => {
                let dir = copy_dir(name);
                if let Some(g) = &existing
                    && g.def().system_dir == dir
                {
                    return Ok(g.clone());
                }
                let def = self.replica_def_on_disk(name).ok_or_else(|| {
                    format!("the copy of {name} in {} has no seed record", dir.display())
                })?;
                if let Some(g) = existing {
                    if g.is_mounted() {
                        g.dismount(true).map_err(|e| e.to_string())?;
                    }
                    store.remove_storage_group(name).map_err(|e| e.to_string())?;
                    self.limited.lock().remove(name);
                }
                let g = store.add_storage_group(def).map_err(|e| e.to_string())?;
                Ok(g)
            }
        }
    }

    /// Mounts this node's passive copy of `name` as the active, under `rec`'s epoch. Blocking.
    fn activate_copy(
        self: &Arc<Self>,
        name: &str,
        rec: &ActiveRecord,
    ) -> Result<Activated, String> {
        let running = self.copies.lock().remove(name);
        if running.as_ref().is_some_and(|c| c.seed_manifest().is_none())
            || (running.is_none() && self.seed_manifest_on_disk(name).is_none())
        {
            if let Some(c) = running {
                c.stop();
            }
            return Err(format!("the copy of {name} on {} was never seeded", self.me()));
        }
        // Not running: an activation cut off by a crash, done again from the files.
        let mut acknowledged = None;
        if let Some(copy) = running {
            acknowledged = Some(self.drain_then_stop(copy));
        }
        self.finish_activation(name, rec, acknowledged)
    }

    /// Lets a running copy fetch the last logs the old active still serves, then stops it;
    /// returns the furthest position it held durably (and so may have acknowledged).
    fn drain_then_stop(&self, copy: replication::copy::PassiveCopy) -> ese::Lsn {
        // What the old active still serves (it closed its log when it fenced itself, or it
        // only lost the cluster database) is fetched by the copy itself while it runs: give
        // it until the copy has everything the old active said it closed, or it cannot reach
        // it.
        let started = Instant::now();
        loop {
            copy.wake();
            let r = copy.report();
            // A report from before the wake may be stale: trust it only once the copy had
            // time for a round of its own against the old active.
            let fresh = started.elapsed() >= FRESH_ROUND;
            let reachable = r.status != replication::cluster::CopyStatus::Disconnected;
            let drained = r.last_inspected_generation >= r.produced;
            if (fresh && (!reachable || drained)) || started.elapsed() >= LAST_LOGS_WAIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let held = copy.report().durable;
        copy.stop();
        held
    }

    /// Activates the copy of `name` from its files. `acknowledged`: the furthest position
    /// the running copy held durably, checked against what activation finds in its log.
    fn finish_activation(
        &self,
        name: &str,
        rec: &ActiveRecord,
        acknowledged: Option<ese::Lsn>,
    ) -> Result<Activated, String> {
        let dir = copy_dir(name);
        self.admit_tail(name, &dir);
        let group = self.group_at(name, Location::Copy)?;
        let settings = self.settings_seen.lock().get(name).cloned().unwrap_or_default();
        let read_at = self.settings_read.lock().unwrap_or_else(Instant::now);
        let members = self.seen.lock().members.clone();
        self.gate_commits(&group, &settings, &members, read_at);
        let pchk = dir.join(format!("{}.pchk", group.def().prefix));
        let a = group.mount_activated(&pchk).map_err(|e| e.to_string())?;
        // The copy acknowledged the bytes it held: activation must have found whole records
        // up to there. Less means a commit the old active was told was replicated is not
        // here; say so loudly rather than let it pass unseen.
        if let (Some(held), Some(p)) = (acknowledged, &a.partial_log)
            && held.generation() == p.generation
            && u64::from(held.offset()) > u64::from(p.valid_end)
        {
            tracing::error!(sg = %name, %held, valid_end = p.valid_end, torn = p.torn,
                "activation: the copy held its log durably to {held} but found valid records only to offset {:#X} of that generation", p.valid_end);
        }
        let m = ActiveMarker { sg: name.to_string(), epoch: rec.epoch, location: Location::Copy };
        marker::save(&self.data_dir(), &m)
            .map_err(|e| format!("recording the active epoch: {e}"))?;
        self.epochs.lock().insert(name.to_string(), rec.epoch);
        self.node.events().emit(
            &events::catalog::REPL_ACTIVATED,
            None,
            json!({"sg": name, "node": self.me(), "epoch": rec.epoch,
                   "last": a.last_generation_replayed, "first": a.first_generation}),
        );
        Ok(Activated { first_generation: a.first_generation })
    }

    /// Block mode leaves the old active's current generation, as far as it reached this copy,
    /// in `tail/<prefix>.log` (and a generation that closed meanwhile under its closed name,
    /// until the copier has it in the inbox): activation replays them too, so they are moved
    /// into the inbox — the partial one under the current log's name — and every record they
    /// hold is kept.
    fn admit_tail(&self, name: &str, dir: &std::path::Path) {
        let Some(manifest) = self.seed_manifest_on_disk(name) else { return };
        let fs = &self.copy_fs;
        let (tail, inbox) = (dir.join("tail"), dir.join("inbox"));
        let Ok(entries) = fs.read_dir(&tail) else { return };
        let current = ese::logfmt::current_name(&manifest.prefix);
        let mut names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
        // Closed generations first: the partial one must follow the last of them.
        names.sort_by_key(|n| *n == current);
        for n in names {
            let closed = ese::logfmt::parse_generation_name(&manifest.prefix, &n).is_some();
            if !closed && n != current {
                continue;
            }
            let to = inbox.join(&n);
            if closed && fs.exists(&to).unwrap_or(false) {
                continue;
            }
            if let Err(e) = fs.rename(&tail.join(&n), &to) {
                tracing::warn!(sg = %name, file = %n, "admitting the block-mode tail: {e}");
            }
        }
        let _ = fs.sync_dir(&inbox);
    }

    /// The seed manifest recorded in `copies/<sg>/seed.json`, read from disk (the copy need
    /// not be running: an activated copy is not).
    pub(super) fn seed_manifest_on_disk(
        &self,
        sg: &str,
    ) -> Option<replication::protocol::SeedManifest> {
        let bytes =
            volume::fs::read_all(self.copy_fs.as_ref(), &copy_dir(sg).join("seed.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(v.get("manifest")?.clone()).ok()
    }

    /// `rec` names another node. A storage group mounted here is dismounted; files this node
    /// mounted under an older epoch are set aside (they may hold generations the new active
    /// never had) and the divergence reported.
    pub(super) async fn be_passive(self: &Arc<Self>, name: &str, rec: &ActiveRecord) {
        self.epochs.lock().remove(name);
        self.forget_followers(name);
        if let Ok(sg) = self.node.store().storage_group(name)
            && sg.is_mounted()
        {
            let g = sg.clone();
            // A passive's surrogate backup of it here ends first: it could no longer be
            // recorded, and its claim would keep the storage group mounted.
            let (claims, node) = (self.claims.clone(), self.node.clone());
            let dismounted = tokio::task::spawn_blocking(move || {
                claims.abort_all(&node, g.name(), "the storage group is active elsewhere");
                g.dismount(true)
            })
            .await;
            if matches!(dismounted, Ok(Ok(()))) {
                self.node.events().emit(
                    &events::catalog::REPL_ACTIVE_ELSEWHERE,
                    None,
                    json!({"sg": name, "active": rec.node, "epoch": rec.epoch}),
                );
            }
        }
        let old = match marker::load(&self.data_dir(), name) {
            Ok(Some(m)) if m.epoch < rec.epoch => m,
            _ => return,
        };
        // What was lost is counted from the new epoch's first generation: wait a while for
        // the new active to record it.
        if rec.since_generation == 0 {
            let first_seen =
                *self.since_wait.lock().entry(name.to_string()).or_insert_with(Instant::now);
            if first_seen.elapsed() < SINCE_WAIT {
                return;
            }
        }
        self.since_wait.lock().remove(name);
        let d = self.clone();
        let (n, r) = (name.to_string(), rec.clone());
        let set_aside = tokio::task::spawn_blocking(move || d.set_aside(&n, &r, &old)).await;
        match set_aside {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(sg = %name, "setting aside the old active's files: {e}"),
            Err(e) => tracing::error!(sg = %name, "setting aside the old active's files: {e}"),
        }
    }

    /// Moves the files this node held `name` active in (under `old`'s epoch) to a `diverged/`
    /// directory of their volumes, reports which generations the new active never had, and
    /// forgets the marker: the copy record of this node then seeds a fresh passive copy.
    fn set_aside(&self, name: &str, rec: &ActiveRecord, old: &ActiveMarker) -> Result<(), String> {
        self.sealed.lock().remove(name);
        self.handing_over.lock().remove(name);
        let store = self.node.store();
        let group = match old.location {
            Location::Config => store.storage_group(name).ok(),
            Location::Copy => self.group_at(name, Location::Copy).ok(),
        };
        let tag = format!("diverged/{name}-epoch{}-{}", old.epoch, events::now_ms());
        let mut moved = Vec::new();
        let mut last = 0u32;
        if let Some(g) = &group {
            if g.is_mounted() {
                g.dismount(true).map_err(|e| e.to_string())?;
            }
            let def = g.def();
            let fs = def.log_volume.fs.clone();
            if let Ok(logs) = ese::logfmt::list_logs(fs.as_ref(), &def.log_dir, &def.prefix) {
                last = logs.iter().map(|l| l.header.generation).max().unwrap_or(0);
            }
            let to = std::path::Path::new(&tag);
            match old.location {
                Location::Copy => {
                    fs.create_dir_all(std::path::Path::new("diverged"))
                        .map_err(|e| e.to_string())?;
                    fs.rename(&copy_dir(name), to)
                        .map_err(|e| format!("{}: {e}", copy_dir(name).display()))?;
                    moved.push(format!("{}:{tag}", def.log_volume.label));
                }
                Location::Config => {
                    let mut dirs = vec![def.log_dir.clone()];
                    if def.system_dir != def.log_dir {
                        dirs.push(def.system_dir.clone());
                    }
                    for (i, dir) in dirs.iter().enumerate() {
                        if fs.exists(dir).unwrap_or(false) {
                            fs.create_dir_all(to).map_err(|e| e.to_string())?;
                            let dest = to.join(format!("dir{i}"));
                            fs.rename(dir, &dest).map_err(|e| format!("{}: {e}", dir.display()))?;
                        }
                    }
                    for db in &def.databases {
                        let dfs = &db.volume.fs;
                        if dfs.exists(&db.path).unwrap_or(false) {
                            dfs.create_dir_all(to).map_err(|e| e.to_string())?;
                            let dest = to.join(format!("{}.edb", db.name));
                            dfs.rename(&db.path, &dest)
                                .map_err(|e| format!("{}: {e}", db.path.display()))?;
                        }
                    }
                    moved.push(format!("{}:{tag}", def.log_volume.label));
                }
            }
            if old.location == Location::Copy || store.storage_group(name).is_ok() {
                // The definition points at files that are gone: the copy takes over.
                let _ = store.remove_storage_group(name);
                self.limited.lock().remove(name);
            }
        }
        let since = rec.since_generation;
        let (lost, count) = if since > 0 && last >= since {
            (format!("{since:#X}-{last:#X}"), last - since + 1)
        } else {
            ("none".to_string(), 0)
        };
        marker::remove(&self.data_dir(), name).map_err(|e| e.to_string())?;
        self.node.events().emit(
            &events::catalog::REPL_DIVERGED,
            None,
            json!({"sg": name, "active": rec.node, "epoch": rec.epoch, "old_epoch": old.epoch,
                   "set_aside": if moved.is_empty() { "(nothing to move)".to_string() } else { moved.join(", ") },
                   "lost": lost, "lost_count": count}),
        );
        Ok(())
    }

    /// Closes the log of `name` for a switchover to `to`: the storage group stops taking
    /// commits, every record is in a closed generation, and the node answers its copies for
    /// the closed generations while dismounted. Returns the last generation.
    pub(crate) fn hand_over(&self, name: &str, epoch: u64, to: &str) -> Result<u32, String> {
        // Not an administrator's dismount: taken back after a failed switchover, it mounts.
        self.mounted_epochs.lock().remove(name);
        self.handing_over.lock().insert(name.to_string(), (epoch, Instant::now()));
        self.claims.abort_all(&self.node, name, "the storage group is being moved to another node");
        match self.seal(name) {
            Ok(generation) => {
                self.node.events().emit(
                    &events::catalog::REPL_HANDED_OVER,
                    None,
                    json!({"sg": name, "to": to, "generation": generation}),
                );
                Ok(generation)
            }
            Err(e) => {
                self.handing_over.lock().remove(name);
                Err(e)
            }
        }
    }

    /// Dismounts `name` with its log closed (every acknowledged record in a closed
    /// generation), and keeps answering its copies for those generations while it stays
    /// dismounted. Returns the last generation.
    pub(crate) fn seal(&self, name: &str) -> Result<u32, String> {
        let g = self.node.store().storage_group(name).map_err(|e| e.to_string())?;
        let inst = g.instance().map_err(|e| e.to_string())?;
        let def = g.def();
        let oldest = g.log_state().ok().and_then(|l| l.generations.first().copied()).unwrap_or(0);
        let signature = replication::protocol::hex(&inst.signature());
        drop(inst);
        let sealed = g.dismount_sealed();
        match sealed {
            Ok(generation) => {
                let info = replication::protocol::StreamInfo {
                    sg: name.to_string(),
                    prefix: def.prefix.clone(),
                    signature,
                    produced: generation,
                    oldest: if oldest == 0 { generation } else { oldest },
                    node: self.me().to_string(),
                    epoch: self.epochs.lock().get(name).copied().unwrap_or(0),
                };
                self.sealed.lock().insert(name.to_string(), info);
                Ok(generation)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Forgets what the copies acknowledged into the commit gate of `name`: positions in a
    /// history this node no longer writes (dismounted, fenced, moved) must not count later.
    pub(super) fn forget_followers(&self, name: &str) {
        if let Some(g) = self.gates.lock().get(name).cloned() {
            for peer in g.status().peers.keys() {
                g.forget(peer);
            }
        }
    }

    /// Takes `name` back after a switchover away from here failed (the next tick mounts it).
    pub(crate) fn take_back(&self, name: &str) {
        self.mounted_epochs.lock().remove(name);
        self.handing_over.lock().remove(name);
        self.sealed.lock().remove(name);
        self.mount_tried.lock().remove(name);
        self.kick.notify_one();
    }
}
