//! This node as a member of a database availability group (`[dag]` in its configuration).
//!
//! What it runs, besides the node:
//!
//! - the **replication listener** (mutual TLS, [`replication::server`]), answering copies of
//!   the storage groups this node holds active: their log streams, closed generations and
//!   seeds ([`source`], [`seed`]);
//! - its **membership** in etcd: a key kept alive by a lease (so the others see it up);
//! - a **reconciler**, every [`TICK`]: it claims the active copy of each storage group it
//!   mounts (an etcd transaction, only when nobody holds it), publishes each one's last closed
//!   generation, starts, changes and stops the passive copies the cluster database assigns to
//!   this node ([`replication::copy::PassiveCopy`]), publishes their state, and reads every
//!   copy's state back — which the log truncation of the active copies needs
//!   ([`truncation_limit`]).
//!
//! etcd briefly unreachable: every running copy keeps copying and replaying from the active it
//! knew, the active keeps serving, and truncation keeps the generations the copies last
//! reported they still need (an event says the cluster database is unreachable; another when
//! it is back). Until the copies' state was read once, nothing is truncated.

mod activation;
mod fence;
mod gate_settings;
mod manager;
pub mod marker;
pub mod peer_api;
mod seed;
pub mod source;
pub mod surrogate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use events::EventSink;
use parking_lot::Mutex;
use replication::client::PeerClient;
use replication::cluster::{
    ActiveRecord, Cluster, CopyRecord, CopyState, CopyStatus, Member, MemberLease,
};
use replication::copy::{CopyConfig, Desired, PassiveCopy};
use replication::tls::DagTls;
use serde_json::json;
use tokio::sync::watch;

use crate::Node;
use crate::config::DagSection;

/// How often the reconciler runs.
pub const TICK: Duration = Duration::from_millis(500);
/// An unchanged state is written again after this long (a cluster database restored from an
/// older snapshot, or a key deleted by hand, is repaired within it).
const REWRITE_AFTER: Duration = Duration::from_secs(30);
/// How long a commit waits for its synchronous copies (policy `available`) before it goes on
/// without them, the gate marked degraded (event 4118).
const SYNC_WAIT: Duration = Duration::from_secs(2);
/// The member lease's time to live (seconds).
const MEMBER_TTL: i64 = 5;

/// Why the DAG part of a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum DagError {
    #[error("dag TLS: {0}")]
    Tls(#[from] replication::tls::TlsError),
    #[error("dag: cluster database: {0}")]
    Cluster(#[from] replication::cluster::ClusterError),
    #[error("dag.listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("dag.copy_volume: no volume labelled {0:?}")]
    CopyVolume(String),
    #[error("registering the replication writer: {0}")]
    Writer(String),
}

/// What the reconciler last read from the cluster database.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub copies: Vec<CopyRecord>,
    pub states: Vec<CopyState>,
    pub members: Vec<Member>,
    pub actives: Vec<(String, ActiveRecord)>,
    /// Whether all of the above was read at least once.
    pub loaded: bool,
    /// Whether the last read succeeded.
    pub reachable: bool,
}

/// The DAG member.
pub struct Dag {
    node: Arc<Node>,
    cfg: DagSection,
    tls: DagTls,
    cluster: Cluster,
    runtime: tokio::runtime::Handle,
    copy_fs: volume::FsRef,
    copies: Mutex<BTreeMap<String, PassiveCopy>>,
    /// Peer clients by node name (one connection each, reused).
    peers: Mutex<BTreeMap<String, Arc<PeerClient>>>,
    seen: Mutex<Seen>,
    seeds: seed::SeedsRef,
    unreachable_reported: AtomicBool,
    lease: Mutex<Option<MemberLease>>,
    /// Per active storage group, the log end seen at the previous tick (for the idle roll).
    log_ends: Mutex<BTreeMap<String, ese::Lsn>>,
    /// What was last written to the cluster database, by key, and when ([`Dag::changed`]).
    written: Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
    /// The storage groups whose truncation limit is set.
    limited: Mutex<std::collections::BTreeSet<String>>,
    /// Passive nodes' surrogate backups of the storage groups active here.
    claims: Arc<surrogate::Claims>,
    /// The node's API state, for the jobs other members forward here.
    app: std::sync::OnceLock<crate::api::AppState>,
    /// Storage groups whose log this node closed for a switchover, with the epoch and when:
    /// not mounted again while the switchover runs ([`activation::HANDOVER_TIMEOUT`]).
    handing_over: Mutex<BTreeMap<String, (u64, std::time::Instant)>>,
    /// The last generation of each storage group closed for a switchover: its copies still
    /// fetch up to it from here while it is dismounted.
    sealed: Arc<Mutex<BTreeMap<String, replication::protocol::StreamInfo>>>,
    /// When each storage group last failed to mount (retried after a while, not every tick).
    mount_tried: Mutex<BTreeMap<String, std::time::Instant>>,
    /// The epoch under which this node holds each storage group active (its copies refuse an
    /// older one).
    epochs: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The commit gate of each storage group active here (synchronous copies), which the
    /// copies' block-mode requests acknowledge into.
    gates: Arc<Mutex<BTreeMap<String, Arc<replication::sync::SyncGate>>>>,
    /// The first generation of an epoch this node activated, until the active record holds
    /// it.
    pending_since: Mutex<BTreeMap<String, u32>>,
    /// Since when a returning old active has waited for the new epoch's first generation.
    since_wait: Mutex<BTreeMap<String, std::time::Instant>>,
    /// Each storage group's settings, as last read, and when that read started.
    settings_seen: Mutex<BTreeMap<String, replication::cluster::SgSettings>>,
    settings_read: Mutex<Option<std::time::Instant>>,
    /// The settings each commit gate follows and when their read started: a gate follows
    /// only a read that started later, so that a reconciler round that read the settings
    /// before `copy settings` changed them cannot undo what that command applied.
    gate_settings: gate_settings::GateSettings,
    /// Set while this node cannot renew its lease: it holds nothing active.
    fenced: AtomicBool,
    /// Why the last activation assigned to this node failed, by storage group.
    activation_error: Mutex<Option<(String, String)>>,
    /// Whether this node is the primary active manager now.
    primary: AtomicBool,
    /// Wakes the reconciler before its next tick (a switchover is waiting for it).
    kick: tokio::sync::Notify,
    /// The last reason the manager gave for not failing each storage group over (said once).
    refusals: Mutex<BTreeMap<String, String>>,
    /// The epoch each storage group was last mounted under by the reconciler: one dismounted
    /// since under the same epoch was dismounted by an administrator and is left so.
    mounted_epochs: Mutex<BTreeMap<String, u64>>,
    /// Storage groups a switchover is moving now (the manager does not fail them over).
    switching: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Dag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dag").field("dag", &self.cfg.name).finish_non_exhaustive()
    }
}

impl Dag {
    /// Starts the member: TLS identity, replication listener, cluster connection (lazy: etcd
    /// may be down), reconciler. Runs on `runtime` until `shutdown` turns true.
    pub async fn start(
        node: Arc<Node>,
        cfg: DagSection,
        runtime: tokio::runtime::Handle,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Dag>, DagError> {
        let tls = DagTls::load(&cfg.ca, &cfg.cert, &cfg.key)?;
        let label = node.config().copy_volume().unwrap_or_default().to_string();
        let copy_fs: volume::FsRef = match node.volume(&label) {
            Some(v) => Arc::new(v.clone()),
            None => return Err(DagError::CopyVolume(label)),
        };
        let cluster = Cluster::connect(&cfg.etcd, &cfg.name).await?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| DagError::Listen { addr: cfg.listen, source })?;
        let dag = Arc::new(Dag {
            node: node.clone(),
            cfg,
            tls: tls.clone(),
            cluster,
            runtime,
            copy_fs,
            copies: Mutex::new(BTreeMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Seen::default()),
            seeds: Arc::default(),
            unreachable_reported: AtomicBool::new(false),
            lease: Mutex::new(None),
            log_ends: Mutex::new(BTreeMap::new()),
            limited: Mutex::new(Default::default()),
            written: Mutex::new(Default::default()),
            claims: Arc::default(),
            app: std::sync::OnceLock::new(),
            handing_over: Mutex::default(),
            sealed: Arc::default(),
            mount_tried: Mutex::default(),
            epochs: Arc::default(),
            gates: Arc::default(),
            settings_seen: Mutex::default(),
            settings_read: Mutex::default(),
            gate_settings: Default::default(),
            pending_since: Mutex::default(),
            since_wait: Mutex::default(),
            fenced: AtomicBool::new(false),
            activation_error: Mutex::default(),
            primary: AtomicBool::new(false),
            kick: tokio::sync::Notify::new(),
            refusals: Mutex::default(),
            mounted_epochs: Mutex::default(),
            switching: Mutex::default(),
        });
        let source: Arc<dyn replication::source::ActiveSource> = Arc::new(source::NodeSource {
            node: node.clone(),
            seeds: dag.seeds.clone(),
            claims: dag.claims.clone(),
            sealed: dag.sealed.clone(),
            gates: dag.gates.clone(),
            epochs: dag.epochs.clone(),
        });
        // The replication writer backs up this node's passive copies (the surrogate backup).
        let replicas = surrogate::DagReplicas {
            dag: Arc::downgrade(&dag),
            node: node.name().to_string(),
            runtime: dag.runtime.clone(),
            events: node.events().clone(),
        };
        node.coordinator()
            .register_writer(replication::ReplicationWriter::new(Arc::new(replicas)))
            .map_err(|e| DagError::Writer(e.to_string()))?;
        let extra = peer_api::routes(dag.clone());
        tokio::spawn(replication::server::serve(listener, tls, source, extra, shutdown.clone()));
        for sg in node.store().storage_groups() {
            dag.limit_truncation(&sg);
        }
        let d = dag.clone();
        let s = shutdown.clone();
        tokio::spawn(async move { d.fence_forever(s).await });
        let d = dag.clone();
        let s = shutdown.clone();
        tokio::spawn(async move { d.manage_forever(s).await });
        let d = dag.clone();
        tokio::spawn(async move { d.reconcile_forever(shutdown).await });
        Ok(dag)
    }

    /// Makes the engine of `sg` ask the DAG before it truncates logs (once per storage
    /// group: those created at runtime are found by the reconciler).
    fn limit_truncation(self: &Arc<Self>, sg: &store::StorageGroup) {
        if !self.limited.lock().insert(sg.name().to_string()) {
            return;
        }
        let d = Arc::downgrade(self);
        let name = sg.name().to_string();
        sg.set_truncation_limit(Some(Arc::new(move || {
            d.upgrade().map(|d| d.truncation_limit(&name)).unwrap_or(None)
        })));
    }

    /// Closes the current generation of `sg` when nothing was logged since the previous tick
    /// and it holds records, so that the copies receive the last commits of an idle storage
    /// group (they replay closed generations only).
    async fn roll_if_idle(&self, sg: &Arc<store::StorageGroup>) {
        if sg.backup_in_progress().is_some() {
            return;
        }
        let Ok(inst) = sg.instance() else { return };
        let end = inst.log_end();
        let previous = self.log_ends.lock().insert(sg.name().to_string(), end);
        if previous == Some(end) {
            let name = sg.name().to_string();
            let rolled = tokio::task::spawn_blocking(move || inst.roll_log_if_idle(end)).await;
            match rolled {
                Ok(Ok(Some(g))) => tracing::debug!(sg = %name, generation = g, "idle log roll"),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(sg = %name, "idle log roll: {e}"),
                Err(e) => tracing::warn!(sg = %name, "idle log roll: {e}"),
            }
        }
    }

    /// The DAG's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The cluster database client.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub(crate) fn me(&self) -> &str {
        self.node.name()
    }

    /// What the reconciler last read.
    pub fn seen(&self) -> Seen {
        self.seen.lock().clone()
    }

    /// The lowest generation the copies of `sg` still need, and which copy that is; asked by
    /// the engine when it truncates logs after a backup.
    pub fn truncation_limit(&self, sg: &str) -> Option<(u32, String)> {
        let seen = self.seen.lock();
        if !seen.loaded {
            return Some((
                0,
                format!(
                    "the copies of {sg} are not known yet (the cluster database has not been read)"
                ),
            ));
        }
        let mut limit: Option<(u32, String)> = None;
        for c in seen.copies.iter().filter(|c| c.sg == sg && c.node != self.me()) {
            let state = seen.states.iter().find(|s| s.sg == sg && s.node == c.node);
            let (g, why) = match state {
                None => (0, format!("copy {sg} on {} has not reported its state yet", c.node)),
                Some(s) => {
                    let mut why = format!(
                        "copy {sg} on {} has replayed only to {:#X}",
                        c.node, s.last_replayed_generation
                    );
                    if let Some(r) = &c.suspended {
                        why.push_str(&format!(" (suspended: {r})"));
                    } else if s.status == CopyStatus::FailedAndSuspended {
                        why.push_str(" (failed and suspended)");
                    }
                    (s.checkpoint_generation.min(s.last_replayed_generation + 1), why)
                }
            };
            if limit.as_ref().is_none_or(|(l, _)| g < *l) {
                limit = Some((g, why));
            }
        }
        limit
    }

    async fn reconcile_forever(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            // Surrogate claims lapse whether or not the cluster database answers.
            let (claims, node) = (self.claims.clone(), self.node.clone());
            let _ = tokio::task::spawn_blocking(move || claims.expire(&node)).await;
            if let Err(e) = self.reconcile().await {
                self.seen.lock().reachable = false;
                if !self.unreachable_reported.swap(true, Ordering::Relaxed) {
                    self.node.events().emit(
                        &events::catalog::REPL_DAG_UNREACHABLE,
                        None,
                        json!({"dag": self.cfg.name, "etcd": self.cfg.etcd.join(","),
                               "reason": e.to_string()}),
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.kick.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        let copies = std::mem::take(&mut *self.copies.lock());
        let _ =
            tokio::task::spawn_blocking(move || copies.into_values().for_each(PassiveCopy::stop))
                .await;
        // Dropping the lease revokes it: the others see this member down at once.
        self.lease.lock().take();
    }

    async fn reconcile(self: &Arc<Self>) -> Result<(), replication::cluster::ClusterError> {
        if self.lease.lock().is_none() {
            let m = Member {
                node: self.me().to_string(),
                replication: self
                    .cfg
                    .advertise
                    .clone()
                    .unwrap_or_else(|| self.cfg.listen.to_string()),
                since_ms: events::now_ms(),
            };
            let lease = self.cluster.register_member(&m, MEMBER_TTL).await?;
            *self.lease.lock() = Some(lease);
            self.node.events().emit(
                &events::catalog::REPL_DAG_JOINED,
                None,
                json!({"node": m.node, "dag": self.cfg.name, "replication": m.replication}),
            );
        }
        let mut copies = self.cluster.copies(None).await?;
        let mut actives = self.cluster.actives().await?;
        let members = self.cluster.members().await?;
        if self.claim_and_publish_actives(&copies, &actives, &members).await? {
            // A storage group was claimed or this node's copy record written: read again.
            copies = self.cluster.copies(None).await?;
            actives = self.cluster.actives().await?;
        }
        self.run_passive_copies(&copies, &members, &actives).await?;
        let states = self.cluster.states(None).await?;
        {
            let mut seen = self.seen.lock();
            *seen = Seen { copies, states, members, actives, loaded: true, reachable: true };
        }
        if self.unreachable_reported.swap(false, Ordering::Relaxed) {
            tracing::info!("the cluster database is reachable again");
        }
        Ok(())
    }

    /// Claims the storage groups this node defines (when nobody holds them), mounts those the
    /// cluster database names it active for (activating its copy when the primary active
    /// manager moved one here), dismounts and sets aside the others, and publishes the last
    /// closed generation and the state of each one it holds active.
    ///
    /// `copies` and `actives` are this tick's reading of the cluster database; returns whether
    /// it wrote a claim or a copy record (then they are read again).
    async fn claim_and_publish_actives(
        self: &Arc<Self>,
        all_copies: &[CopyRecord],
        actives: &[(String, ActiveRecord)],
        members: &[Member],
    ) -> Result<bool, replication::cluster::ClusterError> {
        for sg in self.node.store().storage_groups() {
            self.limit_truncation(&sg);
        }
        if self.claim_unheld(actives).await? {
            return Ok(true);
        }
        let read_at = std::time::Instant::now();
        let settings = self.cluster.all_settings().await?;
        let mut wrote = false;
        *self.settings_seen.lock() = settings.iter().cloned().collect();
        *self.settings_read.lock() = Some(read_at);
        for (name, rec) in actives {
            if rec.node != self.me() {
                self.be_passive(name, rec).await;
                continue;
            }
            // The gate first: a storage group mounted below takes no commit without it.
            let wanted = settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            if let Ok(sg) = self.node.store().storage_group(name) {
                self.gate_commits(&sg, &wanted, members, read_at);
            }
            self.record_since(name, rec).await;
            let Some(sg) = self.be_active(name, rec).await else {
                self.publish_unmounted(name).await?;
                continue;
            };
            self.limit_truncation(&sg);
            let wanted = settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            self.gate_commits(&sg, &wanted, members, read_at);
            let copies: Vec<&CopyRecord> = all_copies.iter().filter(|c| &c.sg == name).collect();
            if copies.iter().any(|c| c.node != self.me()) && sg.is_mounted() {
                self.roll_if_idle(&sg).await;
            }
            if !copies.iter().any(|c| c.node == self.me()) {
                wrote = true;
                let preference = copies.iter().map(|c| c.preference).max().unwrap_or(0) + 1;
                self.cluster
                    .put_copy(&CopyRecord {
                        sg: name.clone(),
                        node: self.me().to_string(),
                        preference,
                        seed_serial: 0,
                        suspended: None,
                        resumes: 0,
                    })
                    .await?;
            }
            let (status, produced, checkpoint) = match sg.log_state() {
                Ok(l) if sg.is_mounted() => (
                    CopyStatus::Mounted,
                    l.current_generation.saturating_sub(1),
                    l.checkpoint_generation,
                ),
                _ => (CopyStatus::Dismounted, 0, 0),
            };
            let key = format!("produced/{name}");
            if produced > 0
                && self.changed(key.clone(), &produced)
                && let Err(e) = self.cluster.put_produced(name, produced).await
            {
                self.written.lock().remove(&key);
                return Err(e);
            }
            let shipping = self.gates.lock().get(name).map(|g| {
                let st = g.status();
                let following = st.peers.len();
                let mode = match st.mode {
                    replication::sync::SyncMode::Strict => "strict",
                    replication::sync::SyncMode::Available => "available",
                };
                if st.degraded {
                    format!(
                        "synchronous copies: {} required ({mode}), DEGRADED: {following} following",
                        st.required
                    )
                } else {
                    format!(
                        "synchronous copies: {} required ({mode}), {following} following",
                        st.required
                    )
                }
            });
            self.publish_state(CopyState {
                sg: name.clone(),
                node: self.me().to_string(),
                status,
                last_inspected_generation: produced,
                last_replayed_generation: produced,
                checkpoint_generation: checkpoint,
                last_error: sg.mount_error(),
                updated_ms: events::now_ms(),
                shipping,
            })
            .await?;
        }
        Ok(wrote)
    }

    /// Applies `sg`'s settings as the cluster database holds them now, if it is active here,
    /// rather than at the reconciler's next round: `copy settings` calls it on the active so
    /// that commits acknowledged after the command returns wait for the synchronous copies it
    /// asked for. Returns how many copies `sg`'s commits now wait for, or `None` when `sg` is
    /// not active and mounted here.
    pub(crate) async fn apply_settings(
        &self,
        sg: &str,
    ) -> Result<Option<u32>, replication::cluster::ClusterError> {
        let read_at = std::time::Instant::now();
        let settings = self.cluster.settings(sg).await?;
        let active_here = self.epochs.lock().contains_key(sg);
        let group = self.node.store().storage_group(sg).ok().filter(|g| g.is_mounted());
        let (true, Some(group)) = (active_here, group) else { return Ok(None) };
        let members = self.seen.lock().members.clone();
        self.gate_commits(&group, &settings, &members, read_at);
        Ok(Some(self.gates.lock().get(sg).map(|g| g.status().required).unwrap_or(0)))
    }

    /// Makes the commits of `sg` (active and mounted here) wait for its synchronous copies as
    /// its settings say; copies that are no longer members stop counting. `read_at`: when the
    /// read of `settings` started; settings read before those the gate already follows are
    /// not applied.
    pub(crate) fn gate_commits(
        &self,
        sg: &Arc<store::StorageGroup>,
        settings: &replication::cluster::SgSettings,
        members: &[Member],
        read_at: std::time::Instant,
    ) {
        // Applied again, to this storage group object, which may be a new one after a mount.
        let settings = self.gate_settings.follow(sg.name(), read_at, settings);
        if settings.sync_copies == 0 {
            if self.gates.lock().remove(sg.name()).is_some() {
                sg.set_commit_gate(None);
            }
            return;
        }
        let gate = self
            .gates
            .lock()
            .entry(sg.name().to_string())
            .or_insert_with(|| {
                Arc::new(replication::sync::SyncGate::new(sg.name(), self.node.events().clone()))
            })
            .clone();
        let mode = match settings.sync_policy {
            replication::cluster::SyncPolicy::Strict => replication::sync::SyncMode::Strict,
            replication::cluster::SyncPolicy::Available => replication::sync::SyncMode::Available,
        };
        gate.set(settings.sync_copies, mode, SYNC_WAIT);
        for peer in gate.status().peers.keys() {
            if !members.iter().any(|m| &m.node == peer) {
                gate.forget(peer);
            }
        }
        sg.set_commit_gate(Some(gate));
    }

    /// Publishes a storage group named active here that is not mounted (closed for a
    /// switchover, fenced, or its activation failed), with why.
    async fn publish_unmounted(
        &self,
        name: &str,
    ) -> Result<(), replication::cluster::ClusterError> {
        let why = if self.fenced.load(Ordering::SeqCst) {
            Some("fenced: this node cannot renew its lease in the cluster database".to_string())
        } else if self.handing_over.lock().contains_key(name) {
            Some("dismounted for a switchover".to_string())
        } else {
            let activation = self.activation_error.lock().clone();
            match activation {
                Some((sg, e)) if sg == name => Some(e),
                _ => self.node.store().storage_group(name).ok().and_then(|g| g.mount_error()),
            }
        };
        self.publish_state(CopyState {
            sg: name.to_string(),
            node: self.me().to_string(),
            status: CopyStatus::Dismounted,
            last_inspected_generation: 0,
            last_replayed_generation: 0,
            checkpoint_generation: 0,
            last_error: why,
            updated_ms: events::now_ms(),
            shipping: None,
        })
        .await
    }

    /// Whether `value` differs from what was last written under `key` (or that was long
    /// enough ago to write it again), recording it as written. The reconciler writes a state
    /// only when it changed: every etcd write is a revision kept until compaction, and an
    /// unchanged state twice a second per copy would make the history grow for nothing.
    fn changed(&self, key: String, value: &impl serde::Serialize) -> bool {
        let text = serde_json::to_string(value).unwrap_or_default();
        let mut written = self.written.lock();
        match written.get(&key) {
            Some((t, at)) if *t == text && at.elapsed() < REWRITE_AFTER => false,
            _ => {
                written.insert(key, (text, std::time::Instant::now()));
                true
            }
        }
    }

    /// Writes a copy's state if it changed (its time of writing aside).
    async fn publish_state(
        &self,
        state: CopyState,
    ) -> Result<(), replication::cluster::ClusterError> {
        let key = format!("state/{}/{}", state.sg, state.node);
        let unchanged = CopyState { updated_ms: 0, ..state.clone() };
        if !self.changed(key.clone(), &unchanged) {
            return Ok(());
        }
        let put = self.cluster.put_state(&state).await;
        if put.is_err() {
            // Not written after all: try again next tick.
            self.written.lock().remove(&key);
        }
        put
    }

    pub(crate) fn peer(&self, node: &str, addr: &str) -> Arc<PeerClient> {
        let mut peers = self.peers.lock();
        match peers.get(node) {
            Some(p) if p.addr() == addr => p.clone(),
            _ => {
                let p = Arc::new(PeerClient::new(self.tls.clone(), node, addr));
                peers.insert(node.to_string(), p.clone());
                p
            }
        }
    }

    /// Starts, updates and stops this node's passive copies to match the cluster database,
    /// and publishes their state.
    async fn run_passive_copies(
        &self,
        copies: &[CopyRecord],
        members: &[Member],
        actives: &[(String, ActiveRecord)],
    ) -> Result<(), replication::cluster::ClusterError> {
        // This node's passive copies: every copy record of it, but of the storage groups it
        // holds active.
        let active_here = |sg: &str| actives.iter().any(|(s, a)| s == sg && a.node == self.me());
        let mine: Vec<&CopyRecord> =
            copies.iter().filter(|c| c.node == self.me() && !active_here(&c.sg)).collect();
        let mut removed = Vec::new();
        {
            let mut running = self.copies.lock();
            // A copy of a storage group made active here is left to its activation (it may
            // be waiting for a fence to lift): its files are the new active's.
            let gone: Vec<String> = running
                .keys()
                .filter(|sg| !mine.iter().any(|c| &c.sg == *sg) && !active_here(sg))
                .cloned()
                .collect();
            for sg in gone {
                if let Some(c) = running.remove(&sg) {
                    removed.push((sg, c));
                }
            }
            for c in &mine {
                // The active's node as a member; a node whose lease lapsed is still tried at
                // the address it had (the copy then says it cannot reach it).
                let active = actives.iter().find(|(sg, _)| sg == &c.sg).and_then(|(_, a)| {
                    match members.iter().find(|m| m.node == a.node) {
                        Some(m) => Some(self.peer(&m.node, &m.replication)),
                        None => self.peers.lock().get(&a.node).cloned(),
                    }
                });
                let desired = Desired {
                    active,
                    suspended: c.suspended.clone(),
                    seed_serial: c.seed_serial,
                    resumes: c.resumes,
                    epoch: actives
                        .iter()
                        .find(|(sg, _)| sg == &c.sg)
                        .map(|(_, a)| a.epoch)
                        .unwrap_or(0),
                };
                match running.get(&c.sg) {
                    Some(p) => {
                        let now = p.desired();
                        let same_active = match (&now.active, &desired.active) {
                            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                            (None, None) => true,
                            _ => false,
                        };
                        if !same_active
                            || now.suspended != desired.suspended
                            || now.seed_serial != desired.seed_serial
                            || now.resumes != desired.resumes
                            || now.epoch != desired.epoch
                        {
                            p.set_desired(desired);
                        }
                    }
                    None => {
                        let cfg = CopyConfig {
                            sg: c.sg.clone(),
                            node: self.me().to_string(),
                            fs: self.copy_fs.clone(),
                            dir: copy_dir(&c.sg),
                            events: self.node.events().clone(),
                            poll: TICK,
                            runtime: self.runtime.clone(),
                        };
                        match PassiveCopy::start(cfg, desired) {
                            Ok(p) => {
                                running.insert(c.sg.clone(), p);
                            }
                            Err(e) => tracing::error!(sg = %c.sg, "starting the copy: {e}"),
                        }
                    }
                }
            }
        }
        for (sg, copy) in removed {
            let fs = self.copy_fs.clone();
            let dir = copy_dir(&sg);
            let _ = tokio::task::spawn_blocking(move || {
                copy.stop();
                remove_tree(&fs, &dir);
            })
            .await;
            self.written.lock().remove(&format!("state/{sg}/{}", self.me()));
            self.cluster.remove_state(&sg, self.me()).await?;
        }
        let reports: Vec<(String, replication::copy::CopyReport)> =
            self.copies.lock().iter().map(|(sg, c)| (sg.clone(), c.report())).collect();
        for (sg, r) in reports {
            self.publish_state(CopyState {
                sg,
                node: self.me().to_string(),
                status: r.status,
                last_inspected_generation: r.last_inspected_generation,
                last_replayed_generation: r.last_replayed_generation,
                checkpoint_generation: r.checkpoint_generation,
                last_error: r.last_error,
                updated_ms: events::now_ms(),
                shipping: Some(
                    if r.block_mode { "block mode" } else { "closed generations" }.into(),
                ),
            })
            .await?;
        }
        Ok(())
    }

    /// Runs `f` on this node's passive copy of `sg` (its database files, replay held off).
    pub fn with_copy<T>(
        &self,
        sg: &str,
        f: impl FnOnce(
            &volume::FsRef,
            &std::path::Path,
            Option<&replication::protocol::SeedManifest>,
        ) -> T,
    ) -> Option<T> {
        let copies = self.copies.lock();
        copies.get(sg).map(|c| c.with_databases(f))
    }

    /// Hands the member the node's API state, once it exists (the service builds it after the
    /// member started), for the jobs other members forward here.
    pub fn set_app_state(&self, app: crate::api::AppState) {
        let _ = self.app.set(app);
    }

    /// The database headers of this node's passive copy of `sg` (read while replay is held
    /// off), by database; `None` without a seeded copy.
    pub fn copy_headers(&self, sg: &str) -> Option<Vec<(String, Result<ese::DbHeader, String>)>> {
        self.with_copy(sg, |fs, dir, manifest| {
            manifest.map(|m| {
                m.databases
                    .iter()
                    .map(|d| {
                        let path =
                            replication::copy::database_path(dir.parent().unwrap_or(dir), &d.name);
                        let h = ese::inspect::dump_database_header(fs.as_ref(), &path)
                            .map_err(|e| e.to_string());
                        (d.name.clone(), h)
                    })
                    .collect()
            })
        })
        .flatten()
    }

    /// The storage groups this node runs passive copies of.
    pub fn copy_names(&self) -> Vec<String> {
        self.copies.lock().keys().cloned().collect()
    }

    /// Whether this node runs a passive copy of `sg`.
    pub fn has_copy(&self, sg: &str) -> bool {
        self.copies.lock().contains_key(sg)
    }

    /// The layout of this node's passive copy of `sg` as a storage group definition (where its
    /// databases and logs are), for a backup of the copy; `None` before it was seeded.
    pub fn replica_def(&self, sg: &str) -> Option<store::StorageGroupDef> {
        let manifest = self.copies.lock().get(sg)?.seed_manifest()?;
        Some(self.replica_def_from(sg, manifest))
    }

    /// The same, from the seed record on disk (the copy need not be running).
    pub(crate) fn replica_def_on_disk(&self, sg: &str) -> Option<store::StorageGroupDef> {
        let manifest = self.seed_manifest_on_disk(sg)?;
        Some(self.replica_def_from(sg, manifest))
    }

    fn replica_def_from(
        &self,
        sg: &str,
        manifest: replication::protocol::SeedManifest,
    ) -> store::StorageGroupDef {
        // A copy's node need not define the storage group itself.
        let own = self.node.store().storage_group(sg).ok().map(|g| g.def());
        let label = self.node.config().copy_volume().unwrap_or_default().to_string();
        let volume = store::VolumeRef { label, fs: self.copy_fs.clone() };
        let dir = copy_dir(sg);
        let databases = manifest
            .databases
            .iter()
            .map(|d| store::DatabaseDef {
                name: d.name.clone(),
                volume: volume.clone(),
                path: replication::copy::database_path(&dir, &d.name),
            })
            .collect();
        store::StorageGroupDef {
            name: sg.to_string(),
            log_volume: volume,
            log_dir: dir.join("inbox"),
            system_dir: dir,
            prefix: manifest.prefix,
            circular_logging: own.as_ref().is_some_and(|d| d.circular_logging),
            databases,
            tuning: store::EngineTuning {
                log_file_size: manifest.log_file_size,
                page_size: manifest.page_size as usize,
                ..own.map(|d| d.tuning).unwrap_or_default()
            },
        }
    }

    /// The members whose backups of `sg` count as its history: every node with a copy of it.
    pub fn history_nodes(&self, sg: &str) -> Vec<String> {
        let seen = self.seen.lock();
        let mut nodes: Vec<String> =
            seen.copies.iter().filter(|c| c.sg == sg).map(|c| c.node.clone()).collect();
        nodes.extend(seen.actives.iter().filter(|(s, _)| s == sg).map(|(_, a)| a.node.clone()));
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// The copies' reports of this node, by storage group (for metrics).
    pub fn local_reports(&self) -> Vec<(String, replication::copy::CopyReport)> {
        self.copies.lock().iter().map(|(sg, c)| (sg.clone(), c.report())).collect()
    }
}

/// Where a passive copy of `sg` lives on the copy volume.
pub fn copy_dir(sg: &str) -> std::path::PathBuf {
    std::path::Path::new("copies").join(sg)
}

/// Deletes a copy's directory tree (a removed copy's files).
fn remove_tree(fs: &volume::FsRef, dir: &std::path::Path) {
    let Ok(entries) = fs.read_dir(dir) else { return };
    for e in entries {
        let p = dir.join(&e.name);
        if fs.remove_file(&p).is_err() {
            remove_tree(fs, &p);
            let _ = fs.remove_dir(&p);
        }
    }
    let _ = fs.remove_dir(dir);
}
