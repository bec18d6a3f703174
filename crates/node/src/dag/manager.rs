//! The primary active manager: one member at a time (etcd's election) decides which copy of
//! each storage group is active — a failover when the active's node lost its lease, a
//! switchover when an administrator asks.
//!
//! It only ever *decides*, by one compare-and-swap of `active/<sg>` to the next epoch; the
//! chosen node activates its copy itself when its reconciler sees the record
//! ([`super::activation`]). So a manager that dies after deciding leaves nothing half done: the
//! target activates anyway, and a manager that dies before deciding is replaced by another
//! member that decides again from what etcd holds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use events::EventSink;
use replication::client::ClientError;
use replication::cluster::{ActiveRecord, ClusterError, CopyStatus, Member, MountDial, SgSettings};
use serde_json::json;
use tokio::sync::watch;

use super::peer_api::{self, CopyPosition};
use super::{Dag, TICK};
use crate::api::error::ApiError;

/// How long a switchover waits for the target to replay the old active's last generation.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a switchover waits for the target to mount.
const MOUNT_WAIT: Duration = Duration::from_secs(30);
/// How long a member may take to answer where its copy is.
const POSITION_TIMEOUT: Duration = Duration::from_millis(1500);

/// A copy the manager may activate, and how far it is.
#[derive(Debug, Clone)]
struct Candidate {
    node: String,
    preference: u32,
    healthy: bool,
    status: String,
    inspected: u32,
    replayed: u32,
    /// The furthest log position durable on the copy (block mode), as a raw LSN.
    durable: u64,
    /// Suspended by an administrator: it neither acknowledges commits nor may be activated.
    suspended: bool,
    /// Whether the member said where its copy is now; if not, the figures above are the
    /// last it reported to the cluster database, and may be behind.
    answered: bool,
}

impl Dag {
    /// Campaigns to be the primary active manager while this member runs; while it is, runs
    /// [`Dag::manager_tick`] every tick.
    pub(super) async fn manage_forever(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let lease = self.lease.lock().as_ref().map(|l| l.lease_id());
            let Some(lease) = lease else {
                tokio::select! {
                    () = tokio::time::sleep(TICK) => continue,
                    _ = shutdown.changed() => return,
                }
            };
            let campaign = tokio::select! {
                r = self.cluster.campaign_primary(self.me(), lease) => r,
                _ = shutdown.changed() => return,
            };
            let handle = match campaign {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("campaigning for primary active manager: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(TICK) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            self.primary.store(true, Ordering::SeqCst);
            self.node.events().emit(
                &events::catalog::REPL_PRIMARY_MANAGER,
                None,
                json!({"node": self.me(), "dag": self.cfg.name}),
            );
            loop {
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    _ = shutdown.changed() => {
                        self.primary.store(false, Ordering::SeqCst);
                        let _ = self.cluster.resign_primary(handle).await;
                        return;
                    }
                }
                let same_lease = self.lease.lock().as_ref().map(|l| l.lease_id()) == Some(lease);
                if !same_lease || !matches!(self.cluster.still_primary(&handle).await, Ok(true)) {
                    break;
                }
                if let Err(e) = self.manager_tick().await {
                    tracing::warn!("primary active manager: {e}");
                }
            }
            self.primary.store(false, Ordering::SeqCst);
        }
    }

    /// Whether this member is the primary active manager now.
    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::SeqCst)
    }

    /// One round of the manager: every storage group whose active node lost its lease fails
    /// over (or stays dismounted, with why).
    async fn manager_tick(self: &Arc<Self>) -> Result<(), ClusterError> {
        let actives = self.cluster.actives().await?;
        let members = self.cluster.members().await?;
        for (sg, rec) in &actives {
            if members.iter().any(|m| m.node == rec.node) {
                self.refusals.lock().remove(sg);
                continue;
            }
            if self.switching.lock().contains(sg) {
                continue;
            }
            self.fail_over(sg, rec, &members).await?;
        }
        Ok(())
    }

    /// The copies of `sg` other than on `except`, with where each is: asked of each member
    /// (fresh), or as last reported in the cluster database when it does not answer.
    async fn candidates(
        &self,
        sg: &str,
        except: &str,
        members: &[Member],
    ) -> Result<Vec<Candidate>, ClusterError> {
        let copies = self.cluster.copies(Some(sg)).await?;
        let states = self.cluster.states(Some(sg)).await?;
        let mut out = Vec::new();
        for c in copies.iter().filter(|c| c.node != except) {
            let Some(m) = members.iter().find(|m| m.node == c.node) else { continue };
            let reported = states.iter().find(|s| s.node == c.node);
            let asked = self.ask_position_of(&m.node, &m.replication, sg).await;
            // "Runs no copy" is an answer; a timeout or a broken connection is not.
            let answered = match &asked {
                Ok(_) => true,
                Err(e) => e.is_not_found(),
            };
            let (status, inspected, replayed, durable) = match (&asked, reported) {
                (Ok(p), _) => (p.status, p.inspected, p.replayed, p.durable),
                (Err(_), Some(s)) => {
                    (s.status, s.last_inspected_generation, s.last_replayed_generation, 0)
                }
                (Err(_), None) => continue,
            };
            out.push(Candidate {
                node: c.node.clone(),
                preference: c.preference,
                // A copy whose active died reports Disconnected: it is as good as it was.
                healthy: matches!(status, CopyStatus::Healthy | CopyStatus::Disconnected)
                    && c.suspended.is_none(),
                status: match &c.suspended {
                    Some(r) => format!("Suspended ({r})"),
                    None => format!("{status:?}"),
                },
                inspected,
                replayed,
                durable,
                suspended: c.suspended.is_some(),
                answered,
            });
        }
        // Healthy first; then the least missing, the least to replay, the furthest block-mode
        // position, the most preferred.
        out.sort_by_key(|c| {
            (
                !c.healthy,
                std::cmp::Reverse(c.durable),
                std::cmp::Reverse(c.inspected),
                c.inspected.saturating_sub(c.replayed),
                c.preference,
            )
        });
        Ok(out)
    }

    async fn ask_position(&self, node: &str, addr: &str, sg: &str) -> Option<CopyPosition> {
        self.ask_position_of(node, addr, sg).await.ok()
    }

    /// Where `node`'s copy of `sg` is, or why the member did not say (not found: it runs
    /// none).
    async fn ask_position_of(
        &self,
        node: &str,
        addr: &str,
        sg: &str,
    ) -> Result<CopyPosition, ClientError> {
        if node == self.me() {
            return self.position(sg).ok_or_else(|| ClientError::Status {
                node: node.to_string(),
                status: 404,
                what: peer_api::POSITION_PATH.to_string(),
                error: format!("node {node} runs no copy of {sg}"),
            });
        }
        let peer = self.peer(node, addr);
        let req = peer_api::SgRef { sg: sg.to_string() };
        peer.post_alone(peer_api::POSITION_PATH, &req, POSITION_TIMEOUT).await
    }

    /// Where this node's copy of `sg` is now (and wakes it: a switchover waits on it).
    pub(crate) fn position(&self, sg: &str) -> Option<CopyPosition> {
        if self.epochs.lock().contains_key(sg)
            && let Ok(g) = self.node.store().storage_group(sg)
            && g.is_mounted()
        {
            let produced =
                g.log_state().map(|l| l.current_generation.saturating_sub(1)).unwrap_or(0);
            return Some(CopyPosition {
                status: CopyStatus::Mounted,
                inspected: produced,
                replayed: produced,
                produced,
                durable: 0,
                active_here: true,
            });
        }
        let copies = self.copies.lock();
        let c = copies.get(sg)?;
        c.wake();
        let r = c.report();
        Some(CopyPosition {
            status: r.status,
            inspected: r.last_inspected_generation,
            replayed: r.last_replayed_generation,
            produced: r.produced,
            durable: r.durable.0,
            active_here: false,
        })
    }

    /// `sg`'s active node `rec.node` lost its lease: activate the best copy, within the mount
    /// dial, or say why not (once per reason).
    async fn fail_over(
        self: &Arc<Self>,
        sg: &str,
        rec: &ActiveRecord,
        members: &[Member],
    ) -> Result<(), ClusterError> {
        let settings = self.cluster.settings(sg).await?;
        let produced = self.cluster.produced(sg).await?.unwrap_or(0);
        let candidates = self.candidates(sg, &rec.node, members).await?;
        let refuse = |reason: String| {
            let mut refusals = self.refusals.lock();
            if refusals.get(sg) != Some(&reason) {
                refusals.insert(sg.to_string(), reason.clone());
                self.node.events().emit(
                    &events::catalog::REPL_FAILOVER_REFUSED,
                    None,
                    json!({"sg": sg, "from": rec.node, "reason": reason}),
                );
            }
        };
        let (best, missing) = match choose(&candidates, &settings, produced, &rec.node) {
            Ok(chosen) => chosen,
            Err(reason) => {
                refuse(reason);
                return Ok(());
            }
        };
        let next = rec.next(&best.node);
        if self.cluster.fail_over_if(sg, rec, &next).await? {
            self.refusals.lock().remove(sg);
            self.node.events().emit(
                &events::catalog::REPL_FAILOVER,
                None,
                json!({"sg": sg, "from": rec.node, "to": best.node, "epoch": next.epoch,
                       "missing": missing, "produced": produced,
                       "dial": settings.mount_dial.to_string(),
                       "positions": positions(&candidates)}),
            );
            if let Some(m) = members.iter().find(|m| m.node == best.node) {
                self.kick_member(&m.node, &m.replication).await;
            }
        }
        Ok(())
    }

    /// Wakes `node`'s reconciler so that it acts on a decision now rather than at its tick.
    async fn kick_member(&self, node: &str, addr: &str) {
        if node == self.me() {
            self.kick.notify_one();
            return;
        }
        let peer = self.peer(node, addr);
        let _: Result<peer_api::Ack, _> =
            peer.post_alone(peer_api::KICK_PATH, &peer_api::Ack {}, POSITION_TIMEOUT).await;
    }

    /// Moves the active copy of `sg` to `to` with nothing lost (run on the primary active
    /// manager): the old active closes its log and dismounts, `to` replays every generation,
    /// then the epoch moves to `to`, which mounts. Any failure before the move gives the
    /// storage group back to the old active.
    pub(crate) async fn switchover(
        self: &Arc<Self>,
        req: &api::CopyActivate,
    ) -> Result<api::CopyActivated, ApiError> {
        let sg = req.sg.as_str();
        if !self.switching.lock().insert(sg.to_string()) {
            return Err(conflict(format!("a switchover of {sg} is already under way")));
        }
        // Run to its end even if the asking client goes away (a dropped future would leave
        // the old active closed and the storage group marked as moving).
        let (d, r) = (self.clone(), req.clone());
        let result = tokio::spawn(async move { d.switch(&r).await })
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("the switchover failed: {e}"))));
        self.switching.lock().remove(sg);
        if let Err(e) = &result {
            self.node.events().emit(
                &events::catalog::REPL_SWITCHOVER_FAILED,
                None,
                json!({"sg": sg, "from": "", "to": req.node, "error": e.message}),
            );
        }
        result
    }

    async fn switch(
        self: &Arc<Self>,
        req: &api::CopyActivate,
    ) -> Result<api::CopyActivated, ApiError> {
        let (sg, to) = (req.sg.as_str(), req.node.as_str());
        let db = |e: ClusterError| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "etcd_unreachable", e.to_string())
        };
        let Some(rec) = self.cluster.active(sg).await.map_err(db)? else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_storage_group",
                format!("storage group {sg} has no active copy in DAG {}", self.cfg.name),
            ));
        };
        if rec.node == to {
            return Err(conflict(format!(
                "the copy of {sg} on {to} is already the active one (epoch {})",
                rec.epoch
            )));
        }
        let members = self.cluster.members().await.map_err(db)?;
        let Some(target) = members.iter().find(|m| m.node == to).cloned() else {
            return Err(conflict(format!(
                "node {to} is down (its lease in the cluster database lapsed)"
            )));
        };
        let Some(old) = members.iter().find(|m| m.node == rec.node).cloned() else {
            return Err(conflict(format!(
                "the active node of {sg}, {}, is down: the primary active manager fails it over by itself",
                rec.node
            )));
        };
        let copies = self.cluster.copies(Some(sg)).await.map_err(db)?;
        let Some(record) = copies.iter().find(|c| c.node == to) else {
            return Err(conflict(format!(
                "node {to} holds no copy of {sg} (add one with `copy add`)"
            )));
        };
        let first = self.ask_position(to, &target.replication, sg).await;
        if !req.skip_checks {
            if let Some(r) = &record.suspended {
                return Err(conflict(format!(
                    "the copy of {sg} on {to} is suspended ({r}); resume it, or pass --skip-checks"
                )));
            }
            match &first {
                Some(p) if p.status == CopyStatus::Healthy => {}
                Some(p) => {
                    return Err(conflict(format!(
                        "the copy of {sg} on {to} is {:?}, not Healthy (inspected {:#X}, replayed {:#X}); wait for it, or pass --skip-checks",
                        p.status, p.inspected, p.replayed
                    )));
                }
                None => {
                    return Err(conflict(format!(
                        "node {to} does not answer for its copy of {sg}"
                    )));
                }
            }
        }
        let started = Instant::now();
        let old_peer = self.peer(&old.node, &old.replication);
        let hand = peer_api::HandOver { sg: sg.to_string(), epoch: rec.epoch, to: to.to_string() };
        let handed: Result<peer_api::HandedOver, _> = if old.node == self.me() {
            let d = self.clone();
            let (s, t, e) = (sg.to_string(), to.to_string(), rec.epoch);
            tokio::task::spawn_blocking(move || d.hand_over(&s, e, &t))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map(|generation| peer_api::HandedOver { generation })
        } else {
            old_peer
                .post_alone(peer_api::HANDOVER_PATH, &hand, MOUNT_WAIT)
                .await
                .map_err(|e| e.to_string())
        };
        let generation = match handed {
            Ok(h) => h.generation,
            Err(e) => {
                self.give_back(&old, sg).await;
                return Err(conflict(format!(
                    "the active, {}, could not close its log: {e}",
                    old.node
                )));
            }
        };
        // The target fetches and replays up to the last generation.
        let deadline = Instant::now() + CATCH_UP;
        loop {
            match self.ask_position(to, &target.replication, sg).await {
                Some(p) if p.replayed >= generation && p.inspected >= generation => break,
                p if Instant::now() >= deadline => {
                    self.give_back(&old, sg).await;
                    return Err(conflict(format!(
                        "the copy on {to} did not replay generation {generation:#X} within {} s (it is at {}); {} took {sg} back",
                        CATCH_UP.as_secs(),
                        p.map(|p| format!("{:#X}", p.replayed)).unwrap_or_else(|| "unknown".into()),
                        old.node
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        if started.elapsed() + Duration::from_secs(5) > super::activation::HANDOVER_TIMEOUT {
            self.give_back(&old, sg).await;
            return Err(conflict(format!(
                "the switchover took too long ({} s): {} keeps {sg}",
                started.elapsed().as_secs(),
                old.node
            )));
        }
        let mut next = rec.next(to);
        next.since_generation = generation + 1;
        match self.cluster.set_active_if(sg, Some(&rec), &next).await {
            Ok(true) => {}
            Ok(false) => {
                self.give_back(&old, sg).await;
                return Err(conflict(format!(
                    "the active record of {sg} changed meanwhile; nothing moved"
                )));
            }
            Err(e) => {
                self.give_back(&old, sg).await;
                return Err(db(e));
            }
        }
        self.kick_member(to, &target.replication).await;
        let deadline = Instant::now() + MOUNT_WAIT;
        loop {
            match self.ask_position(to, &target.replication, sg).await {
                Some(p) if p.active_here => break,
                _ if Instant::now() >= deadline => {
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "activation_slow",
                        format!(
                            "{sg} moved to {to} (epoch {}) but it has not mounted within {} s; see its events",
                            next.epoch,
                            MOUNT_WAIT.as_secs()
                        ),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let pause_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.node.events().emit(
            &events::catalog::REPL_SWITCHOVER,
            None,
            json!({"sg": sg, "from": old.node, "to": to, "epoch": next.epoch,
                   "generation": generation, "pause_ms": pause_ms}),
        );
        Ok(api::CopyActivated {
            sg: sg.to_string(),
            from: old.node.clone(),
            to: to.to_string(),
            epoch: next.epoch,
            generation,
            pause_ms,
            manager: self.me().to_string(),
        })
    }

    /// A switchover failed before the epoch moved: the old active mounts again.
    async fn give_back(&self, old: &Member, sg: &str) {
        if old.node == self.me() {
            self.take_back(sg);
            return;
        }
        let peer = self.peer(&old.node, &old.replication);
        let req = peer_api::SgRef { sg: sg.to_string() };
        if let Err(e) = peer
            .post_alone::<_, peer_api::Ack>(peer_api::TAKE_BACK_PATH, &req, POSITION_TIMEOUT)
            .await
        {
            tracing::warn!(sg, node = %old.node, "giving the storage group back: {e} (it takes it back by itself after a minute)");
        }
    }
}

/// Where each candidate was when the manager chose, for the failover's event: the durable
/// position it said, or its last report when it did not answer.
fn positions(candidates: &[Candidate]) -> String {
    let each: Vec<String> = candidates
        .iter()
        .map(|c| {
            let durable = ese::Lsn(c.durable);
            let source = if c.answered { "said" } else { "last reported" };
            format!(
                "{} {} durable to {durable}, inspected to {:#X} ({source})",
                c.node, c.status, c.inspected
            )
        })
        .collect();
    each.join("; ")
}

/// The copy a failover activates among `candidates` (ranked best first by
/// [`Dag::candidates`]) and how many closed generations it lacks of the `produced` the dead
/// active `old` published; or why none may be activated now.
fn choose<'c>(
    candidates: &'c [Candidate],
    settings: &SgSettings,
    produced: u32,
    old: &str,
) -> Result<(&'c Candidate, u32), String> {
    // With synchronous copies, an acknowledged commit is on some copies, not all: only the
    // copy furthest along is sure to hold it. A member that did not say where its copy is
    // may be that copy (its last report in the cluster database is older than the commits),
    // so wait for it rather than activate another: the next tick asks again, and a member
    // that is gone stops being a candidate when its lease ends.
    if settings.sync_copies > 0 {
        let silent: Vec<&str> = candidates
            .iter()
            .filter(|c| !c.answered && !c.suspended)
            .map(|c| c.node.as_str())
            .collect();
        if !silent.is_empty() {
            return Err(format!(
                "waiting for {} to say where its copy is (no answer within {POSITION_TIMEOUT:?}): with synchronous copies only the copy furthest along is sure to hold every acknowledged commit",
                silent.join(", ")
            ));
        }
    }
    let Some(best) = candidates.iter().find(|c| c.healthy) else {
        let seen: Vec<String> =
            candidates.iter().map(|c| format!("{} is {}", c.node, c.status)).collect();
        return Err(if seen.is_empty() {
            "no other member that holds a copy is up".to_string()
        } else {
            format!("no copy is healthy ({})", seen.join(", "))
        });
    };
    // Block mode: a copy holding part of generation G has every closed one before it.
    let held = best.inspected.max(ese::Lsn(best.durable).generation().saturating_sub(1));
    let missing = produced.saturating_sub(held);
    if settings.mount_dial == MountDial::Lossless && settings.sync_copies == 0 {
        // Without synchronous copies nobody knows what the dead active acknowledged in its
        // last, open generation: "nothing missing" cannot be vouched for.
        return Err(format!(
            "mount dial lossless needs synchronous copies (sync_copies is 0): what {old} acknowledged in its open generation may be on no copy; activate a copy by hand (`copy activate --skip-checks`) to accept that"
        ));
    }
    if !settings.mount_dial.allows(missing) {
        return Err(format!(
            "the best copy, on {}, lacks {missing} closed generations (inspected to {:#X}, the old active published {produced:#X}); mount dial {} allows {}",
            best.node,
            best.inspected,
            settings.mount_dial,
            settings
                .mount_dial
                .max_missing()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "any".into()),
        ));
    }
    Ok((best, missing))
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "switchover_refused", message)
}

#[cfg(test)]
mod tests {
    use replication::cluster::SyncPolicy;

    use super::*;

    fn copy(node: &str, durable_gen: u32, answered: bool) -> Candidate {
        Candidate {
            node: node.into(),
            preference: 1,
            healthy: true,
            status: "Healthy".into(),
            inspected: durable_gen.saturating_sub(1),
            replayed: durable_gen.saturating_sub(1),
            durable: ese::Lsn::new(durable_gen, 0).0,
            suspended: false,
            answered,
        }
    }

    fn settings(sync_copies: u32) -> SgSettings {
        SgSettings { mount_dial: MountDial::Best, sync_copies, sync_policy: SyncPolicy::Strict }
    }

    #[test]
    fn with_synchronous_copies_a_silent_member_is_waited_for() {
        // b did not answer (its figures are its last report); c answered and looks further.
        let mut b = copy("b", 0, false);
        b.inspected = 5;
        let ranked = [copy("c", 9, true), b];
        let why = choose(&ranked, &settings(1), 9, "a").unwrap_err();
        assert!(why.contains("waiting for b"), "{why}");
        // Once b answers, the furthest copy is chosen.
        let ranked = [copy("b", 10, true), copy("c", 9, true)];
        let (best, missing) = choose(&ranked, &settings(1), 9, "a").unwrap();
        assert_eq!((best.node.as_str(), missing), ("b", 0));
    }

    #[test]
    fn a_suspended_or_asynchronous_silence_does_not_hold_a_failover() {
        let mut b = copy("b", 0, false);
        b.suspended = true;
        b.healthy = false;
        let ranked = [copy("c", 9, true), b.clone()];
        assert_eq!(choose(&ranked, &settings(1), 9, "a").unwrap().0.node, "c");
        // Without synchronous copies nothing was promised beyond closed generations.
        let ranked = [copy("c", 9, true), copy("b", 0, false)];
        assert_eq!(choose(&ranked, &settings(0), 9, "a").unwrap().0.node, "c");
    }

    #[test]
    fn a_best_copy_beyond_the_dial_is_refused_naming_it() {
        let ranked = [copy("c", 2, true)];
        let mut s = settings(1);
        s.mount_dial = MountDial::Good;
        let why = choose(&ranked, &s, 20, "a").unwrap_err();
        assert!(why.contains("on c, lacks 19 closed generations"), "{why}");
        s.sync_copies = 0;
        s.mount_dial = MountDial::Lossless;
        let why = choose(&ranked, &s, 1, "a").unwrap_err();
        assert!(why.contains("needs synchronous copies"), "{why}");
    }
}
