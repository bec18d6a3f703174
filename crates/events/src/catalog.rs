//! The event catalog: every event the system emits, in one table.
//!
//! An event is identified by its [`Source`] and numeric ID (as in the reference system, where
//! IDs are unique per source, not globally). Steps that the reference system documents keep its
//! IDs so that an administrator who knows it can read a job's trail; steps it leaves unnumbered
//! get IDs the project picked, in ranges no reference source uses:
//!
//! | range | source | what |
//! | --- | --- | --- |
//! | 9620–9629 | store | store writer steps the reference leaves unnumbered (thaw acknowledged, backup complete reported) |
//! | 8000–8099 | coordinator | every coordinator transition, writer failures and time-outs, interrupted jobs, the event log's own corruption report |
//! | 8100–8199 | provider | snapshot set committed, flush-and-hold timed out, shadow-storage overflow deletions, shadow copies exposed and unexposed (8110–8112) |
//! | 8200–8299 | requester | the backup application's own steps |
//! | 4150–4159 | requester | the node's schedules (runs started, ended, caught up; retention) |
//!
//! Templates name their fields in braces (`{writer}`); [`EventDef::render`] fills them from the
//! event's structured fields, which are stored beside the rendered message so that queries and
//! tools never have to parse prose.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who emitted an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The coordinator (the reference's VSS role).
    Coordinator,
    /// The information store and its writer (the reference's MSExchangeIS).
    Store,
    /// The storage engine (the reference's ESE).
    Engine,
    /// The replication service and its writer (the reference's MSExchangeRepl).
    Replication,
    /// A snapshot provider.
    Provider,
    /// The requester (backup application).
    Requester,
}

impl Source {
    /// The lower-case name used in files, filters and command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Coordinator => "coordinator",
            Source::Store => "store",
            Source::Engine => "engine",
            Source::Replication => "replication",
            Source::Provider => "provider",
            Source::Requester => "requester",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity. Ordered: `Info < Warning < Error`, so a filter can ask for "warning and worse".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDef {
    /// The constant's name, e.g. `STORE_WRITER_ENGAGED` (stable; used in docs and tests).
    pub name: &'static str,
    pub source: Source,
    pub id: u32,
    pub level: Level,
    /// Message template with `{field}` placeholders.
    pub template: &'static str,
}

impl EventDef {
    /// The placeholder names of the template, in order of appearance.
    pub fn field_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut rest = self.template;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) => {
                    let (name, _) = split_spec(&after[..close]);
                    out.push(name);
                    rest = &after[close + 1..];
                }
                None => break,
            }
        }
        out
    }

    /// Fills the template from `fields`. Strings are inserted bare, other values as JSON; a
    /// placeholder with no field is left as `{name}` so a missing field is visible, not blank.
    /// `{name:gen}` shows a number as a log generation, in hex as in the log file names
    /// (`0x30`: `E0000000030.log`), so that people read one notation while the field itself
    /// stays a number for scripts.
    pub fn render(&self, fields: &Map<String, Value>) -> String {
        let mut out = String::with_capacity(self.template.len() + 32);
        let mut rest = self.template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            let (name, spec) = split_spec(&after[..close]);
            match fields.get(name) {
                Some(Value::Number(n)) if spec == Some("gen") && n.as_u64().is_some() => {
                    out.push_str(&format!("{:#X}", n.as_u64().unwrap_or_default()));
                }
                Some(Value::String(s)) => out.push_str(s),
                Some(v) => out.push_str(&v.to_string()),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// A placeholder's field name and its format (`first:gen`: `first`, `gen`).
fn split_spec(placeholder: &str) -> (&str, Option<&str>) {
    match placeholder.split_once(':') {
        Some((name, spec)) => (name, Some(spec)),
        None => (placeholder, None),
    }
}

/// Looks an event up by source and ID.
pub fn lookup(source: Source, id: u32) -> Option<&'static EventDef> {
    CATALOG.iter().find(|d| d.source == source && d.id == id)
}

macro_rules! catalog {
    ($( $(#[$doc:meta])* $name:ident = ($source:ident, $id:expr, $level:ident, $template:expr); )*) => {
        $(
            $(#[$doc])*
            pub const $name: EventDef = EventDef {
                name: stringify!($name),
                source: Source::$source,
                id: $id,
                level: Level::$level,
                template: $template,
            };
        )*
        /// Every event, in catalog order.
        pub const CATALOG: &[EventDef] = &[$($name),*];
    };
}

catalog! {
    // ---- store writer, active backup (reference Part 2) ----
    /// The requester engaged the store writer; metadata handed out.
    STORE_WRITER_ENGAGED = (Store, 9606, Info,
        "The backup application engaged the store writer '{instance}' for job {job}; writer metadata handed out.");
    /// The engine snapshot instance number assigned to the job; storage group now backup in progress.
    STORE_BACKUP_IN_PROGRESS = (Store, 9811, Info,
        "Engine snapshot instance {snapshot_instance} assigned to storage group {storage_group}; backup in progress.");
    /// The snapshot was requested; the writer prepares to freeze.
    STORE_PREPARE_SNAPSHOT = (Store, 9608, Info,
        "Snapshot requested for storage group {storage_group}; the writer prepares to freeze.");
    /// Error while preparing for backup (e.g. another backup in progress).
    STORE_PREPARE_BACKUP_FAILED = (Store, 9607, Error,
        "Preparing storage group {storage_group} for backup failed: {error}");
    /// Error while freezing.
    STORE_FREEZE_FAILED = (Store, 9611, Error,
        "Freezing storage group {storage_group} failed: {error}");
    /// Project-picked: the writer acknowledged the thaw.
    STORE_THAW_ACKNOWLEDGED = (Store, 9620, Info,
        "The store writer thawed storage group {storage_group}; writes proceed.");
    /// Project-picked: backup complete reported, success per component.
    STORE_BACKUP_COMPLETE_REPORTED = (Store, 9621, Info,
        "The backup application reported backup complete for storage group {storage_group}: {components}");
    /// A surrogate backup of this database by a passive node starts (active node).
    STORE_SURROGATE_BACKUP_STARTED = (Store, 910, Info,
        "Node {passive_node} started a surrogate backup of database {database}; backup in progress.");
    /// Surrogate backup done; header stamped (active node).
    STORE_SURROGATE_BACKUP_DONE = (Store, 913, Info,
        "The surrogate backup of database {database} by node {passive_node} finished; the header records it.");

    // ---- store: mount, degraded backups, restore (project-picked, 9622–9629) ----
    /// Project-picked: a database was dismounted during a full backup, which now counts as a copy.
    STORE_BACKUP_DEGRADED_TO_COPY = (Store, 9622, Warning,
        "Storage group {storage_group} was dismounted during the backup; the backup now counts as a copy: no header stamp as full, no log truncation.");
    /// Project-picked: a storage group was mounted (after soft recovery if it was needed).
    STORE_MOUNTED = (Store, 9623, Info,
        "Storage group {storage_group} mounted ({recovery}).");
    /// Project-picked: a storage group was dismounted cleanly.
    STORE_DISMOUNTED = (Store, 9624, Info,
        "Storage group {storage_group} dismounted cleanly.");
    /// Project-picked: restore of a storage group's databases starting (pre-restore).
    STORE_RESTORE_STARTED = (Store, 9625, Info,
        "Restore of storage group {storage_group} starting into {target}.");
    /// Project-picked: hard recovery finished and the restored databases are consistent.
    STORE_RESTORE_RECOVERED = (Store, 9626, Info,
        "Restore of storage group {storage_group}: hard recovery replayed generations {first:gen} to {last:gen}; the databases are consistent.");
    /// Project-picked: a restore failed; the target was left as it was.
    STORE_RESTORE_FAILED = (Store, 9627, Error,
        "Restore of storage group {storage_group} failed: {error}. The target was left as it was.");
    /// Project-picked: a storage group could not be mounted; it stays dismounted (the node
    /// runs on, so that it can be restored).
    STORE_MOUNT_FAILED = (Store, 9628, Error,
        "Storage group {storage_group} could not be mounted and stays dismounted: {error}");
    /// Project-picked: a surrogate backup's claim lapsed (the passive stopped renewing it).
    STORE_SURROGATE_CLAIM_LAPSED = (Store, 9629, Warning,
        "The surrogate backup of storage group {storage_group} by node {passive_node} was not renewed for {lease_ms} ms; backup in progress cleared, nothing stamped or truncated.");
    /// Project-picked: a surrogate backup was ended without success (failed or aborted).
    STORE_SURROGATE_BACKUP_ABORTED = (Store, 9630, Warning,
        "The surrogate backup of storage group {storage_group} by node {passive_node} ended without success ({reason}); nothing stamped or truncated.");

    // ---- engine ----
    /// Shadow copy full backup starting.
    ENGINE_FULL_BACKUP_STARTING = (Engine, 2005, Info,
        "Instance {instance} ({snapshot_instance}): shadow copy full backup starting.");
    /// Shadow copy incremental backup starting.
    ENGINE_INCREMENTAL_BACKUP_STARTING = (Engine, 2008, Info,
        "Instance {instance} ({snapshot_instance}): shadow copy incremental backup starting.");
    /// Shadow copy copy-backup starting.
    ENGINE_COPY_BACKUP_STARTING = (Engine, 2009, Info,
        "Instance {instance} ({snapshot_instance}): shadow copy copy backup starting.");
    /// Shadow copy differential backup starting.
    ENGINE_DIFFERENTIAL_BACKUP_STARTING = (Engine, 2010, Info,
        "Instance {instance} ({snapshot_instance}): shadow copy differential backup starting.");
    /// Freeze started: current log rolled and closed; writes held in memory.
    ENGINE_FREEZE_STARTED = (Engine, 2001, Info,
        "Instance {instance} ({snapshot_instance}): freeze started; log generation {generation:gen} closed, writes held.");
    /// Error on freeze.
    ENGINE_FREEZE_FAILED = (Engine, 2002, Error,
        "Instance {instance} ({snapshot_instance}): freeze failed: {error}");
    /// Freeze ended (thaw).
    ENGINE_FREEZE_ENDED = (Engine, 2003, Info,
        "Instance {instance} ({snapshot_instance}): freeze ended; held writes go to disk.");
    /// Freeze timed out.
    ENGINE_FREEZE_TIMED_OUT = (Engine, 2004, Error,
        "Instance {instance} ({snapshot_instance}): freeze timed out after {elapsed_ms} ms.");
    /// Shadow copy backup completed.
    ENGINE_BACKUP_COMPLETED = (Engine, 2006, Info,
        "Instance {instance} ({snapshot_instance}): shadow copy backup completed; header stamped.");
    /// Shadow copy backup aborted.
    ENGINE_BACKUP_ABORTED = (Engine, 2007, Error,
        "Instance {instance} ({snapshot_instance}): shadow copy backup aborted.");
    /// Surrogate backup started on the active node's engine.
    ENGINE_SURROGATE_BACKUP_STARTED = (Engine, 210, Info,
        "Instance {instance}: surrogate backup by node {passive_node} starting.");
    /// Surrogate backup done; header updated.
    ENGINE_SURROGATE_BACKUP_DONE = (Engine, 213, Info,
        "Instance {instance}: surrogate backup by node {passive_node} done; header stamped at {time}.");
    /// Logs deleted after a backup.
    ENGINE_LOGS_TRUNCATED = (Engine, 224, Info,
        "Instance {instance}: deleting log files {first:gen} to {last:gen}{kept}.");
    /// No logs truncated (and why).
    ENGINE_NO_LOGS_TRUNCATED = (Engine, 225, Info,
        "Instance {instance}: no log files can be truncated: {reason}");

    // ---- replication writer, passive backup (reference Part 3) ----
    /// Requester engaged the replication writer; metadata read (may repeat).
    REPL_WRITER_ENGAGED = (Replication, 2021, Info,
        "The backup application engaged the replication writer for job {job}; metadata read.");
    /// Components selected.
    REPL_COMPONENTS_SELECTED = (Replication, 2110, Info,
        "The backup application selected components {components}.");
    /// Backup type set.
    REPL_BACKUP_TYPE_SET = (Replication, 2023, Info,
        "Backup type {backup_type} set for job {job}.");
    /// This node performs a surrogate backup; names the active node.
    REPL_SURROGATE_BACKUP = (Replication, 960, Info,
        "This node performs a surrogate backup of database {database}; the active copy is on {active_node}.");
    /// Log copying suspended (freeze).
    REPL_LOG_COPY_SUSPENDED = (Replication, 2025, Info,
        "Log copying to disk suspended for database {database}.");
    /// Log replay suspended (freeze).
    REPL_REPLAY_SUSPENDED = (Replication, 2027, Info,
        "Log replay suspended for database {database}.");
    /// Log copying resumed (thaw).
    REPL_LOG_COPY_RESUMED = (Replication, 2029, Info,
        "Log copying resumed for database {database}.");
    /// Log replay resumed (thaw).
    REPL_REPLAY_RESUMED = (Replication, 2035, Info,
        "Log replay resumed for database {database}.");
    /// Backup complete on the passive node.
    REPL_BACKUP_COMPLETE = (Replication, 963, Info,
        "Backup complete for database {database} on this node: {components}");
    /// Backup complete on the passive node (writer).
    REPL_BACKUP_COMPLETE_WRITER = (Replication, 2046, Info,
        "The replication writer processed backup complete for job {job}.");
    /// End of the backup.
    REPL_BACKUP_END = (Replication, 2033, Info,
        "End of the backup of database {database}; the active node rolled the header update log.");
    /// End of the backup (writer shutdown).
    REPL_BACKUP_SHUTDOWN = (Replication, 2037, Info,
        "The replication writer ended job {job}.");

    // ---- database copies (project-picked IDs, the replication service's source) ----
    /// A copy's status changed.
    REPL_COPY_STATUS = (Replication, 4101, Info,
        "Copy of storage group {sg} on node {node} is now {status} (was {previous}).");
    /// Seeding a copy started (passive side).
    REPL_SEED_STARTED = (Replication, 4102, Info,
        "Seeding the copy of storage group {sg} on node {node} from node {active}: {databases} database file(s), {bytes} bytes, snapshot at generation {generation:gen}.");
    /// Seeding a copy finished (passive side).
    REPL_SEED_DONE = (Replication, 4103, Info,
        "Seeded the copy of storage group {sg} on node {node}: {bytes} bytes in {seconds} s; replay starts after generation {generation:gen}.");
    /// Seeding a copy failed (passive side).
    REPL_SEED_FAILED = (Replication, 4104, Error,
        "Seeding the copy of storage group {sg} on node {node} failed: {reason}");
    /// A shipped log failed inspection.
    REPL_INSPECTION_FAILED = (Replication, 4105, Warning,
        "Log file {file} of storage group {sg} failed inspection on node {node} (attempt {attempt}): {reason}");
    /// A copy failed and was suspended.
    REPL_COPY_FAILED = (Replication, 4106, Error,
        "The copy of storage group {sg} on node {node} failed and is suspended: {reason}");
    /// A copy was suspended by an administrator.
    REPL_COPY_SUSPENDED = (Replication, 4107, Info,
        "The copy of storage group {sg} on node {node} is suspended: {reason}");
    /// A suspended copy was resumed.
    REPL_COPY_RESUMED = (Replication, 4108, Info,
        "The copy of storage group {sg} on node {node} is resumed.");
    /// A copy cannot reach its active copy's node.
    REPL_COPY_DISCONNECTED = (Replication, 4109, Warning,
        "The copy of storage group {sg} on node {node} cannot reach the active copy on node {active}: {reason}");
    /// The active node serves a seed (active side).
    REPL_SEED_SERVED = (Replication, 4110, Info,
        "Serving a seed of storage group {sg} to node {peer}: snapshot set {snapshot_set} at generation {generation:gen}.");
    /// A connection to the replication port was refused.
    REPL_PEER_REFUSED = (Replication, 4111, Warning,
        "Refused a replication connection from {addr}: {reason}");
    /// The node joined its DAG (registered in the cluster database).
    REPL_DAG_JOINED = (Replication, 4112, Info,
        "Node {node} joined database availability group {dag} (replication on {replication}).");
    /// The cluster database cannot be reached.
    REPL_DAG_UNREACHABLE = (Replication, 4113, Warning,
        "The cluster database of DAG {dag} at {etcd} cannot be reached: {reason}. The node keeps working on what it holds.");
    /// A copy was added or removed.
    REPL_COPY_CONFIGURED = (Replication, 4114, Info,
        "Copy of storage group {sg} on node {node}: {change}.");
    /// A storage group mounted here is active on another member: dismounted.
    REPL_ACTIVE_ELSEWHERE = (Replication, 4115, Warning,
        "Storage group {sg} is active on node {active} (epoch {epoch}); this node dismounted its own database files of it, which must not take mail while another copy is active.");
    /// A backup of a passive copy failed at a step that involves the active node.
    REPL_SURROGATE_FAILED = (Replication, 4116, Error,
        "The backup of the copy of {database} failed at {phase}: {error}");
    /// The backup did not thaw in time: copying and replay resumed by the watchdog.
    REPL_HOLD_WATCHDOG = (Replication, 4117, Warning,
        "The backup of the copy of {database} did not thaw within {seconds} s; log copying and replay resumed by the watchdog.");
    /// This member became the primary active manager (etcd election).
    REPL_PRIMARY_MANAGER = (Replication, 4130, Info,
        "Node {node} is now the primary active manager of DAG {dag}.");
    /// An administrator moved the active copy (switchover): done, with the pause mail saw.
    REPL_SWITCHOVER = (Replication, 4131, Info,
        "Switchover of storage group {sg} from {from} to {to} (epoch {epoch}): every generation up to {generation:#X} replayed on {to}; commits paused for {pause_ms} ms.");
    /// A switchover that could not be done; the old active took mail again.
    REPL_SWITCHOVER_FAILED = (Replication, 4132, Error,
        "Switchover of storage group {sg} from {from} to {to} failed: {error}");
    /// The active's node lost its lease: the primary active manager picked another copy.
    REPL_FAILOVER = (Replication, 4133, Warning,
        "Failover of storage group {sg}: node {from} lost its lease; copy on {to} chosen (epoch {epoch}), missing {missing} closed generations of the {produced:#X} the old active published (mount dial {dial}); where the copies were: {positions}.");
    /// No copy may be mounted within the storage group's mount dial: it stays dismounted.
    REPL_FAILOVER_REFUSED = (Replication, 4134, Error,
        "Storage group {sg} stays dismounted: its active node {from} lost its lease and {reason}");
    /// This node mounted its copy of a storage group as the new active.
    REPL_ACTIVATED = (Replication, 4135, Info,
        "The copy of storage group {sg} on node {node} is active (epoch {epoch}): replayed to generation {last:#X}, new generations from {first:#X}.");
    /// The active could not renew its lease in time: it dismounted before the lease could lapse.
    REPL_FENCED = (Replication, 4136, Error,
        "Node {node} could not renew its lease in the cluster database for {age_ms} ms: storage group {sg} dismounted (self-fencing) so that no other copy and this one take mail at the same time.");
    /// A node that was active came back after another copy was made active.
    REPL_DIVERGED = (Replication, 4137, Warning,
        "Storage group {sg} was made active on {active} (epoch {epoch}) while this node held it (epoch {old_epoch}): its files were set aside in {set_aside}; generations {lost} were never replicated ({lost_count} lost from the new active's history). The copy here is reseeded from {active}.");
    /// The active closed its log stream and dismounted for a switchover.
    REPL_HANDED_OVER = (Replication, 4138, Info,
        "Storage group {sg} dismounted for a switchover to {to}: its log is closed at generation {generation:#X}.");
    /// Synchronous copies: fewer passive copies acknowledged the active's commits than required
    /// (too few connected, or too slow): commits go on unreplicated (policy "available").
    REPL_SYNC_DEGRADED = (Replication, 4118, Warning,
        "Storage group {sg}: commits are no longer confirmed by {required} synchronous copies ({reason}); they are acknowledged on this node's log alone until the copies catch up.");
    /// Synchronous copies: enough copies acknowledge commits again.
    REPL_SYNC_HEALTHY = (Replication, 4119, Info,
        "Storage group {sg}: commits are confirmed by {required} synchronous copies again.");

    // ---- coordinator transitions (project-picked) ----
    /// A requester session started.
    COORD_SESSION_STARTED = (Coordinator, 8000, Info,
        "Backup session {job} started (context {context}).");
    /// Writer metadata gathered.
    COORD_METADATA_GATHERED = (Coordinator, 8001, Info,
        "Writer metadata gathered from {writers} writers.");
    /// Backup state set.
    COORD_BACKUP_STATE_SET = (Coordinator, 8002, Info,
        "Backup state set: type {backup_type}, {components} components selected, writers excluded: {excluded}.");
    /// Prepare backup issued to the writers.
    COORD_PREPARE_BACKUP = (Coordinator, 8003, Info,
        "Prepare backup issued to {writers} writers (type {backup_type}).");
    /// Snapshot set creation started.
    COORD_SNAPSHOT_SET_STARTED = (Coordinator, 8004, Info,
        "Snapshot set {snapshot_set} started for volumes {volumes}.");
    /// Freeze issued.
    COORD_FREEZE_ISSUED = (Coordinator, 8005, Info,
        "Freeze issued to {writers} writers for snapshot set {snapshot_set}.");
    /// Thaw issued.
    COORD_THAW_ISSUED = (Coordinator, 8006, Info,
        "Thaw issued to {writers} writers for snapshot set {snapshot_set}.");
    /// Snapshot set committed.
    COORD_SNAPSHOT_SET_COMMITTED = (Coordinator, 8007, Info,
        "Snapshot set {snapshot_set} committed: volumes {volumes}, writes held {hold_ms} ms.");
    /// Snapshot set aborted.
    COORD_SNAPSHOT_SET_ABORTED = (Coordinator, 8008, Warning,
        "Snapshot set {snapshot_set} aborted: {reason}");
    /// Post snapshot issued.
    COORD_POST_SNAPSHOT = (Coordinator, 8009, Info,
        "Post snapshot issued to {writers} writers for snapshot set {snapshot_set}.");
    /// Backup complete issued.
    COORD_BACKUP_COMPLETE = (Coordinator, 8010, Info,
        "Backup complete issued to {writers} writers: {components}");
    /// Backup shutdown issued; session ended.
    COORD_SESSION_SHUTDOWN = (Coordinator, 8011, Info,
        "Backup session {job} shut down ({outcome}).");
    /// Abort issued.
    COORD_ABORT = (Coordinator, 8012, Warning,
        "Abort issued to {writers} writers: {reason}");
    /// A writer timed out.
    COORD_WRITER_TIMED_OUT = (Coordinator, 8013, Error,
        "Writer '{writer}' ({instance}) timed out in {phase} after {timeout_ms} ms.");
    /// A writer failed (not a time-out).
    COORD_WRITER_FAILED = (Coordinator, 8014, Error,
        "Writer '{writer}' ({instance}) failed in {phase}: {failure}: {error}");
    /// Node start-up found an interrupted job.
    COORD_INTERRUPTED_JOB_FOUND = (Coordinator, 8015, Warning,
        "Start-up found job {job} interrupted in phase {phase}; its snapshots were released.");
    /// Writers excluded from the job (no selected component) after prepare backup.
    COORD_WRITER_NOT_INVOLVED = (Coordinator, 8016, Info,
        "Writer '{writer}' ({instance}) has no selected component and gets no further events.");
    /// A writer was backed up as full because its schema lacks the requested type.
    COORD_BACKUP_TYPE_DOWNGRADED = (Coordinator, 8017, Warning,
        "Writer '{writer}' does not support {requested} backups; it is backed up as {effective}.");
    /// Restore: pre-restore issued.
    COORD_PRE_RESTORE = (Coordinator, 8018, Info,
        "Pre-restore issued to {writers} writers for backup of snapshot set {snapshot_set}.");
    /// Restore: post-restore issued.
    COORD_POST_RESTORE = (Coordinator, 8019, Info,
        "Post-restore issued to {writers} writers: {outcome}.");
    /// A session waited for another job's snapshot set creation and gave up.
    COORD_SNAPSHOT_SET_BUSY = (Coordinator, 8020, Error,
        "Snapshot set in progress for another job; waited {waited_ms} ms.");
    /// The thaw watchdog fired: the freeze window elapsed.
    COORD_FREEZE_WINDOW_EXPIRED = (Coordinator, 8021, Error,
        "Freeze window of {window_ms} ms expired for snapshot set {snapshot_set}; writers thawed by the watchdog.");
    /// The event log found corruption when it was opened.
    COORD_EVENT_LOG_CORRUPTION = (Coordinator, 8090, Error,
        "Event log segment {segment}: corrupt record at offset {offset}; {skipped_bytes} bytes skipped.");

    // ---- provider (project-picked) ----
    /// A provider committed a snapshot.
    PROVIDER_SNAPSHOT_COMMITTED = (Provider, 8100, Info,
        "Provider {provider} committed snapshot {snapshot} of volume {volume}.");
    /// Flush-and-hold timed out.
    PROVIDER_FLUSH_HOLD_TIMED_OUT = (Provider, 8101, Error,
        "Provider {provider}: flush-and-hold for snapshot set {snapshot_set} exceeded {timeout_ms} ms; writes released.");
    /// Snapshot deleted because shadow storage was full.
    PROVIDER_SNAPSHOT_DELETED_OVERFLOW = (Provider, 8102, Warning,
        "Shadow storage of volume {volume} full: snapshot {snapshot} deleted, {bytes} bytes freed.");
    /// A snapshot was deleted (released).
    PROVIDER_SNAPSHOT_DELETED = (Provider, 8103, Info,
        "Provider {provider} deleted snapshot {snapshot} of volume {volume}.");
    /// Shadow storage passed 90% of its maximum.
    PROVIDER_SHADOW_STORAGE_NEAR_FULL = (Provider, 8104, Warning,
        "Shadow storage of volume {volume} is nearly full: {used} of {max} bytes used.");
    /// Preserving a block failed; the snapshot is deleted.
    PROVIDER_PRESERVATION_FAILED = (Provider, 8105, Error,
        "Volume {volume}: preserving a block for snapshot {snapshot} failed ({error}); the snapshot is deleted.");
    /// Project-picked: shadow storage from the configuration or a runtime change could not be
    /// applied at start; the node starts with the shadow storage on disk.
    PROVIDER_SHADOW_STORAGE_CONFLICT = (Provider, 8106, Warning,
        "Shadow storage for volume {volume} {wanted} was not applied: {error}.");
    /// Project-picked: a shadow copy was mounted read-only at a path (`admin expose`, or
    /// again at start for a persistent one).
    PROVIDER_SHADOW_EXPOSED = (Provider, 8110, Info,
        "Shadow copy {snapshot} of volume {volume} exposed read-only at {at}.");
    /// Project-picked: an exposed shadow copy was unmounted (`admin unexpose`, or before the
    /// shadow copy was deleted); `reason` says which.
    PROVIDER_SHADOW_UNEXPOSED = (Provider, 8111, Info,
        "Shadow copy {snapshot} is no longer exposed at {at} ({reason}).");
    /// Project-picked: a persistent shadow copy's exposure could not be mounted again at start.
    PROVIDER_SHADOW_EXPOSE_FAILED = (Provider, 8112, Error,
        "Shadow copy {snapshot} could not be exposed again at {at}: {error}");

    // ---- requester (project-picked) ----
    /// The requester finished copying.
    REQUESTER_COPY_DONE = (Requester, 8200, Info,
        "Copied {files} files ({bytes} bytes) from snapshot set {snapshot_set}.");
    /// The requester's verification failed.
    REQUESTER_VERIFY_FAILED = (Requester, 8201, Error,
        "Verification of {file} failed: {error}");
    /// The copied files passed the physical-consistency check.
    REQUESTER_VERIFY_PASSED = (Requester, 8202, Info,
        "Verified {databases} database files ({pages} pages) and log generations {first:gen} to {last:gen}: consistent.");
    /// A backup set was published in the repository.
    REQUESTER_SET_PUBLISHED = (Requester, 8203, Info,
        "Backup set {set} ({backup_type} of storage group {storage_group}) published: {files} files, {bytes} bytes, {stored} bytes new in the repository.");
    /// A restore began.
    REQUESTER_RESTORE_STARTED = (Requester, 8204, Info,
        "Restoring storage group {storage_group} from backup sets {sets} to {target}.");
    /// A restore finished.
    REQUESTER_RESTORE_DONE = (Requester, 8205, Info,
        "Restored storage group {storage_group}: {files} files, {bytes} bytes; hard recovery replayed generations {first:gen} to {last:gen}.");

    // ---- the node's schedules (project-picked, 4150–4159) ----
    /// A scheduled run started (its slot: the time the cron expression named).
    SCHEDULE_RUN_STARTED = (Requester, 4150, Info,
        "Schedule {schedule} started ({action} {what}) for the run due at {slot}.");
    /// A scheduled run ended well (a backup names its set; its job has the backup's events).
    SCHEDULE_RUN_SUCCEEDED = (Requester, 4151, Info,
        "Schedule {schedule} succeeded ({action} {what}){detail}.");
    /// A scheduled run failed; the node runs on and the schedule runs again at its next time.
    SCHEDULE_RUN_FAILED = (Requester, 4152, Error,
        "Schedule {schedule} failed ({action} {what}): {error}");
    /// Runs were due while the node was down: one run catches them up (not one per slot).
    SCHEDULE_RUN_CAUGHT_UP = (Requester, 4153, Warning,
        "Schedule {schedule} missed {missed} run(s) while the node was down, the last due at {slot}; it runs once now.");
    /// The schedule's retention policy was applied after a successful backup.
    SCHEDULE_RETENTION_APPLIED = (Requester, 4154, Info,
        "Schedule {schedule}: retention kept {kept} and forgot {forgotten} backup sets of storage group {storage_group} in {repo}.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn source_and_id_are_unique() {
        let mut seen = HashSet::new();
        for d in CATALOG {
            assert!(seen.insert((d.source, d.id)), "duplicate {} {}", d.source, d.id);
        }
        assert_eq!(lookup(Source::Store, 9606), Some(&STORE_WRITER_ENGAGED));
        assert_eq!(lookup(Source::Coordinator, 9606), None);
    }

    #[test]
    fn generations_render_in_hex_and_stay_numbers_in_the_fields() {
        let mut f = Map::new();
        f.insert("storage_group".into(), "SG1".into());
        f.insert("first".into(), 0x2f.into());
        f.insert("last".into(), 48.into());
        let m = STORE_RESTORE_RECOVERED.render(&f);
        assert!(m.contains("generations 0x2F to 0x30;"), "{m}");
        assert_eq!(STORE_RESTORE_RECOVERED.field_names(), ["storage_group", "first", "last"]);
    }

    #[test]
    fn render_fills_fields_and_shows_missing() {
        let mut f = Map::new();
        f.insert("instance".into(), "E00".into());
        f.insert("snapshot_instance".into(), 7.into());
        assert_eq!(
            ENGINE_FULL_BACKUP_STARTING.render(&f),
            "Instance E00 (7): shadow copy full backup starting."
        );
        f.remove("instance");
        assert!(ENGINE_FULL_BACKUP_STARTING.render(&f).starts_with("Instance {instance} (7)"));
        assert_eq!(ENGINE_LOGS_TRUNCATED.field_names(), vec!["instance", "first", "last", "kept"]);
    }
}
