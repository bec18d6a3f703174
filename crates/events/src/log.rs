//! [`EventLog`]: the persistent, append-only, per-node event log.
//!
//! Events are appended as checksummed records ([`crate::record`]) to numbered segment files
//! (`00000001.evlog`, `00000002.evlog`, …) in one directory of a [`volume::FileSystem`], so
//! crash tests can run it on the in-memory power-loss file system. A segment is sealed (synced)
//! when the next record would take it past [`LogOptions::segment_max_bytes`]; a new one is
//! created and, past [`LogOptions::max_segments`], the oldest ones are deleted.
//!
//! **Durability.** Every record is written to the file before [`EventLog::append`] returns; it
//! is made durable (fsync) according to [`LogOptions::sync_every`]: `1` (the default) syncs every
//! record, so an event that was returned survives a power loss; `n > 1` syncs every `n`-th
//! record (a crash loses at most the last `n - 1`); `0` syncs only at rotation and on
//! [`EventLog::sync`]. Segment creation and deletion are made durable with `sync_dir`.
//! Syncs are *group commits*: the fsync runs outside the append lock and covers every record
//! appended before it started, so concurrent emitters share one fsync instead of queueing for
//! one each, and appends never wait behind a disk flush.
//!
//! **Recovery.** On open every segment is scanned. In the newest segment, damage that no valid
//! record follows is a torn tail (a crash during an append): it is cut off and reported in
//! [`RecoveryReport::torn_tail`]. Any other damage (a valid record after it, or in an older
//! segment) is corruption: the records before and after it are kept, the damaged stretch is
//! listed in [`RecoveryReport::corruptions`] and logged as event
//! [`crate::catalog::COORD_EVENT_LOG_CORRUPTION`] — reported, never skipped past silently.
//!
//! **Ordering.** Time stamps are taken under the append lock and never go backwards within a
//! log, so file order, time order and subscriber delivery order agree ("newest last").

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use parking_lot::Mutex;
use serde_json::{Map, Value};
use uuid::Uuid;
use volume::{FileRef, FsRef, OpenMode};

use crate::catalog::{self, EventDef};
use crate::event::{Event, Filter};
use crate::now_ms;
use crate::record::{self, Damage, MAX_PAYLOAD, SEGMENT_HEADER_LEN};

/// Tuning of an [`EventLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is rotated when the next record would take it past this size.
    pub segment_max_bytes: u64,
    /// How many segments are kept; the oldest beyond this are deleted.
    pub max_segments: usize,
    /// Sync after every `n`-th record (`1`: every record; `0`: only at rotation and on
    /// [`EventLog::sync`]).
    pub sync_every: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_max_bytes: 4 << 20, max_segments: 16, sync_every: 1 }
    }
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log {path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("event {name}: encoded record of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { name: &'static str, len: usize, max: usize },
    #[error("event {name}: cannot encode: {source}")]
    Encode {
        name: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> EventLogError + 'a {
    move |source| EventLogError::Io { path: path.to_path_buf(), op, source }
}

/// Damage found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDamage {
    pub segment: u64,
    pub damage: Damage,
}

/// What [`EventLog::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments present after recovery, oldest first.
    pub segments: Vec<u64>,
    /// Valid records found.
    pub records: usize,
    /// A torn tail cut off the newest segment.
    pub torn_tail: Option<SegmentDamage>,
    /// Damage that was not a torn tail; the records around it were kept.
    pub corruptions: Vec<SegmentDamage>,
}

/// Where appends go.
struct Writer {
    /// Retained segment numbers, oldest first; the last one is active.
    segments: VecDeque<u64>,
    file: FileRef,
    /// End of the last complete record in the active segment.
    offset: u64,
    unsynced: u32,
    /// Records appended since open (the sequence number of the newest).
    appended: u64,
    last_time_ms: u64,
}

impl Writer {
    /// The active segment's number.
    fn active(&self) -> u64 {
        #[allow(clippy::expect_used)] // created at open, replaced (never emptied) by rotate
        let n = *self.segments.back().expect("an active segment");
        n
    }
}

struct Subscriber {
    filter: Filter,
    tx: Sender<Event>,
}

/// The persistent per-node event log. Share it as `Arc<EventLog>`; every method takes `&self`.
pub struct EventLog {
    fs: FsRef,
    dir: PathBuf,
    node: String,
    opts: LogOptions,
    writer: Mutex<Writer>,
    /// Sequence number up to which records are known durable; its lock serializes fsyncs
    /// (lock order: `durable` before `writer`).
    durable: Mutex<u64>,
    subscribers: Mutex<Vec<Subscriber>>,
    sink_failures: AtomicU64,
    report: RecoveryReport,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("dir", &self.dir).field("node", &self.node).finish()
    }
}

fn segment_name(n: u64) -> String {
    format!("{n:08}.evlog")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".evlog")?;
    if stem.len() < 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Reads `len` bytes (or the whole file) of a segment.
fn read_segment(fs: &FsRef, path: &Path, len: Option<u64>) -> io::Result<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read)?;
    let len = match len {
        Some(l) => l.min(f.len()?),
        None => f.len()?,
    };
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Checks a segment header; `Err` says what is wrong.
fn check_header(data: &[u8], number: u64) -> Result<(), String> {
    if (data.len() as u64) < SEGMENT_HEADER_LEN {
        return Err(format!("segment header cut short ({} bytes)", data.len()));
    }
    if &data[..8] != record::SEGMENT_MAGIC {
        return Err("not an event log segment (bad magic)".into());
    }
    let n = u64::from_le_bytes(record::bytes(&data[8..16]));
    if n != number {
        return Err(format!("segment header names segment {n}"));
    }
    Ok(())
}

impl EventLog {
    /// Opens (creating if needed) the log in directory `dir` of `fs` for node `node`, recovering
    /// from a crash as the module docs describe.
    pub fn open(
        fs: FsRef,
        dir: impl AsRef<Path>,
        node: impl Into<String>,
        opts: LogOptions,
    ) -> Result<EventLog, EventLogError> {
        let dir = volume::fs::normalize(dir.as_ref()).map_err(io_err(dir.as_ref(), "normalize"))?;
        let node = node.into();
        let opts = LogOptions {
            max_segments: opts.max_segments.max(1),
            segment_max_bytes: opts.segment_max_bytes.max(SEGMENT_HEADER_LEN + 64),
            ..opts
        };
        fs.create_dir_all(&dir).map_err(io_err(&dir, "create directory"))?;
        // Make every level of the directory's name durable (a name is durable only once its
        // parent directory is synced), from the root down.
        let mut parent = PathBuf::new();
        for component in dir.components() {
            fs.sync_dir(&parent).map_err(io_err(&parent, "sync directory"))?;
            parent.push(component);
        }
        let mut numbers: Vec<u64> = fs
            .read_dir(&dir)
            .map_err(io_err(&dir, "list directory"))?
            .into_iter()
            .filter_map(|e| parse_segment_name(&e.name))
            .collect();
        numbers.sort_unstable();

        let mut report = RecoveryReport::default();
        let mut last_time_ms = 0;
        let mut active: Option<(u64, u64)> = None; // (segment, valid end)
        for (i, &n) in numbers.iter().enumerate() {
            let is_last = i + 1 == numbers.len();
            let path = dir.join(segment_name(n));
            let data = read_segment(&fs, &path, None).map_err(io_err(&path, "read segment"))?;
            if let Err(reason) = check_header(&data, n) {
                if is_last && (data.len() as u64) < SEGMENT_HEADER_LEN {
                    // Torn creation of the newest segment: it holds no record; rewrite it.
                    report.torn_tail = Some(SegmentDamage {
                        segment: n,
                        damage: Damage {
                            offset: 0,
                            len: data.len() as u64,
                            reason,
                            followed_by_valid: false,
                        },
                    });
                    active = Some((n, 0));
                } else {
                    report.corruptions.push(SegmentDamage {
                        segment: n,
                        damage: Damage {
                            offset: 0,
                            len: data.len() as u64,
                            reason,
                            followed_by_valid: false,
                        },
                    });
                }
                continue;
            }
            let scan = record::scan(&data, SEGMENT_HEADER_LEN as usize);
            report.records += scan.events.len();
            if let Some(e) = scan.events.last() {
                last_time_ms = last_time_ms.max(e.time_ms);
            }
            for d in scan.damage {
                if is_last && !d.followed_by_valid {
                    report.torn_tail = Some(SegmentDamage { segment: n, damage: d });
                } else {
                    report.corruptions.push(SegmentDamage { segment: n, damage: d });
                }
            }
            if is_last {
                active = Some((n, scan.valid_end));
            }
        }

        let mut segments: VecDeque<u64> = numbers.iter().copied().collect();
        let (file, number, offset) = match active {
            Some((n, end)) if end >= SEGMENT_HEADER_LEN => {
                let path = dir.join(segment_name(n));
                let f =
                    fs.open(&path, OpenMode::ReadWrite).map_err(io_err(&path, "open segment"))?;
                if f.len().map_err(io_err(&path, "stat segment"))? != end {
                    f.set_len(end).map_err(io_err(&path, "cut torn tail"))?;
                    f.sync().map_err(io_err(&path, "sync segment"))?;
                }
                (f, n, end)
            }
            Some((n, _)) => {
                let f = create_segment(&fs, &dir, n)?;
                (f, n, SEGMENT_HEADER_LEN)
            }
            None => {
                // No usable newest segment (none at all, or the newest is corrupt): start a new
                // one after every existing number, so damaged files are left for inspection.
                let n = numbers.last().map_or(1, |n| n + 1);
                let f = create_segment(&fs, &dir, n)?;
                segments.push_back(n);
                (f, n, SEGMENT_HEADER_LEN)
            }
        };
        debug_assert_eq!(segments.back(), Some(&number));
        let writer = Writer { segments, file, offset, unsynced: 0, appended: 0, last_time_ms };
        let log = EventLog {
            fs,
            dir,
            node,
            opts,
            writer: Mutex::new(writer),
            durable: Mutex::new(0),
            subscribers: Mutex::new(Vec::new()),
            sink_failures: AtomicU64::new(0),
            report: RecoveryReport::default(),
        };
        {
            let mut w = log.writer.lock();
            log.enforce_retention(&mut w)?;
            report.segments = w.segments.iter().copied().collect();
        }
        if let Some(t) = &report.torn_tail {
            tracing::warn!(segment = t.segment, offset = t.damage.offset, bytes = t.damage.len,
                reason = %t.damage.reason, "event log: torn tail cut off");
        }
        for c in &report.corruptions {
            tracing::error!(segment = c.segment, offset = c.damage.offset, bytes = c.damage.len,
                reason = %c.damage.reason, "event log: corruption found");
            let mut fields = Map::new();
            fields.insert("segment".into(), c.segment.into());
            fields.insert("offset".into(), c.damage.offset.into());
            fields.insert("skipped_bytes".into(), c.damage.len.into());
            fields.insert("reason".into(), c.damage.reason.clone().into());
            log.append(&catalog::COORD_EVENT_LOG_CORRUPTION, None, fields)?;
        }
        Ok(EventLog { report, ..log })
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The node name stamped on every event.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How many [`EventSink::emit`] calls failed to write (each was logged with `tracing`).
    pub fn sink_failures(&self) -> u64 {
        self.sink_failures.load(Ordering::Relaxed)
    }

    /// Appends one event and delivers it to subscribers; returns it as stored.
    pub fn append(
        &self,
        def: &EventDef,
        job: Option<Uuid>,
        fields: Map<String, Value>,
    ) -> Result<Event, EventLogError> {
        self.append_with(def, job, fields, true)
    }

    /// Like [`EventLog::append`] but never syncs: the record is written (in order) now and
    /// becomes durable with the next synced append or [`EventLog::sync`]. For events emitted
    /// where an fsync would hurt (inside a freeze window).
    pub fn append_relaxed(
        &self,
        def: &EventDef,
        job: Option<Uuid>,
        fields: Map<String, Value>,
    ) -> Result<Event, EventLogError> {
        self.append_with(def, job, fields, false)
    }

    fn append_with(
        &self,
        def: &EventDef,
        job: Option<Uuid>,
        fields: Map<String, Value>,
        may_sync: bool,
    ) -> Result<Event, EventLogError> {
        let message = def.render(&fields);
        let mut w = self.writer.lock();
        let time_ms = now_ms().max(w.last_time_ms);
        let event = Event {
            time_ms,
            node: self.node.clone(),
            source: def.source,
            id: def.id,
            level: def.level,
            job,
            message,
            fields,
        };
        let payload = serde_json::to_vec(&event)
            .map_err(|source| EventLogError::Encode { name: def.name, source })?;
        if payload.len() > MAX_PAYLOAD {
            return Err(EventLogError::TooLarge {
                name: def.name,
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let rec = record::encode(&payload);
        if w.offset > SEGMENT_HEADER_LEN
            && w.offset + rec.len() as u64 > self.opts.segment_max_bytes
        {
            self.rotate(&mut w)?;
        }
        let path = self.active_path(&w);
        if let Err(e) = w.file.write_at(&rec, w.offset) {
            // Do not leave a partial record behind the valid end (best effort: the scanner would
            // also cut it off at the next open).
            if let Err(cut) = w.file.set_len(w.offset) {
                tracing::warn!(path = %path.display(), error = %cut,
                    "could not cut a partial event record; the next open drops it");
            }
            return Err(io_err(&path, "append record")(e));
        }
        w.offset += rec.len() as u64;
        w.last_time_ms = time_ms;
        w.appended += 1;
        let seq = w.appended;
        w.unsynced += 1;
        let sync = may_sync && self.opts.sync_every > 0 && w.unsynced >= self.opts.sync_every;
        if sync {
            w.unsynced = 0;
        }
        // Deliver under the append lock so subscribers see file order.
        self.subscribers
            .lock()
            .retain(|s| !s.filter.matches(&event) || s.tx.send(event.clone()).is_ok());
        drop(w);
        if sync {
            self.sync_through(seq)?;
        }
        Ok(event)
    }

    /// Makes records up to sequence `seq` durable, sharing the fsync with concurrent callers.
    fn sync_through(&self, seq: u64) -> Result<(), EventLogError> {
        let mut durable = self.durable.lock();
        if *durable >= seq {
            return Ok(()); // someone else's fsync covered it
        }
        // Everything appended so far is in the current segment or in sealed (synced) ones.
        let (file, upto, path) = {
            let w = self.writer.lock();
            (w.file.clone(), w.appended, self.active_path(&w))
        };
        file.sync().map_err(io_err(&path, "sync segment"))?;
        *durable = upto;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<(), EventLogError> {
        let seq = {
            let mut w = self.writer.lock();
            w.unsynced = 0;
            w.appended
        };
        self.sync_through(seq)
    }

    /// Events matching `filter`, oldest first (newest last). Reads the retained segments.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Event>, EventLogError> {
        let (segments, active, active_len) = {
            let w = self.writer.lock();
            (w.segments.clone(), w.active(), w.offset)
        };
        let mut out = Vec::new();
        for n in segments {
            let path = self.dir.join(segment_name(n));
            let limit = (n == active).then_some(active_len);
            let data = match read_segment(&self.fs, &path, limit) {
                Ok(d) => d,
                // Deleted by retention since we listed it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path, "read segment")(e)),
            };
            if check_header(&data, n).is_err() {
                continue; // reported at open
            }
            let scan = record::scan(&data, SEGMENT_HEADER_LEN as usize);
            out.extend(scan.events.into_iter().filter(|e| filter.matches(e)));
        }
        if let Some(limit) = filter.limit
            && out.len() > limit
        {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }

    /// Live events matching `filter` from now on. Dropping the receiver unsubscribes (the
    /// sender is pruned at the next matching event).
    pub fn subscribe(&self, filter: Filter) -> Receiver<Event> {
        let (tx, rx) = channel();
        self.subscribers.lock().push(Subscriber { filter, tx });
        rx
    }

    /// Number of live subscriptions (after pruning the ones seen dropped).
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().len()
    }

    fn active_path(&self, w: &Writer) -> PathBuf {
        self.dir.join(segment_name(w.active()))
    }

    /// Seals the active segment and starts the next one.
    fn rotate(&self, w: &mut Writer) -> Result<(), EventLogError> {
        let path = self.active_path(w);
        w.file.sync().map_err(io_err(&path, "seal segment"))?;
        w.unsynced = 0;
        let n = w.active() + 1;
        w.file = create_segment(&self.fs, &self.dir, n)?;
        w.segments.push_back(n);
        w.offset = SEGMENT_HEADER_LEN;
        self.enforce_retention(w)
    }

    fn enforce_retention(&self, w: &mut Writer) -> Result<(), EventLogError> {
        let mut removed = false;
        while w.segments.len() > self.opts.max_segments {
            let Some(n) = w.segments.pop_front() else { break };
            let path = self.dir.join(segment_name(n));
            match self.fs.remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, "delete old segment")(e)),
            }
        }
        if removed {
            self.fs.sync_dir(&self.dir).map_err(io_err(&self.dir, "sync directory"))?;
        }
        Ok(())
    }
}

/// Creates segment `n` with its header, durably (content and name).
fn create_segment(fs: &FsRef, dir: &Path, n: u64) -> Result<FileRef, EventLogError> {
    let path = dir.join(segment_name(n));
    let f = fs.open(&path, OpenMode::Create).map_err(io_err(&path, "create segment"))?;
    f.set_len(0).map_err(io_err(&path, "create segment"))?;
    f.write_at(&record::segment_header(n), 0).map_err(io_err(&path, "write segment header"))?;
    f.sync().map_err(io_err(&path, "sync segment"))?;
    fs.sync_dir(dir).map_err(io_err(dir, "sync directory"))?;
    Ok(f)
}

/// Where components send events. The coordinator, writers and providers take an
/// `Arc<dyn EventSink>` so that tests can use a [`MemorySink`] and the node its [`EventLog`].
pub trait EventSink: Send + Sync {
    /// Records one event. Never fails the caller: a sink that cannot record logs the failure
    /// with `tracing` (an event log must not turn a good backup into a failed one).
    fn emit(&self, def: &EventDef, job: Option<Uuid>, fields: Value);

    /// Records an event in order now but lets its durability wait for the next [`emit`]
    /// (no fsync on the caller's path). The coordinator uses it inside the freeze window.
    ///
    /// [`emit`]: EventSink::emit
    fn emit_relaxed(&self, def: &EventDef, job: Option<Uuid>, fields: Value) {
        self.emit(def, job, fields)
    }
}

fn into_map(fields: Value) -> Map<String, Value> {
    match fields {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    }
}

impl EventLog {
    fn sink(&self, def: &EventDef, job: Option<Uuid>, fields: Value, may_sync: bool) {
        if let Err(e) = self.append_with(def, job, into_map(fields), may_sync) {
            self.sink_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(event = def.name, error = %e, "event log: cannot record event");
        }
    }
}

impl EventSink for EventLog {
    fn emit(&self, def: &EventDef, job: Option<Uuid>, fields: Value) {
        self.sink(def, job, fields, true)
    }

    fn emit_relaxed(&self, def: &EventDef, job: Option<Uuid>, fields: Value) {
        self.sink(def, job, fields, false)
    }
}

/// An in-memory sink for tests of other crates: keeps every event.
#[derive(Debug, Default)]
pub struct MemorySink {
    node: String,
    events: Mutex<Vec<Event>>,
}

impl MemorySink {
    pub fn new(node: impl Into<String>) -> Self {
        MemorySink { node: node.into(), events: Mutex::new(Vec::new()) }
    }

    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }
}

impl EventSink for MemorySink {
    fn emit(&self, def: &EventDef, job: Option<Uuid>, fields: Value) {
        let fields = into_map(fields);
        let mut events = self.events.lock();
        let time_ms = now_ms().max(events.last().map_or(0, |e| e.time_ms));
        events.push(Event {
            time_ms,
            node: self.node.clone(),
            source: def.source,
            id: def.id,
            level: def.level,
            job,
            message: def.render(&fields),
            fields,
        });
    }
}
