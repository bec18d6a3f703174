//! Activation of a passive copy as the new active (switchover and failover): every
//! transaction in the generations the copy received is there, the new active continues the
//! same log stream so another copy replays through the boundary, a sealed shutdown loses
//! nothing, a partial current log is used up to its last valid record, and an activation cut
//! off by a crash at any point is simply run again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{DB, T, clone_fs, closed_in, value, write_durable};
use ese::logfmt::{self, LogHeader, Record, ScanEnd};
use ese::{
    Activation, DatabaseSpec, Durability, EngineError, Instance, InstanceConfig, Lsn,
    PassiveConfig, PassiveReplay,
};
use volume::mem::MemFs;
use volume::{FileSystem, FsRef};

const PREFIX: &str = "E00";
const LOG_SIZE: u32 = 64 * 1024;

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;
/// Each commit's key, value and the log end after its commit record.
type Commits = Vec<(Vec<u8>, Vec<u8>, Lsn)>;

/// The active: its file system, instance, and every commit with the end of its record.
struct Active {
    fs: MemFs,
    inst: Instance,
    commits: Commits,
}

impl Active {
    fn new() -> Active {
        let fs = MemFs::new();
        let inst = common::create(&fs);
        Active { fs, inst, commits: Vec::new() }
    }

    fn put(&mut self, key: u64, len: usize) {
        put(&self.inst, &mut self.commits, key, len);
    }

    /// The closed generations in the active's log directory.
    fn closed(&self) -> Vec<u32> {
        closed_in(&self.fs, Path::new("logs"))
    }
}

fn put(inst: &Instance, commits: &mut Commits, key: u64, len: usize) {
    let (k, v) = (key.to_be_bytes().to_vec(), value(key, len));
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, &k, &v).unwrap();
    t.commit(Durability::Durable).unwrap();
    commits.push((k, v, inst.log_end()));
}

/// The rows of the commits whose records end at or before `upto`.
fn model(commits: &[(Vec<u8>, Vec<u8>, Lsn)], upto: impl Fn(Lsn) -> bool) -> Rows {
    commits.iter().filter(|c| upto(c.2)).map(|(k, v, _)| (k.clone(), v.clone())).collect()
}

fn rows(inst: &Instance) -> Rows {
    common::all_rows(inst).into_iter().collect()
}

/// A passive copy in its own file system, laid out as the node lays out a copy directory:
/// `copy/db/mb1.edb`, `copy/inbox/`, `copy/E00.pchk`.
struct Copy {
    fs: MemFs,
    /// The databases (`copy/db/<name>.edb`), in the order given to the engine.
    names: Vec<String>,
}

impl Copy {
    fn fsref(&self) -> FsRef {
        Arc::new(self.fs.clone())
    }

    fn passive(&self) -> PassiveConfig {
        PassiveConfig {
            databases: self.databases(),
            checkpoint_fs: self.fsref(),
            checkpoint_path: "copy/E00.pchk".into(),
            prefix: PREFIX.into(),
        }
    }

    fn databases(&self) -> Vec<DatabaseSpec> {
        self.names
            .iter()
            .map(|n| DatabaseSpec::new(n.as_str(), self.fsref(), format!("copy/db/{n}.edb")))
            .collect()
    }

    /// The instance configuration over the copy (as `Dag::replica_def` builds it).
    fn config(&self) -> InstanceConfig {
        let f = self.fsref();
        let mut c = InstanceConfig::new(f.clone(), "copy/inbox", f, "copy");
        c.log_file_size = LOG_SIZE;
        c.page_size = 4096;
        c.cache_pages = 64;
        c
    }

    fn inbox(&self, g: u32) -> PathBuf {
        Path::new("copy/inbox").join(logfmt::generation_name(PREFIX, g))
    }

    /// Copies generation `g` from `from`'s directory `dir` into the inbox.
    fn ship(&self, from: &MemFs, dir: &str, g: u32) {
        let name = logfmt::generation_name(PREFIX, g);
        let data = volume::fs::read_all(from, &Path::new(dir).join(&name)).unwrap();
        write_durable(&self.fs, &self.inbox(g), &data);
    }

    /// Applies the inbox generations after the checkpoint up to `upto`.
    fn replay_upto(&self, upto: u32) -> u32 {
        let mut r = PassiveReplay::open(self.passive()).unwrap();
        let gens: Vec<PathBuf> = closed_in(&self.fs, Path::new("copy/inbox"))
            .into_iter()
            .filter(|g| *g > r.replayed_generation() && *g <= upto)
            .map(|g| self.inbox(g))
            .collect();
        if !gens.is_empty() {
            assert!(r.apply_batch(&self.fsref(), &gens).unwrap().applied);
        }
        r.replayed_generation()
    }

    fn activate(&self) -> ese::Result<(Instance, Activation)> {
        ese::activate(&self.passive(), self.config(), self.databases())
    }
}

/// Seeds copies from a copy of the active's database taken while a copy backup holds it
/// frozen (a snapshot: dirty shutdown, with the log range it needs in its header).
fn seed(a: &Active, n: usize) -> Vec<Copy> {
    let mut b = a.inst.backup_session(ese::BackupKind::Copy).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    let names = a.inst.databases();
    let files: Vec<Vec<u8>> = names
        .iter()
        .map(|n| volume::fs::read_all(&a.fs, Path::new(&format!("db/{n}.edb"))).unwrap())
        .collect();
    b.thaw().unwrap();
    b.end().unwrap();
    (0..n)
        .map(|_| {
            let c = Copy { fs: MemFs::new(), names: names.clone() };
            for (n, db) in names.iter().zip(&files) {
                write_durable(&c.fs, Path::new(&format!("copy/db/{n}.edb")), db);
            }
            PassiveReplay::open(c.passive()).unwrap();
            c
        })
        .collect()
}

/// What another copy's log inspector checks of the next shipped generation: same stream,
/// next number, header continuing the previous generation, whole size, closed.
fn check_continues(image: &[u8], prev: Option<&LogHeader>) -> LogHeader {
    let h = LogHeader::decode(&image[..4096]).unwrap();
    if let Some(p) = prev {
        assert_eq!(h.signature, p.signature, "generation {:#X}: another stream", h.generation);
        assert_eq!(h.generation, p.generation + 1);
        assert_eq!(
            h.previous_created, p.created,
            "generation {:#X} does not continue {:#X}",
            h.generation, p.generation
        );
    }
    assert_eq!(image.len(), h.file_size as usize, "generation {:#X} truncated", h.generation);
    let scan = logfmt::scan(h.generation, image, 0);
    assert_eq!(scan.how, ScanEnd::Closed, "generation {:#X} not closed", h.generation);
    h
}

#[test]
fn a_failover_keeps_every_shipped_transaction_and_the_stream_continues_for_other_copies() {
    let mut a = Active::new();
    for i in 0..20 {
        a.put(i, 900);
    }
    let copies = seed(&a, 2);
    let (p1, p2) = (&copies[0], &copies[1]);
    let seeded_at = a.closed().last().copied().unwrap();
    // A transaction spanning generations, then enough commits for several more generations.
    {
        let mut t = a.inst.begin_write().unwrap();
        for i in 500..560u64 {
            t.put(DB, T, &i.to_be_bytes(), &value(i, 1500)).unwrap();
        }
        t.commit(Durability::Durable).unwrap();
        let end = a.inst.log_end();
        for i in 500..560u64 {
            a.commits.push((i.to_be_bytes().to_vec(), value(i, 1500), end));
        }
    }
    for i in 20..300 {
        a.put(i, 900);
    }
    let shipped = a.closed();
    let last = *shipped.last().unwrap();
    assert!(last >= seeded_at + 4, "several generations: {shipped:?}");
    for g in &shipped {
        p1.ship(&a.fs, "logs", *g);
    }
    // Part of them replayed, then the active is killed (dropped without shutdown) with
    // commits in its current log that no copy has.
    // Replayed up to a generation that ends inside the spanning transaction: the copy's
    // checkpoint points back into a generation it already applied.
    let mut mid = None;
    for g in shipped.iter().copied().filter(|g| *g > seeded_at) {
        assert_eq!(p1.replay_upto(g), g);
        let st = ese::replay::read_state(&p1.fs, Path::new("copy/E00.pchk")).unwrap().1;
        if st.replay_from.generation() <= st.replayed_generation {
            mid = Some(g);
            break;
        }
    }
    let mid = mid.expect("a generation ended inside the spanning transaction");
    assert!(mid < last);
    for i in 300..310 {
        a.put(i, 900);
    }
    let Active { fs: afs, inst, commits } = a;
    drop(inst);

    let (b, act) = p1.activate().unwrap();
    assert_eq!(act.first_generation, last + 1);
    assert_eq!(act.last_generation_replayed, last);
    assert_eq!(act.generations_applied, ((mid + 1)..=last).collect::<Vec<_>>());
    assert!(act.transactions > 0);
    assert_eq!(act.partial_log, None);
    assert!(!act.reopened);
    let shipped_rows = model(&commits, |end| end.generation() <= last);
    assert_eq!(rows(&b), shipped_rows, "every transaction of the shipped generations");
    assert!(!p1.fs.exists(Path::new("copy/E00.pchk")).unwrap(), "the passive checkpoint is aside");
    assert!(p1.fs.exists(Path::new("copy/E00.pchk.activated")).unwrap());
    assert_eq!(b.log_state().unwrap().current_generation, last + 1);

    // The new active takes commits and rolls.
    let mut new_commits = Vec::new();
    for i in 1000..1150 {
        put(&b, &mut new_commits, i, 900);
    }
    let new_last = b.roll_log().unwrap();
    assert!(new_last >= last + 2, "the new active wrote several generations");
    let expected = rows(&b);

    // A second copy, seeded from the original active, receives the original generations up
    // to the boundary and then the new active's: each continues the previous one.
    let mut prev: Option<LogHeader> = None;
    for g in shipped[0]..=new_last {
        let (fs, dir) = if g <= last { (&afs, "logs") } else { (&p1.fs, "copy/inbox") };
        let image =
            volume::fs::read_all(fs, &Path::new(dir).join(logfmt::generation_name(PREFIX, g)))
                .unwrap();
        prev = Some(check_continues(&image, prev.as_ref()));
        p2.ship(fs, dir, g);
    }
    assert_eq!(p2.replay_upto(new_last), new_last, "the second copy replays through the boundary");
    // Everything replayed and the inbox emptied (what a copy truncates): activation finds no
    // generation after its checkpoint and still continues the stream.
    for g in closed_in(&p2.fs, Path::new("copy/inbox")) {
        p2.fs.remove_file(&p2.inbox(g)).unwrap();
    }
    let (c, act2) = p2.activate().unwrap();
    assert_eq!(act2.first_generation, new_last + 1);
    assert!(act2.generations_applied.is_empty());
    assert_eq!(rows(&c), expected, "the second copy ends with the new active's content");
    drop(c);

    // The new active killed after its commits: activating again reopens it, losing nothing.
    for i in 2000..2005 {
        put(&b, &mut new_commits, i, 100);
    }
    let expected = rows(&b);
    drop(b);
    let (b, again) = p1.activate().unwrap();
    assert!(again.reopened);
    assert_eq!(again.first_generation, last + 1);
    assert_eq!(rows(&b), expected);
}

#[test]
fn a_sealed_shutdown_then_activation_loses_nothing() {
    let mut a = Active::new();
    for i in 0..10 {
        a.put(i, 900);
    }
    let copies = seed(&a, 1);
    let p = &copies[0];
    for i in 10..200 {
        a.put(i, 900);
    }
    let g = a.inst.shutdown_sealed().unwrap();
    assert_eq!(a.closed().last().copied(), Some(g), "G is the last closed generation");
    assert!(
        matches!(a.inst.shutdown_sealed(), Err(EngineError::ShutDown(_))),
        "a second sealed shutdown is refused"
    );
    // The active's current log is G+1 with no record.
    let cur = volume::fs::read_all(&a.fs, Path::new("logs/E00.log")).unwrap();
    let h = LogHeader::decode(&cur[..4096]).unwrap();
    assert_eq!(h.generation, g + 1);
    assert!(logfmt::scan(g + 1, &cur, 0).records.is_empty());
    for x in a.closed() {
        p.ship(&a.fs, "logs", x);
    }
    // Nothing replayed before: soft recovery of the inbox does it all.
    let (b, act) = p.activate().unwrap();
    assert_eq!(act.first_generation, g + 1);
    assert_eq!(rows(&b), model(&a.commits, |_| true), "every acknowledged commit");
    // The old active reopens as it was shut down.
    drop(b);
    let Active { fs, inst, commits } = a;
    drop(inst);
    let old = common::open(&fs).unwrap();
    assert_eq!(rows(&old), model(&commits, |_| true));
}

/// An active with commits in closed generations and a few in its current log; the copy has
/// received the closed ones and a byte prefix of the current log cut `cut_into` bytes into
/// its last transaction record. Returns the copy, the commits, the partial's generation and
/// the offset of the torn record.
fn with_partial(cut_into: u32) -> (Copy, Commits, u32, u32) {
    let mut a = Active::new();
    for i in 0..10 {
        a.put(i, 900);
    }
    let copies = seed(&a, 1);
    let p = copies.into_iter().next().unwrap();
    for i in 10..120 {
        a.put(i, 900);
    }
    a.inst.roll_log().unwrap();
    for x in a.closed() {
        p.ship(&a.fs, "logs", x);
    }
    let c = a.closed();
    p.replay_upto(c[c.len() - 2]);
    for i in 120..126 {
        a.put(i, 300);
    }
    let cur = volume::fs::read_all(&a.fs, Path::new("logs/E00.log")).unwrap();
    let h = LogHeader::decode(&cur[..4096]).unwrap();
    let scan = logfmt::scan(h.generation, &cur, 0);
    let (last_at, _) =
        scan.records.iter().rev().find(|(_, r)| matches!(r, Record::Txn { .. })).unwrap();
    let torn_at = last_at.offset();
    write_durable(&p.fs, Path::new("copy/inbox/E00.log"), &cur[..(torn_at + cut_into) as usize]);
    (p, a.commits, h.generation, torn_at)
}

#[test]
fn a_partial_current_log_is_used_up_to_its_last_whole_record() {
    let (p, commits, pg, torn_at) = with_partial(10);
    let (b, act) = p.activate().unwrap();
    let partial = act.partial_log.clone().unwrap();
    assert_eq!(partial.generation, pg);
    assert_eq!(partial.valid_end, torn_at);
    assert!(partial.torn);
    assert_eq!(act.first_generation, pg + 1);
    let expected = model(&commits, |end| end.generation() < pg || end.offset() <= torn_at);
    assert_eq!(rows(&b), expected);
    assert_eq!(expected.len() + 1, commits.len(), "exactly the torn transaction is missing");
    // The partial became a whole closed generation the other copies' inspectors accept.
    let image = volume::fs::read_all(&p.fs, &p.inbox(pg)).unwrap();
    let prev = volume::fs::read_all(&p.fs, &p.inbox(pg - 1)).unwrap();
    let prev = check_continues(&prev, None);
    check_continues(&image, Some(&prev));
    assert!(!p.fs.exists(Path::new("copy/inbox/E00.log.unused")).unwrap());
}

#[test]
fn an_activation_cut_off_by_a_crash_anywhere_is_run_again_and_loses_nothing() {
    let (template, commits, pg, torn_at) = with_partial(25);
    let expected = model(&commits, |end| end.generation() < pg || end.offset() <= torn_at);
    // How many mutating operations an activation performs.
    let dry = Copy { fs: clone_fs(&template.fs, &["copy"]), names: template.names.clone() };
    let before = dry.fs.op_count();
    let (inst, act) = dry.activate().unwrap();
    let total = dry.fs.op_count() - before;
    assert_eq!(rows(&inst), expected);
    drop(inst);
    assert!(total > 10, "{total} operations");
    // Each crash point twice: a clean power loss, and one where some unsynced writes reached
    // the disk torn.
    for (n, torn) in (1..=total).flat_map(|n| [(n, false), (n, true)]) {
        let p = Copy { fs: clone_fs(&template.fs, &["copy"]), names: template.names.clone() };
        if torn {
            p.fs.crash_after_torn(n, n);
        } else {
            p.fs.crash_after(n);
        }
        let first = p.activate();
        assert!(first.is_err() || !p.fs.crash_pending(), "crash point {n} of {total}");
        drop(first);
        p.fs.clear_faults();
        let (inst, again) = p
            .activate()
            .unwrap_or_else(|e| panic!("activation again after a crash at operation {n}: {e}"));
        assert_eq!(rows(&inst), expected, "content after a crash at operation {n}");
        assert_eq!(again.first_generation, act.first_generation, "crash at operation {n}");
        // The new active works: a commit, and its roll continues the stream.
        let mut c = Vec::new();
        put(&inst, &mut c, 9999, 100);
        let g = inst.roll_log().unwrap();
        assert!(g >= act.first_generation);
    }
}

fn rows_of(inst: &Instance, db: &str) -> Rows {
    let r = inst.begin_read().unwrap();
    let mut c = r.cursor(db, T).unwrap();
    c.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn the_new_active_maps_the_streams_database_ids_to_the_copys_files() {
    let mut a = Active::new();
    a.inst.create_database("mb2", Arc::new(a.fs.clone()), "db/mb2.edb").unwrap();
    let mut t = a.inst.begin_write().unwrap();
    t.create_table("mb2", T).unwrap();
    t.commit(Durability::Durable).unwrap();
    let put2 = |inst: &Instance, i: u64| {
        let mut t = inst.begin_write().unwrap();
        t.put("mb2", T, &i.to_be_bytes(), &value(i + 7, 700)).unwrap();
        t.commit(Durability::Durable).unwrap();
    };
    for i in 0..10 {
        a.put(i, 700);
        put2(&a.inst, i);
    }
    let mut copies = seed(&a, 2);
    for c in &mut copies {
        // The copy names its databases in another order than the active attached them.
        c.names.reverse();
    }
    for i in 10..100 {
        a.put(i, 700);
        put2(&a.inst, i);
    }
    let last = a.inst.roll_log().unwrap();
    let ids: Vec<u32> =
        ["mb1", "mb2"].iter().map(|n| a.inst.database_header(n).unwrap().dbid).collect();
    let expected = (rows_of(&a.inst, DB), rows_of(&a.inst, "mb2"));
    let Active { fs: afs, inst, .. } = a;
    drop(inst);
    let (p1, p2) = (&copies[0], &copies[1]);
    for g in closed_in(&afs, Path::new("logs")) {
        p1.ship(&afs, "logs", g);
        p2.ship(&afs, "logs", g);
    }
    let (b, act) = p1.activate().unwrap();
    assert_eq!(act.first_generation, last + 1);
    assert_eq!((rows_of(&b, DB), rows_of(&b, "mb2")), expected);
    let new_ids: Vec<u32> =
        ["mb1", "mb2"].iter().map(|n| b.database_header(n).unwrap().dbid).collect();
    assert_eq!(new_ids, ids, "the databases keep the stream's ids");
    // The new active's records of both databases replay into the other copy.
    for i in 100..160 {
        put2(&b, i);
        let mut t = b.begin_write().unwrap();
        t.put(DB, T, &i.to_be_bytes(), &value(i, 700)).unwrap();
        t.commit(Durability::Durable).unwrap();
    }
    let new_last = b.roll_log().unwrap();
    let expected = (rows_of(&b, DB), rows_of(&b, "mb2"));
    for g in (last + 1)..=new_last {
        p2.ship(&p1.fs, "copy/inbox", g);
    }
    // A restart of the new active in between changes nothing for the copies.
    drop(b);
    let (c, _) = p2.activate().unwrap();
    assert_eq!((rows_of(&c, DB), rows_of(&c, "mb2")), expected);
}

#[test]
fn a_current_log_without_a_usable_record_is_set_aside_never_deleted() {
    // Only the header of the old active's current log arrived: nothing to replay, and the new
    // active's first generation takes its number.
    let (p, commits, pg, _) = with_partial(10);
    let cur = volume::fs::read_all(&p.fs, Path::new("copy/inbox/E00.log")).unwrap();
    write_durable(&p.fs, Path::new("copy/inbox/E00.log"), &cur[..4096]);
    let (b, act) = p.activate().unwrap();
    assert_eq!(act.partial_log, None);
    assert_eq!(act.set_aside, vec![PathBuf::from("copy/inbox/E00.log.unused")]);
    assert_eq!(act.first_generation, pg);
    assert_eq!(rows(&b), model(&commits, |end| end.generation() < pg));
    assert!(p.fs.exists(Path::new("copy/inbox/E00.log.unused")).unwrap());
    drop(b);

    // A current log shorter than its header.
    let (p, commits, pg, _) = with_partial(10);
    write_durable(&p.fs, Path::new("copy/inbox/E00.log"), &cur[..100]);
    let (b, act) = p.activate().unwrap();
    assert_eq!(act.set_aside.len(), 1);
    assert_eq!(act.first_generation, pg);
    assert_eq!(rows(&b), model(&commits, |end| end.generation() < pg));
}

#[test]
fn a_copy_lacking_the_generations_its_seed_requires_is_refused() {
    let mut a = Active::new();
    for i in 0..30 {
        a.put(i, 900);
    }
    // The seed's pages hold changes logged in the current generation.
    a.inst.checkpoint_now().unwrap();
    let needed = a.inst.log_end().generation();
    let copies = seed(&a, 1);
    let p = &copies[0];
    for g in a.closed().into_iter().filter(|g| *g < needed) {
        p.ship(&a.fs, "logs", g);
    }
    match p.activate() {
        Err(EngineError::LogGap { missing, .. }) => assert_eq!(missing, needed),
        other => panic!("expected a log gap at {needed:#X}, got {:?}", other.map(|x| x.1)),
    }
    // Nothing was changed that a later activation with the generation would mind.
    assert!(p.fs.exists(Path::new("copy/E00.pchk")).unwrap());
    p.ship(&a.fs, "logs", needed);
    let (b, act) = p.activate().unwrap();
    assert_eq!(act.first_generation, needed + 1);
    assert_eq!(rows(&b), model(&a.commits, |_| true));
}

/// A commit of `rows` rows of `len` bytes each, recorded in the model.
fn put_many(inst: &Instance, commits: &mut Commits, next: &mut u64, rows: u8, len: u16) {
    let mut t = inst.begin_write().unwrap();
    let mut batch = Vec::new();
    for _ in 0..rows {
        let (k, v) = (next.to_be_bytes().to_vec(), value(*next, len as usize));
        *next += 1;
        t.put(DB, T, &k, &v).unwrap();
        batch.push((k, v));
    }
    t.commit(Durability::Durable).unwrap();
    let end = inst.log_end();
    commits.extend(batch.into_iter().map(|(k, v)| (k, v, end)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: if std::env::var("SHADOWCOPY_STRESS").is_ok_and(|v| v == "1") { 300 } else { 24 },
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Against a model: whatever the copy received (a prefix of the closed generations, part
    /// of them replayed, perhaps a byte prefix of the current log) and wherever a crash cuts
    /// the first activation off, the new active holds exactly the transactions whose commit
    /// record the copy received whole, and continues the stream after them.
    #[test]
    fn activation_keeps_exactly_what_the_copy_received(
        before in proptest::collection::vec((1u8..4, 100u16..1400), 1..10),
        after in proptest::collection::vec((1u8..30, 100u16..1400), 0..60),
        ship in 0u32..=4,
        replay in 0u32..=4,
        partial in proptest::option::of(0usize..8000),
        crash in proptest::option::of(1u64..60),
    ) {
        let mut a = Active::new();
        let mut next = 0u64;
        for (rows, len) in &before {
            put_many(&a.inst, &mut a.commits, &mut next, *rows, *len);
        }
        a.inst.checkpoint_now().unwrap();
        let needed = a.inst.log_end().generation();
        let copies = seed(&a, 1);
        let p = &copies[0];
        for (rows, len) in &after {
            put_many(&a.inst, &mut a.commits, &mut next, *rows, *len);
        }
        let closed = a.closed();
        let last = *closed.last().unwrap();
        let ship_upto = if last < needed { needed.min(last) } else { needed + (last - needed) * ship / 4 };
        if ship_upto < needed {
            // Nothing of the generation the seed needs was closed: not this test's subject.
            return Ok(());
        }
        for g in closed.iter().copied().filter(|g| *g <= ship_upto) {
            p.ship(&a.fs, "logs", g);
        }
        let start = PassiveReplay::open(p.passive()).unwrap().replayed_generation();
        p.replay_upto(start + (ship_upto - start) * replay / 4);
        let cur_image = volume::fs::read_all(&a.fs, Path::new("logs/E00.log")).unwrap();
        let cur = LogHeader::decode(&cur_image[..4096]).unwrap().generation;
        let mut valid_end = None;
        if let Some(cut) = partial {
            let prefix = &cur_image[..(4096 + cut).min(cur_image.len())];
            write_durable(&p.fs, Path::new("copy/inbox/E00.log"), prefix);
            let scan = logfmt::scan(cur, prefix, 0);
            if cur == ship_upto + 1 && !scan.records.is_empty() {
                valid_end = Some(scan.end);
            }
        }
        let Active { inst, commits, .. } = a;
        drop(inst);
        let expected = model(&commits, |end| {
            end.generation() <= ship_upto
                || (end.generation() == cur && valid_end.is_some_and(|v| end.offset() <= v))
        });
        if let Some(n) = crash {
            p.fs.crash_after(n);
            let _ = p.activate();
            p.fs.clear_faults();
        }
        let (b, act) = p.activate().unwrap();
        let last_old = if valid_end.is_some() { cur } else { ship_upto };
        proptest::prop_assert_eq!(act.first_generation, last_old + 1);
        proptest::prop_assert_eq!(rows(&b), expected);
        let mut c = Vec::new();
        put(&b, &mut c, u64::MAX, 100);
        // The new active's first generation, unless an earlier attempt had started the
        // instance: its reopening closed that (empty) generation and went on.
        let rolled = b.roll_log().unwrap();
        if act.reopened {
            proptest::prop_assert!(rolled > last_old + 1);
        } else {
            proptest::prop_assert_eq!(rolled, last_old + 1);
        }
    }
}
