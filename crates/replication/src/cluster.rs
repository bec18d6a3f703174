//! The DAG's shared state in etcd.
//!
//! etcd is the DAG's cluster database: what every node must agree on (who is a member, where the
//! copies are, which copy is active) lives there, and nothing else. A node keeps working on what it
//! holds while etcd is unreachable: every call here fails fast (a connect timeout of
//! [`CONNECT_TIMEOUT`] and a request timeout of [`REQUEST_TIMEOUT`]) instead of hanging, and the
//! callers retry on their own schedule.
//!
//! # Key layout
//!
//! Everything for one DAG sits under `/shadowcopy/<dag>/` (see [`Cluster::prefix`]), so several
//! DAGs (or tests) can share one etcd. Values are JSON, written with serde_json from the structs
//! here.
//!
//! - `members/<node>` — a [`Member`], attached to that node's lease ([`Cluster::register_member`]).
//!   It exists exactly while the node is alive and talking to etcd: a node that dies stops renewing
//!   its lease and its key disappears by itself, which is how `dag status` tells up from down and
//!   how copies of a dead node are shown `Disconnected`.
//! - `copies/<sg>/<node>` — a [`CopyRecord`]: the administrator's intent (a copy of `sg` exists on
//!   `node`, its activation preference, reseed serial and suspension). Written only by `copy add`,
//!   `copy reseed`, `copy suspend`/`resume` and `copy remove`; never by the copy itself, so what
//!   the administrator asked for survives whatever state the copy is in.
//! - `active/<sg>` — the [`ActiveRecord`]: which node holds the active copy, with an epoch bumped on
//!   every change, the node that was active before it (`previous`) and the first log generation of
//!   the epoch (`since_generation`, 0 until the new active has said). Only changed through
//!   [`Cluster::set_active_if`] (compare-and-swap; [`Cluster::update_active_since`] goes through
//!   it), so two nodes can never both believe they were made active from the same starting point.
//!   New records come from [`ActiveRecord::first`] and [`ActiveRecord::next`], never built by hand,
//!   so an epoch is never reused.
//! - `settings/<sg>` — the storage group's [`SgSettings`]: the mount dial (how many generations a
//!   failover may lose), how many synchronous copies it wants and what to do when they are not
//!   available. Absent means [`SgSettings::default`].
//! - `primary/<lease hex>` — the election of the primary active manager, named `<prefix>primary`
//!   (etcd's election recipe and key layout): one key per campaigning node, attached to that
//!   node's lease, holding its node name; the key with the lowest create revision is the primary
//!   ([`Cluster::campaign_primary`]). A node that dies loses its key with its lease, and the next
//!   campaigner becomes primary.
//! - `state/<sg>/<node>` — a [`CopyState`], reported by the node holding the copy: its status and
//!   the generations it has inspected and replayed, and its checkpoint's generation. **Truncation
//!   reads these**: the active deletes a generation only when every copy's
//!   `last_inspected_generation` and `last_replayed_generation` have reached it and every copy's
//!   `checkpoint_generation` has passed it (a copy in `copies/` with no `state/` holds truncation
//!   entirely). Kept apart from `copies/` so a node reporting its state never races an
//!   administrator's edit of the record.
//! - `produced/<sg>` — a decimal `u32`: the last generation the active has closed. Passives read it
//!   to compute their copy queue length, and to know what the active may already have truncated
//!   (a passive deletes its shipped logs only once the active has).
//!
//! Names (`dag`, `sg`, `node`) must be non-empty and must not contain `/`, so a key has one
//! reading; anything else is refused with [`ClusterError::Name`]. A value that does not parse is
//! reported as [`ClusterError::Malformed`] naming its key: never a panic, never silently skipped
//! (a skipped copy would let truncation delete what that copy still needs).
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long to wait for a TCP/HTTP2 connection to etcd before a call fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long any one etcd request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one [`Cluster::campaign_primary`] call waits to be elected before it answers "not
/// yet". Below [`REQUEST_TIMEOUT`] so that it is our own deadline that ends the wait, recognisably,
/// rather than the channel's, which would look like any other failure.
pub const CAMPAIGN_WAIT: Duration = Duration::from_millis(2500);
/// How often a waiting campaign looks whether the older candidates have gone.
const CAMPAIGN_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd at {endpoints}: {source}")]
    Etcd { endpoints: String, source: etcd_client::Error },
    #[error("etcd key {key}: malformed value: {why}")]
    Malformed { key: String, why: String },
    /// A DAG, storage group or node name that cannot be a key segment.
    #[error("{what} name {name:?} cannot be used in etcd keys (empty, or contains '/')")]
    Name { what: &'static str, name: String },
}

/// A member of the DAG, present while its lease is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// host:port of its replication (TLS) listener.
    pub replication: String,
    /// Milliseconds since the epoch when it registered.
    pub since_ms: u64,
}

/// A copy of a storage group on a node, as the administrator asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub sg: String,
    pub node: String,
    pub preference: u32,
    /// Bumped by `copy reseed`: a copy seeds again when this differs from its seed's.
    pub seed_serial: u64,
    /// Set by `copy suspend` (the reason), cleared by `copy resume`.
    pub suspended: Option<String>,
    /// Bumped by `copy resume`: a copy that failed (and so suspended itself, without an
    /// administrator's reason to clear) resumes when this changes. Absent in records written
    /// before it existed.
    #[serde(default)]
    pub resumes: u64,
}

/// Which node holds the active copy of a storage group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRecord {
    pub node: String,
    pub epoch: u64,
    /// The node that was active before this epoch (`None` for the first). Lets the new active and
    /// the passives know whose logs the epoch started from (and whom to fence). Absent in records
    /// written before it existed.
    #[serde(default)]
    pub previous: Option<String>,
    /// The first log generation of this epoch; 0 until the new active has opened it (see
    /// [`Cluster::update_active_since`]). Absent in records written before it existed.
    #[serde(default)]
    pub since_generation: u32,
}

impl ActiveRecord {
    /// The first active record of a storage group: epoch 1, nobody before it.
    pub fn first(node: &str) -> ActiveRecord {
        ActiveRecord { node: node.to_string(), epoch: 1, previous: None, since_generation: 0 }
    }

    /// The record making `node` active after this one: the next epoch, with this record's node as
    /// `previous` and the first generation not known yet. The only way to move to a new epoch, so
    /// callers cannot skip or reuse one.
    pub fn next(&self, node: &str) -> ActiveRecord {
        ActiveRecord {
            node: node.to_string(),
            epoch: self.epoch + 1,
            previous: Some(self.node.clone()),
            since_generation: 0,
        }
    }
}

/// A value of a setting that is not one of its known spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected one of: {expected})")]
pub struct UnknownSetting {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static str,
}

/// How much a failover may lose: the largest number of log generations the best passive copy may
/// be missing for it to be mounted automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountDial {
    /// Nothing may be lost.
    Lossless,
    /// Up to 6 generations.
    Good,
    /// Up to 12 generations.
    #[default]
    Best,
    /// Whatever is missing: mount the best copy there is.
    BestEffort,
}

impl MountDial {
    /// The largest number of missing generations this dial accepts; `None`: no limit.
    pub fn max_missing(self) -> Option<u32> {
        match self {
            MountDial::Lossless => Some(0),
            MountDial::Good => Some(6),
            MountDial::Best => Some(12),
            MountDial::BestEffort => None,
        }
    }

    /// Whether a copy missing `missing_generations` may be mounted under this dial.
    pub fn allows(self, missing_generations: u32) -> bool {
        self.max_missing().is_none_or(|max| missing_generations <= max)
    }

    fn as_str(self) -> &'static str {
        match self {
            MountDial::Lossless => "lossless",
            MountDial::Good => "good",
            MountDial::Best => "best",
            MountDial::BestEffort => "besteffort",
        }
    }
}

impl std::fmt::Display for MountDial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MountDial {
    type Err = UnknownSetting;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [MountDial::Lossless, MountDial::Good, MountDial::Best, MountDial::BestEffort]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownSetting {
                what: "mount dial",
                given: s.to_string(),
                expected: "lossless, good, best, besteffort",
            })
    }
}

/// What the active does when fewer synchronous copies than asked for are available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Refuse to commit until enough synchronous copies have the log.
    Strict,
    /// Keep committing with the copies there are (the synchronous guarantee lapses meanwhile).
    #[default]
    Available,
}

impl SyncPolicy {
    fn as_str(self) -> &'static str {
        match self {
            SyncPolicy::Strict => "strict",
            SyncPolicy::Available => "available",
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SyncPolicy {
    type Err = UnknownSetting;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [SyncPolicy::Strict, SyncPolicy::Available]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownSetting {
                what: "sync policy",
                given: s.to_string(),
                expected: "strict, available",
            })
    }
}

/// A storage group's settings for the active manager, at `settings/<sg>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SgSettings {
    pub mount_dial: MountDial,
    /// How many passive copies must have a log before the active's commit is acknowledged.
    pub sync_copies: u32,
    pub sync_policy: SyncPolicy,
}

/// This node's place in the primary active manager election, from [`Cluster::campaign_primary`].
///
/// Holds the election key (`<prefix>primary/<lease hex>`) and its create revision: once elected,
/// the node is primary exactly while that key exists with that revision.
#[derive(Debug, Clone)]
pub struct PrimaryHandle {
    node: String,
    key: String,
    /// The key's create revision when elected.
    rev: i64,
    lease: i64,
}

impl PrimaryHandle {
    /// The node that campaigned.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease the election key is attached to.
    pub fn lease(&self) -> i64 {
        self.lease
    }
}

/// A copy's state, as its node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CopyStatus {
    Mounted,
    Dismounted,
    Initializing,
    Seeding,
    Healthy,
    Suspended,
    FailedAndSuspended,
    Failed,
    Disconnected,
}

/// What a node reports about its copy of a storage group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    pub sg: String,
    pub node: String,
    pub status: CopyStatus,
    pub last_inspected_generation: u32,
    pub last_replayed_generation: u32,
    /// The oldest generation the copy still reads (its checkpoint's generation).
    pub checkpoint_generation: u32,
    pub last_error: Option<String>,
    pub updated_ms: u64,
    /// How the copy receives the log (passive: block mode or closed generations) or how the
    /// active's commits wait for copies (synchronous or not, degraded): shown by `copy status`.
    #[serde(default)]
    pub shipping: Option<String>,
}

/// A connection to etcd for one DAG, as one node.
///
/// Cheap to clone (the etcd client is a handle on one shared channel). Connecting does not
/// contact etcd: the channel connects on the first request and reconnects after etcd comes back,
/// so a node can start, and keep running, while etcd is down; each call reports the outage.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// `/shadowcopy/<dag>/`.
    prefix: String,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Keeps a member's lease alive until dropped (then the member key goes away with the lease).
///
/// Dropping it stops the keep-alive task, which revokes the lease on its way out (best effort:
/// if the runtime is shutting down or etcd is unreachable, the lease simply expires after its TTL).
/// [`MemberLease::revoke`] does the same and waits for it.
#[derive(Debug)]
pub struct MemberLease {
    /// Dropping it tells the task to revoke and stop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The lease currently holding the member key (it changes when the task re-grants one).
    lease: Arc<AtomicI64>,
    /// See [`MemberLease::last_renewed`]; written by the keep-alive task.
    renewed: Arc<Mutex<Instant>>,
    ttl: Duration,
}

impl MemberLease {
    /// The etcd lease currently holding the member key.
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    /// When the lease was last known alive for a full TTL from then: the moment the keep-alive
    /// request was sent whose answer had a TTL > 0, or the moment before the lease was granted.
    /// Taken before the request (not when the answer came) so it can only be early, never late:
    /// an active node that must stop writing once its lease may have lapsed (self-fencing)
    /// dismounts when `last_renewed().elapsed()` nears [`MemberLease::ttl`], and is then sure
    /// etcd has not yet handed its role to someone else.
    pub fn last_renewed(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Stops renewing and revokes the lease, so the member key disappears now rather than after
    /// its TTL. Best effort: an unreachable etcd is logged, and the lease then expires by itself.
    pub async fn revoke(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "member lease task ended abnormally");
        }
    }
}

impl Drop for MemberLease {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which revokes the lease and returns; the task is
        // not aborted so that the revocation gets its chance.
        self.stop.take();
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    if name.is_empty() || name.contains('/') {
        return Err(ClusterError::Name { what, name: name.to_string() });
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // The types here are plain structs of strings, integers and options: serialization cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, ClusterError> {
    serde_json::from_slice(value).map_err(|e| ClusterError::Malformed {
        key: String::from_utf8_lossy(key).into_owned(),
        why: e.to_string(),
    })
}

impl Cluster {
    /// Prepares a client of the etcd cluster at `endpoints` (`http://host:port`) for the DAG `dag`.
    /// Fails only on unusable arguments; etcd itself is first contacted by the first request (see
    /// [`Cluster::ping`] to check it is reachable).
    pub async fn connect(endpoints: &[String], dag: &str) -> Result<Cluster, ClusterError> {
        check_name("DAG", dag)?;
        let joined = endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|source| ClusterError::Etcd { endpoints: joined.clone(), source })?;
        Ok(Cluster { client, prefix: format!("/shadowcopy/{dag}/"), endpoints: joined })
    }

    /// The prefix of every key of this DAG: `/shadowcopy/<dag>/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The endpoints, comma-separated, as given to [`Cluster::connect`].
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Checks that etcd answers (one cheap read of this DAG's prefix).
    pub async fn ping(&self) -> Result<(), ClusterError> {
        let mut c = self.client.clone();
        c.get(self.prefix.clone(), Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(())
    }

    fn etcd(&self, source: etcd_client::Error) -> ClusterError {
        ClusterError::Etcd { endpoints: self.endpoints.clone(), source }
    }

    fn member_key(&self, node: &str) -> String {
        format!("{}members/{node}", self.prefix)
    }
    fn copy_key(&self, sg: &str, node: &str) -> String {
        format!("{}copies/{sg}/{node}", self.prefix)
    }
    fn active_key(&self, sg: &str) -> String {
        format!("{}active/{sg}", self.prefix)
    }
    fn state_key(&self, sg: &str, node: &str) -> String {
        format!("{}state/{sg}/{node}", self.prefix)
    }
    fn produced_key(&self, sg: &str) -> String {
        format!("{}produced/{sg}", self.prefix)
    }
    fn settings_key(&self, sg: &str) -> String {
        format!("{}settings/{sg}", self.prefix)
    }
    /// The election's name; its keys are `<name>/<lease hex>`.
    fn election_name(&self) -> String {
        format!("{}primary", self.prefix)
    }

    /// `<prefix><dir>/` or, with `sg`, `<prefix><dir>/<sg>/`.
    fn dir_prefix(&self, dir: &str, sg: Option<&str>) -> Result<String, ClusterError> {
        Ok(match sg {
            Some(sg) => {
                check_name("storage group", sg)?;
                format!("{}{dir}/{sg}/", self.prefix)
            }
            None => format!("{}{dir}/", self.prefix),
        })
    }

    async fn put_json<T: Serialize>(&self, key: String, v: &T) -> Result<(), ClusterError> {
        let mut c = self.client.clone();
        c.put(key, to_json(v), None).await.map_err(|e| self.etcd(e))?;
        Ok(())
    }

    async fn get_json<T: DeserializeOwned>(&self, key: String) -> Result<Option<T>, ClusterError> {
        let mut c = self.client.clone();
        let resp = c.get(key, None).await.map_err(|e| self.etcd(e))?;
        match resp.kvs().first() {
            Some(kv) => parse(kv.key(), kv.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every value under `prefix`, parsed, with the key's remainder after `prefix`.
    async fn list_json<T: DeserializeOwned>(
        &self,
        prefix: String,
    ) -> Result<Vec<(String, T)>, ClusterError> {
        let mut c = self.client.clone();
        let resp = c
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.etcd(e))?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let rest = kv.key().get(prefix.len()..).unwrap_or_default();
            let rest = String::from_utf8_lossy(rest).into_owned();
            out.push((rest, parse(kv.key(), kv.value())?));
        }
        Ok(out)
    }

    async fn delete(&self, key: String) -> Result<bool, ClusterError> {
        let mut c = self.client.clone();
        let resp = c.delete(key, None).await.map_err(|e| self.etcd(e))?;
        Ok(resp.deleted() > 0)
    }

    /// Puts `members/<node>` attached to a new lease of `ttl_s` seconds, and keeps the lease alive
    /// from a tokio task (renewed every third of the TTL) until the returned [`MemberLease`] is
    /// dropped or revoked. If renewing fails (etcd unreachable) the task keeps trying; if the lease
    /// expired meanwhile, it grants a new one and puts the member key again, so a node that lost
    /// etcd for longer than its TTL shows up again once etcd is back.
    pub async fn register_member(
        &self,
        m: &Member,
        ttl_s: i64,
    ) -> Result<MemberLease, ClusterError> {
        check_name("node", &m.node)?;
        let ttl_s = ttl_s.max(1);
        let key = self.member_key(&m.node);
        let value = to_json(m);
        let granting = Instant::now();
        let id = self.grant_and_put(&key, &value, ttl_s).await?;
        let lease = Arc::new(AtomicI64::new(id));
        let renewed = Arc::new(Mutex::new(granting));
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(keep_member_alive(
            self.clone(),
            key,
            value,
            ttl_s,
            Renewal { lease: lease.clone(), renewed: renewed.clone() },
            stop_rx,
        ));
        let ttl = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(1));
        Ok(MemberLease { stop: Some(stop), task: Some(task), lease, renewed, ttl })
    }

    /// Grants a lease of `ttl_s` and puts `key` with it; returns the lease id.
    async fn grant_and_put(
        &self,
        key: &str,
        value: &[u8],
        ttl_s: i64,
    ) -> Result<i64, ClusterError> {
        let mut c = self.client.clone();
        let id = c.lease_grant(ttl_s, None).await.map_err(|e| self.etcd(e))?.id();
        let put = c.put(key, value, Some(PutOptions::new().with_lease(id))).await;
        if let Err(e) = put {
            // Do not leave a lease behind for nothing (it would expire anyway).
            let _ = c.lease_revoke(id).await;
            return Err(self.etcd(e));
        }
        Ok(id)
    }

    /// Every member whose lease is alive, sorted by node.
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let prefix = format!("{}members/", self.prefix);
        let mut v: Vec<Member> =
            self.list_json(prefix).await?.into_iter().map(|(_, m)| m).collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(v)
    }

    /// Creates or replaces the record of a copy.
    pub async fn put_copy(&self, c: &CopyRecord) -> Result<(), ClusterError> {
        check_name("storage group", &c.sg)?;
        check_name("node", &c.node)?;
        self.put_json(self.copy_key(&c.sg, &c.node), c).await
    }

    /// Deletes the record of a copy; returns whether it existed.
    pub async fn remove_copy(&self, sg: &str, node: &str) -> Result<bool, ClusterError> {
        check_name("storage group", sg)?;
        check_name("node", node)?;
        self.delete(self.copy_key(sg, node)).await
    }

    /// The copies of `sg`, or of every storage group, sorted by (sg, node).
    pub async fn copies(&self, sg: Option<&str>) -> Result<Vec<CopyRecord>, ClusterError> {
        let prefix = self.dir_prefix("copies", sg)?;
        let mut v: Vec<CopyRecord> =
            self.list_json(prefix).await?.into_iter().map(|(_, c)| c).collect();
        // Key order is not (sg, node) order when a name sorts below '/' (e.g. "a-b" before "a").
        v.sort_by(|a, b| (&a.sg, &a.node).cmp(&(&b.sg, &b.node)));
        Ok(v)
    }

    /// Which node holds the active copy of `sg`, if any was ever set.
    pub async fn active(&self, sg: &str) -> Result<Option<ActiveRecord>, ClusterError> {
        check_name("storage group", sg)?;
        self.get_json(self.active_key(sg)).await
    }

    /// Every storage group's active record, sorted by storage group.
    pub async fn actives(&self) -> Result<Vec<(String, ActiveRecord)>, ClusterError> {
        let prefix = format!("{}active/", self.prefix);
        let mut v = self.list_json(prefix).await?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Sets the active record of `sg` to `new` only if it currently is `expected` (`None`: no
    /// record at all); returns whether it was set.
    ///
    /// With `None` this is one etcd transaction comparing the key's create revision with 0 (the key
    /// does not exist). With `Some` the current record is read, compared with `expected` as a
    /// value (so a record written with another field order or spacing still matches), and the put
    /// is one transaction conditional on the key's mod revision being the one just read: any write
    /// in between makes it fail. Comparing revisions rather than bytes keeps the check exact
    /// whatever serializer wrote the record. A malformed current record is an error, not a `false`
    /// (a caller retrying on `false` would loop forever).
    pub async fn set_active_if(
        &self,
        sg: &str,
        expected: Option<&ActiveRecord>,
        new: &ActiveRecord,
    ) -> Result<bool, ClusterError> {
        self.set_active_when(sg, expected, new, None).await
    }

    /// A failover: as [`Cluster::set_active_if`], and only while `expected`'s node has no
    /// member key (its lease lapsed) — in the same transaction, so that an old active whose
    /// lease came back between the manager's reading and its decision is never replaced
    /// while it takes commits again.
    pub async fn fail_over_if(
        &self,
        sg: &str,
        expected: &ActiveRecord,
        new: &ActiveRecord,
    ) -> Result<bool, ClusterError> {
        check_name("node", &expected.node)?;
        let gone = Compare::version(self.member_key(&expected.node), CompareOp::Equal, 0);
        self.set_active_when(sg, Some(expected), new, Some(gone)).await
    }

    async fn set_active_when(
        &self,
        sg: &str,
        expected: Option<&ActiveRecord>,
        new: &ActiveRecord,
        also: Option<Compare>,
    ) -> Result<bool, ClusterError> {
        check_name("storage group", sg)?;
        let key = self.active_key(sg);
        let mut c = self.client.clone();
        let compare = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(expected) => {
                let resp = c.get(key.clone(), None).await.map_err(|e| self.etcd(e))?;
                let Some(kv) = resp.kvs().first() else {
                    return Ok(false);
                };
                let current: ActiveRecord = parse(kv.key(), kv.value())?;
                if &current != expected {
                    return Ok(false);
                }
                Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())
            }
        };
        let mut compares = vec![compare];
        compares.extend(also);
        let txn = Txn::new().when(compares).and_then([TxnOp::put(key, to_json(new), None)]);
        let resp = c.txn(txn).await.map_err(|e| self.etcd(e))?;
        Ok(resp.succeeded())
    }

    /// Creates or replaces what a node reports about its copy.
    pub async fn put_state(&self, s: &CopyState) -> Result<(), ClusterError> {
        check_name("storage group", &s.sg)?;
        check_name("node", &s.node)?;
        self.put_json(self.state_key(&s.sg, &s.node), s).await
    }

    /// Deletes the reported state of a copy (with the copy itself).
    pub async fn remove_state(&self, sg: &str, node: &str) -> Result<(), ClusterError> {
        check_name("storage group", sg)?;
        check_name("node", node)?;
        self.delete(self.state_key(sg, node)).await?;
        Ok(())
    }

    /// The reported states of `sg`'s copies, or of every copy, sorted by (sg, node).
    pub async fn states(&self, sg: Option<&str>) -> Result<Vec<CopyState>, ClusterError> {
        let prefix = self.dir_prefix("state", sg)?;
        let mut v: Vec<CopyState> =
            self.list_json(prefix).await?.into_iter().map(|(_, s)| s).collect();
        v.sort_by(|a, b| (&a.sg, &a.node).cmp(&(&b.sg, &b.node)));
        Ok(v)
    }

    /// Records the last generation the active copy of `sg` has closed.
    pub async fn put_produced(&self, sg: &str, generation: u32) -> Result<(), ClusterError> {
        check_name("storage group", sg)?;
        self.put_json(self.produced_key(sg), &generation).await
    }

    /// The last generation the active copy of `sg` has closed, if it said.
    pub async fn produced(&self, sg: &str) -> Result<Option<u32>, ClusterError> {
        check_name("storage group", sg)?;
        self.get_json(self.produced_key(sg)).await
    }

    /// Sets the first log generation of the current epoch of `sg`, only if the record is still
    /// `expected` (as [`Cluster::set_active_if`], through which it writes); returns whether it was
    /// set. Only `since_generation` changes: the node, epoch and previous node stay `expected`'s.
    pub async fn update_active_since(
        &self,
        sg: &str,
        expected: &ActiveRecord,
        since_generation: u32,
    ) -> Result<bool, ClusterError> {
        let new = ActiveRecord { since_generation, ..expected.clone() };
        self.set_active_if(sg, Some(expected), &new).await
    }

    /// The settings of `sg`; the defaults if none were ever written.
    pub async fn settings(&self, sg: &str) -> Result<SgSettings, ClusterError> {
        check_name("storage group", sg)?;
        Ok(self.get_json(self.settings_key(sg)).await?.unwrap_or_default())
    }

    /// Creates or replaces the settings of `sg`.
    pub async fn put_settings(&self, sg: &str, s: &SgSettings) -> Result<(), ClusterError> {
        check_name("storage group", sg)?;
        self.put_json(self.settings_key(sg), s).await
    }

    /// Writes the settings of `sg` only if it has none yet (one transaction on the key's create
    /// revision being 0); returns whether they were written. For a node that sets up a storage
    /// group: it must not overwrite what an administrator already chose.
    pub async fn put_settings_if_absent(
        &self,
        sg: &str,
        s: &SgSettings,
    ) -> Result<bool, ClusterError> {
        check_name("storage group", sg)?;
        let key = self.settings_key(sg);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, to_json(s), None)]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(|e| self.etcd(e))?;
        Ok(resp.succeeded())
    }

    /// Every storage group's written settings, sorted by storage group (storage groups without
    /// settings are not listed: they have the defaults).
    pub async fn all_settings(&self) -> Result<Vec<(String, SgSettings)>, ClusterError> {
        let prefix = format!("{}settings/", self.prefix);
        let mut v = self.list_json(prefix).await?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Campaigns for primary active manager as `node`, with its election key attached to `lease`
    /// (the node's member lease, so that the node's death ends its term and its candidacy);
    /// waits at most [`CAMPAIGN_WAIT`].
    ///
    /// `Ok(Some(handle))`: this node is primary. `Ok(None)`: another node is primary and did not
    /// go within the wait; call again (in a loop, for as long as the node wants to be primary).
    /// The wait is bounded because every request on this client has a timeout of
    /// [`REQUEST_TIMEOUT`]: "not elected yet" is an answer, not an error.
    ///
    /// This is etcd's election recipe (the keys are those of the v3election API, so `etcdctl elect`
    /// sees the same election) done with plain requests: the key `primary/<lease hex>` is created
    /// if absent, and the node is primary once no key of the election is older. etcd's own
    /// `Campaign` call is not used because when a waiting campaign is abandoned (our timeout), etcd
    /// deletes the campaigner's key some time later; a campaign made again meanwhile would reuse
    /// that key and could be told it won just as the key went. Here the waiting is ours, nothing is
    /// deleted when it ends, and calling again reuses the same key, keeping the node's place in
    /// the queue. A node that stops campaigning without dying must therefore withdraw
    /// ([`Cluster::withdraw_primary`]), or it may be elected without knowing.
    ///
    /// Errors: etcd unreachable, or refusing `lease` (expired: campaign with the member's current
    /// lease).
    pub async fn campaign_primary(
        &self,
        node: &str,
        lease: i64,
    ) -> Result<Option<PrimaryHandle>, ClusterError> {
        check_name("node", node)?;
        let deadline = Instant::now() + CAMPAIGN_WAIT;
        let name = self.election_name();
        let key = format!("{name}/{lease:x}");
        let mut c = self.client.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), node, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = c.txn(txn).await.map_err(|e| self.etcd(e))?;
        let rev = if resp.succeeded() {
            resp.header().map(|h| h.revision()).unwrap_or_default()
        } else {
            let existing = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
                _ => None,
            });
            existing.unwrap_or_default()
        };
        if rev <= 0 {
            // The key went between the compare and the get (its lease lapsed): not a candidate.
            return Ok(None);
        }
        let handle = PrimaryHandle { node: node.to_string(), key, rev, lease };
        let older = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(rev - 1)
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
            .with_keys_only();
        loop {
            // Our own key first: if it went (lease lapsed, withdrawn), we are not a candidate.
            if !self.still_primary_key(&handle).await? {
                return Ok(None);
            }
            let resp =
                c.get(format!("{name}/"), Some(older.clone())).await.map_err(|e| self.etcd(e))?;
            if resp.kvs().is_empty() {
                return Ok(Some(handle));
            }
            if Instant::now() + CAMPAIGN_POLL >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(CAMPAIGN_POLL).await;
        }
    }

    /// Withdraws the candidacy (or the primacy) held with `lease`: deletes `primary/<lease hex>`.
    /// For a node that stops calling [`Cluster::campaign_primary`] while its lease lives.
    pub async fn withdraw_primary(&self, lease: i64) -> Result<(), ClusterError> {
        self.delete(format!("{}/{lease:x}", self.election_name())).await?;
        Ok(())
    }

    /// The primary active manager's node name; `None` if nobody is campaigning. Reads the
    /// election's keys directly (the oldest one is the leader, as etcd's election defines it) so
    /// that "nobody" is an answer rather than an etcd error.
    pub async fn primary(&self) -> Result<Option<String>, ClusterError> {
        let prefix = format!("{}/", self.election_name());
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let mut c = self.client.clone();
        let resp = c.get(prefix, Some(options)).await.map_err(|e| self.etcd(e))?;
        Ok(resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Whether `h`'s node is still primary: its election key still exists with the revision it
    /// was elected with. `false` once its lease lapsed or it resigned; a primary must check this
    /// before acting as one, since nothing tells it when its key goes.
    pub async fn still_primary(&self, h: &PrimaryHandle) -> Result<bool, ClusterError> {
        self.still_primary_key(h).await
    }

    async fn still_primary_key(&self, h: &PrimaryHandle) -> Result<bool, ClusterError> {
        let mut c = self.client.clone();
        let resp = c.get(h.key.clone(), None).await.map_err(|e| self.etcd(e))?;
        Ok(resp.kvs().first().is_some_and(|kv| kv.create_revision() == h.rev))
    }

    /// Steps down as primary (deletes the election key if it still is the one elected), so the
    /// next campaigner is elected now rather than when the lease expires.
    pub async fn resign_primary(&self, h: PrimaryHandle) -> Result<(), ClusterError> {
        let txn = Txn::new()
            .when([Compare::create_revision(h.key.clone(), CompareOp::Equal, h.rev)])
            .and_then([TxnOp::delete(h.key, None)]);
        let mut c = self.client.clone();
        c.txn(txn).await.map_err(|e| self.etcd(e))?;
        Ok(())
    }
}

/// What the keep-alive task shares with its [`MemberLease`].
struct Renewal {
    lease: Arc<AtomicI64>,
    renewed: Arc<Mutex<Instant>>,
}

impl Renewal {
    fn renewed_at(&self, at: Instant) {
        let mut r = self.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Answers come in order, but never let a late one move it backwards.
        if at > *r {
            *r = at;
        }
    }
}

/// What ended one keep-alive session.
enum Ended {
    /// The `MemberLease` was dropped or revoked.
    Stopped,
    /// etcd says the lease is gone: grant a new one.
    Expired,
    /// etcd could not be reached or the stream broke: try the same lease again.
    Failed(String),
}

/// The member lease's task: renews the lease every `ttl_s / 3`, re-grants it (and puts the member
/// key again) when it expired, and revokes it when told to stop.
async fn keep_member_alive(
    cluster: Cluster,
    key: String,
    value: Vec<u8>,
    ttl_s: i64,
    renewal: Renewal,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let lease = &renewal.lease;
    let ttl_ms = u64::try_from(ttl_s).unwrap_or(1).saturating_mul(1000);
    let period = Duration::from_millis(ttl_ms / 3).max(Duration::from_millis(100));
    let mut expired = false;
    loop {
        if expired {
            let granting = Instant::now();
            match cluster.grant_and_put(&key, &value, ttl_s).await {
                Ok(id) => {
                    renewal.renewed_at(granting);
                    tracing::info!(
                        key,
                        lease = id,
                        "member lease re-granted, member key put again"
                    );
                    lease.store(id, Ordering::SeqCst);
                    expired = false;
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot re-grant the member lease; retrying");
                }
            }
        }
        if !expired {
            let id = lease.load(Ordering::SeqCst);
            match keep_alive_session(&cluster, id, period, &renewal, &mut stop).await {
                Ended::Stopped => break,
                Ended::Expired => {
                    tracing::warn!(key, lease = id, "member lease expired; granting a new one");
                    expired = true;
                    continue;
                }
                Ended::Failed(why) => {
                    tracing::warn!(
                        key,
                        lease = id,
                        error = why,
                        "member lease keep-alive failed; retrying"
                    );
                }
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(period) => {}
        }
    }
    let id = lease.load(Ordering::SeqCst);
    let mut c = cluster.client.clone();
    match tokio::time::timeout(REQUEST_TIMEOUT, c.lease_revoke(id)).await {
        Ok(Ok(_)) => tracing::debug!(key, lease = id, "member lease revoked"),
        Ok(Err(e)) => {
            tracing::warn!(key, lease = id, error = %e, "cannot revoke the member lease; it will expire")
        }
        Err(_) => {
            tracing::warn!(key, lease = id, "revoking the member lease timed out; it will expire")
        }
    }
}

/// One keep-alive stream on lease `id`, renewing every `period` until something ends it.
async fn keep_alive_session(
    cluster: &Cluster,
    id: i64,
    period: Duration,
    renewal: &Renewal,
    stop: &mut tokio::sync::oneshot::Receiver<()>,
) -> Ended {
    let mut c = cluster.client.clone();
    let opened = tokio::select! {
        _ = &mut *stop => return Ended::Stopped,
        r = tokio::time::timeout(REQUEST_TIMEOUT, c.lease_keep_alive(id)) => r,
    };
    let (mut keeper, mut stream) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return failed(e),
        Err(_) => return Ended::Failed("opening the keep-alive stream timed out".into()),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut *stop => return Ended::Stopped,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        if let Err(e) = keeper.keep_alive().await {
            return failed(e);
        }
        let answer = tokio::select! {
            _ = &mut *stop => return Ended::Stopped,
            r = tokio::time::timeout(REQUEST_TIMEOUT, stream.message()) => r,
        };
        match answer {
            // etcd answers a keep-alive of an unknown (expired or revoked) lease with TTL 0 or less.
            Ok(Ok(Some(resp))) if resp.ttl() <= 0 => return Ended::Expired,
            Ok(Ok(Some(_))) => renewal.renewed_at(sent),
            Ok(Ok(None)) => return Ended::Failed("the keep-alive stream ended".into()),
            Ok(Err(e)) => return failed(e),
            Err(_) => return Ended::Failed("no keep-alive answer in time".into()),
        }
    }
}

/// A keep-alive error: etcd answers a lease it no longer has (it expired while this node could
/// not reach it) with "lease not found" rather than a TTL of 0 — that lease is gone, and
/// retrying it would never bring the member key back.
fn failed(e: etcd_client::Error) -> Ended {
    let text = e.to_string();
    if text.contains("lease not found") { Ended::Expired } else { Ended::Failed(text) }
}
