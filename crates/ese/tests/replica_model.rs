//! The log against the active: random transactions on one instance, and the copies that
//! rebuild its pages from the log — recovery and a passive copy — checked after each commit.
//!
//! Why this test: the commit path may log only the byte ranges a change reports instead of
//! comparing the page with its previous version. A byte the active changed but did not log
//! is invisible to the active (its pages are in memory) and to every test that reads through
//! it; only a copy that rebuilds pages from the log (soft recovery, a passive copy, its
//! activation at a failover) sees it. So:
//!
//! - after every commit, soft recovery on a copy of the files as they are at that moment
//!   (what killing the process leaves) holds one of the states committed since the last
//!   durable commit;
//! - after a power loss (clean or with torn writes), soft recovery holds one of those states
//!   too, and the instance goes on from it (the passive copy following the same stream);
//! - at sync steps, a passive copy seeded from a snapshot replays the closed generations and
//!   every page of its database equals the active's after a checkpoint, byte for byte (so a
//!   range the commit forgot to log shows even where it changes no visible row);
//! - at the end, the passive activated with the durable prefix of the current log (what a
//!   synchronous copy holds when the active is killed) holds every acknowledged commit.
//!
//! The operations are chosen to move leaf tails: keys of several lengths inserted between
//! others, overwrites that grow and shrink values, values around the inline limit and
//! overflow values, deletes, rollbacks, splits, forced page flushes under a small cache,
//! readers pinning old page versions, log rolls and checkpoints between commits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{DB, T, clone_fs, closed_in, value, write_durable};
use ese::{
    DatabaseSpec, Durability, Instance, InstanceConfig, PassiveConfig, PassiveReplay, ReadTxn,
    logfmt,
};
use proptest::prelude::*;
use volume::mem::MemFs;
use volume::{FileSystem, FsRef};

const PREFIX: &str = "E00";
const PAGE: usize = 4096;
const DB_PATH: &str = "db/mb1.edb";
const COPY_DB_PATH: &str = "copy/db/mb1.edb";

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u16, usize),
    Delete(u16),
}

#[derive(Debug, Clone)]
enum Step {
    Txn {
        ops: Vec<Op>,
        commit: bool,
        durable: bool,
    },
    /// Writes the dirty pages (the next change of each is logged whole).
    Checkpoint,
    /// Closes the current generation.
    Roll,
    /// Pins a reader (older page versions stay cached), or releases the pinned one.
    Reader,
    /// Seeds the passive copy the first time; then ships the closed generations to it, and
    /// compares its pages with the active's.
    Sync,
    /// A power loss (`torn`: some unsynced writes reach the disk torn), then soft recovery.
    Crash {
        torn: bool,
    },
}

/// Value lengths: small, medium, around the inline limit of a 4 KiB page (an entry of at most
/// 1016 bytes with its key), and overflow chains.
fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..40,
        4 => 40usize..400,
        2 => 960usize..1060,
        1 => 1100usize..9000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u16..160, len()).prop_map(|(k, l)| Op::Put(k, l)),
        2 => (0u16..160).prop_map(Op::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (prop::collection::vec(op(), 1..24), prop::bool::weighted(0.85), prop::bool::weighted(0.7))
            .prop_map(|(ops, commit, durable)| Step::Txn { ops, commit, durable }),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Roll),
        1 => Just(Step::Reader),
        2 => Just(Step::Sync),
        1 => any::<bool>().prop_map(|torn| Step::Crash { torn }),
    ]
}

/// Keys of several lengths, so an insert or an overwrite moves the entries after it by
/// amounts that are not multiples of anything.
fn key(k: u16) -> Vec<u8> {
    let mut s = format!("k{k:04}");
    s.push_str(&"x".repeat((k % 5) as usize * 7));
    s.into_bytes()
}

/// The test's instance configuration: no lazy writer between steps (page flushes happen at
/// the test's checkpoints and where cache pressure forces them inside a commit), so a
/// failing case runs the same way again.
fn config(fs: &MemFs, cache_pages: usize) -> InstanceConfig {
    let mut c = common::config(fs);
    c.cache_pages = cache_pages;
    c.lazy_interval = Duration::from_secs(3600);
    c
}

fn create(fs: &MemFs, cache_pages: usize) -> Instance {
    let inst = Instance::create(config(fs, cache_pages)).unwrap();
    inst.create_database(DB, Arc::new(fs.clone()), DB_PATH).unwrap();
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    t.commit(Durability::Durable).unwrap();
    inst
}

fn rows(inst: &Instance) -> Rows {
    common::all_rows(inst).into_iter().collect()
}

fn reader_rows(r: &ReadTxn) -> Rows {
    let mut c = r.cursor(DB, T).unwrap();
    c.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

/// A passive copy in its own file system, laid out as a node lays out a copy directory.
struct Copy {
    fs: MemFs,
}

impl Copy {
    fn fsref(&self) -> FsRef {
        Arc::new(self.fs.clone())
    }

    fn databases(&self) -> Vec<DatabaseSpec> {
        vec![DatabaseSpec::new(DB, self.fsref(), COPY_DB_PATH)]
    }

    fn passive(&self) -> PassiveConfig {
        PassiveConfig {
            databases: self.databases(),
            checkpoint_fs: self.fsref(),
            checkpoint_path: "copy/E00.pchk".into(),
            prefix: PREFIX.into(),
        }
    }

    fn inbox(&self, g: u32) -> PathBuf {
        Path::new("copy/inbox").join(logfmt::generation_name(PREFIX, g))
    }

    /// Ships every closed generation of the active not shipped yet.
    fn ship_closed(&self, active: &MemFs) {
        for g in closed_in(active, Path::new("logs")) {
            let dst = self.inbox(g);
            if !self.fs.exists(&dst).unwrap() {
                let name = logfmt::generation_name(PREFIX, g);
                let data = volume::fs::read_all(active, &Path::new("logs").join(name)).unwrap();
                write_durable(&self.fs, &dst, &data);
            }
        }
    }

    /// Applies every shipped generation after the passive checkpoint.
    fn replay(&self) {
        let mut r = PassiveReplay::open(self.passive()).unwrap();
        let gens: Vec<PathBuf> = closed_in(&self.fs, Path::new("copy/inbox"))
            .into_iter()
            .filter(|g| *g > r.replayed_generation())
            .map(|g| self.inbox(g))
            .collect();
        if !gens.is_empty() {
            r.apply_batch(&self.fsref(), &gens).unwrap();
        }
    }
}

/// Seeds a passive copy from the active's database as a copy backup freezes it.
fn seed(fs: &MemFs, inst: &Instance) -> Copy {
    let mut b = inst.backup_session(ese::BackupKind::Copy).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    let db = volume::fs::read_all(fs, Path::new(DB_PATH)).unwrap();
    b.thaw().unwrap();
    b.end().unwrap();
    let c = Copy { fs: MemFs::new() };
    write_durable(&c.fs, Path::new(COPY_DB_PATH), &db);
    PassiveReplay::open(c.passive()).unwrap();
    c
}

/// Page `pgno` of a database file; zeros past its end.
fn page_of(image: &[u8], pgno: usize) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    let at = pgno * PAGE;
    if at < image.len() {
        let n = (image.len() - at).min(PAGE);
        p[..n].copy_from_slice(&image[at..at + n]);
    }
    p
}

/// The first difference between two database files, all pages but the two header pages
/// compared: (page, first differing byte after the checksum, which differs whenever anything
/// else does).
fn first_page_difference(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    let pages = a.len().max(b.len()).div_ceil(PAGE);
    (2..pages).find_map(|pg| {
        let (x, y) = (page_of(a, pg), page_of(b, pg));
        if x == y {
            return None;
        }
        Some((pg, x[8..].iter().zip(&y[8..]).position(|(p, q)| p != q).map_or(0, |at| at + 8)))
    })
}

/// Whether `got` is one of `states` (the states recovery may legitimately produce), with the
/// index of the state it is.
fn which(states: &[Rows], got: &Rows) -> Option<usize> {
    states.iter().position(|s| s == got)
}

fn run(steps: Vec<Step>, cache_pages: usize) -> Result<(), TestCaseError> {
    let fs = MemFs::new();
    let mut inst = create(&fs, cache_pages);
    let mut model = Rows::new();
    // The states since the last durable commit (the first is that commit's): what a copy
    // rebuilt from the log may hold, depending on how much of the lazily committed tail
    // reached the log file.
    let mut states = vec![model.clone()];
    let mut reader: Option<(ReadTxn, Rows)> = None;
    let mut copy: Option<Copy> = None;
    let mut seq = 0u64;
    let mut commits = 0usize;
    for (i, s) in steps.into_iter().enumerate() {
        match s {
            Step::Txn { ops, commit, durable } => {
                let mut t = inst.begin_write().unwrap();
                let mut pending = model.clone();
                for o in ops {
                    match o {
                        Op::Put(k, len) => {
                            seq += 1;
                            let v = value(seq, len);
                            t.put(DB, T, &key(k), &v).unwrap();
                            pending.insert(key(k), v);
                        }
                        Op::Delete(k) => {
                            let existed = t.delete(DB, T, &key(k)).unwrap();
                            prop_assert_eq!(existed, pending.remove(&key(k)).is_some());
                        }
                    }
                }
                for k in [0u16, 3, 77, 159] {
                    prop_assert_eq!(t.get(DB, T, &key(k)).unwrap(), pending.get(&key(k)).cloned());
                }
                if !commit {
                    t.rollback();
                    continue;
                }
                t.commit(if durable { Durability::Durable } else { Durability::Lazy }).unwrap();
                model = pending;
                commits += 1;
                if durable {
                    states.clear();
                }
                states.push(model.clone());
                // Recovery from the files as a kill would leave them now.
                let killed = clone_fs(&fs, &["logs", "sys", "db"]);
                let spec = DatabaseSpec::new(DB, Arc::new(killed.clone()), DB_PATH);
                let rec = Instance::open(config(&killed, 64), vec![spec]).unwrap();
                let got = rows(&rec);
                prop_assert!(
                    which(&states, &got).is_some(),
                    "step {i} (commit {commits}): recovery from the files holds none of the {} \
                     states committed since the last durable commit ({} rows, the active {})",
                    states.len(),
                    got.len(),
                    model.len()
                );
                drop(rec);
            }
            Step::Checkpoint => {
                inst.checkpoint_now().unwrap();
                // A checkpoint flushes the log first: everything committed is durable.
                states = vec![model.clone()];
            }
            Step::Roll => {
                inst.roll_log().unwrap();
                states = vec![model.clone()];
            }
            Step::Reader => match reader.take() {
                Some((r, seen)) => {
                    prop_assert_eq!(reader_rows(&r), seen, "a pinned reader's snapshot moved");
                }
                None => {
                    let r = inst.begin_read().unwrap();
                    reader = Some((r, model.clone()));
                }
            },
            Step::Crash { torn } => {
                // A reader of the instance that dies dies with it.
                reader = None;
                if torn {
                    fs.crash_torn(seq);
                } else {
                    fs.crash();
                }
                drop(inst);
                let spec = DatabaseSpec::new(DB, Arc::new(fs.clone()), DB_PATH);
                inst = Instance::open(config(&fs, cache_pages), vec![spec]).unwrap();
                let got = rows(&inst);
                prop_assert!(
                    which(&states, &got).is_some(),
                    "step {i}: after a power loss, recovery holds none of the {} states committed \
                     since the last durable commit ({} rows, the active had {})",
                    states.len(),
                    got.len(),
                    model.len()
                );
                model = got;
                states = vec![model.clone()];
            }
            Step::Sync => match &copy {
                None => copy = Some(seed(&fs, &inst)),
                Some(c) => {
                    inst.checkpoint_now().unwrap();
                    inst.roll_log().unwrap();
                    states = vec![model.clone()];
                    c.ship_closed(&fs);
                    c.replay();
                    let active = volume::fs::read_all(&fs, Path::new(DB_PATH)).unwrap();
                    let passive = volume::fs::read_all(&c.fs, Path::new(COPY_DB_PATH)).unwrap();
                    let diff = first_page_difference(&active, &passive);
                    prop_assert!(
                        diff.is_none(),
                        "step {i}: the passive's page {:?} (page, byte) differs from the active's",
                        diff
                    );
                }
            },
        }
    }
    drop(reader);
    prop_assert_eq!(rows(&inst), model.clone());
    if let Some(c) = copy {
        // The active is killed with a synchronous copy following it: the copy holds the
        // closed generations and the current log up to its durable end.
        c.ship_closed(&fs);
        // The generation being written (the log's own count may already be past it while the
        // records of the next one wait in its buffer).
        let g = inst.read_current_log(0, 0, 0).unwrap().current;
        let cur = inst.read_current_log(g, 0, usize::MAX).unwrap();
        if !cur.closed {
            write_durable(&c.fs, Path::new("copy/inbox/E00.log"), &cur.bytes);
        }
        drop(inst);
        let (b, _) = ese::activate(&c.passive(), copy_config(&c), c.databases()).unwrap();
        let got = rows(&b);
        prop_assert!(
            which(&states, &got).is_some(),
            "the activated copy holds none of the {} states committed since the last durable \
             commit ({} rows, the active {})",
            states.len(),
            got.len(),
            model.len()
        );
    }
    Ok(())
}

/// The instance configuration over the copy (as a node builds it at activation).
fn copy_config(c: &Copy) -> InstanceConfig {
    let f = c.fsref();
    let mut cfg = InstanceConfig::new(f.clone(), "copy/inbox", f, "copy");
    cfg.log_file_size = 64 * 1024;
    cfg.page_size = PAGE;
    cfg.cache_pages = 64;
    cfg
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("SHADOWCOPY_REPLICA_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if std::env::var("SHADOWCOPY_STRESS").is_ok_and(|v| v == "1") { 400 } else { 32 }),
        ..ProptestConfig::default()
    })]

    #[test]
    fn copies_rebuilt_from_the_log_match_the_active(
        steps in prop::collection::vec(step(), 1..50),
        cache_pages in prop_oneof![Just(16usize), Just(40), Just(256)],
    ) {
        run(steps, cache_pages)?;
    }
}

/// The same checks on one long fixed run, so every build exercises a seeded passive through
/// many generations, flushes and rolls whatever the random cases drew.
#[test]
fn a_long_run_keeps_recovery_and_the_passive_identical_to_the_active() {
    let mut steps = vec![Step::Sync];
    for round in 0..40u16 {
        let ops = (0..12u16)
            .map(|j| {
                let k = (round * 37 + j * 13) % 160;
                match (round + j) % 9 {
                    0 => Op::Delete(k),
                    1 => Op::Put(k, 980 + (j as usize * 7) % 60),
                    2 if j % 4 == 0 => Op::Put(k, 3000),
                    _ => Op::Put(k, ((round as usize * 31 + j as usize * 17) % 300) + 1),
                }
            })
            .collect();
        steps.push(Step::Txn { ops, commit: round % 11 != 5, durable: round % 3 != 0 });
        match round % 10 {
            3 => steps.push(Step::Reader),
            4 => steps.push(Step::Crash { torn: round % 20 == 4 }),
            6 => steps.push(Step::Checkpoint),
            7 => steps.push(Step::Sync),
            9 => steps.push(Step::Roll),
            _ => {}
        }
    }
    steps.push(Step::Sync);
    run(steps, 40).unwrap();
}

/// A fixed case: a seed, lazy and durable commits, and at the end lazy records buffered past
/// a roll the log has not written yet, so the generation being written is not the log's count.
#[test]
fn an_activation_with_lazy_commits_buffered_past_a_roll_keeps_the_durable_ones() {
    use Op::{Delete as D, Put as P};
    let t = |ops: Vec<Op>, durable: bool| Step::Txn { ops, commit: true, durable };
    let steps = vec![
        t(vec![P(58, 78)], false),
        t(vec![P(7, 1031), P(127, 23), P(115, 33)], false),
        t(vec![P(9, 0), P(10, 27), D(8), P(77, 247)], false),
        t(vec![P(54, 8236), D(148)], false),
        t(
            vec![
                P(7, 253),
                P(3, 7229),
                P(18, 264),
                P(125, 87),
                D(81),
                P(57, 266),
                P(72, 8),
                P(50, 21),
                P(141, 1036),
                P(119, 1055),
                P(145, 21),
                D(52),
            ],
            false,
        ),
        Step::Sync,
        t(
            vec![
                P(153, 973),
                P(54, 1327),
                P(75, 966),
                P(52, 9),
                P(119, 380),
                P(112, 973),
                P(52, 1049),
                P(53, 5),
            ],
            false,
        ),
        Step::Checkpoint,
        t(
            vec![
                P(17, 1002),
                P(88, 21),
                P(103, 18),
                D(20),
                P(12, 45),
                P(76, 1043),
                P(98, 970),
                P(123, 23),
            ],
            true,
        ),
        t(
            vec![
                D(42),
                D(127),
                P(139, 26),
                P(13, 16),
                D(102),
                P(72, 11),
                P(107, 3677),
                P(5, 995),
                P(58, 27),
                P(87, 7),
                D(138),
                P(69, 207),
                P(14, 286),
                D(128),
                D(105),
                D(39),
                P(22, 2225),
                P(146, 14),
                D(146),
                P(134, 2545),
            ],
            true,
        ),
        t(
            vec![
                P(92, 36),
                P(93, 370),
                D(70),
                D(149),
                P(70, 978),
                P(82, 1039),
                P(126, 1022),
                P(58, 339),
                P(134, 1040),
                P(71, 354),
                D(9),
                P(151, 2),
                P(117, 308),
                P(37, 222),
                P(107, 7543),
                D(107),
            ],
            true,
        ),
        t(
            vec![
                P(96, 90),
                P(73, 8896),
                P(51, 1),
                P(32, 2456),
                P(129, 268),
                P(149, 26),
                P(134, 24),
                P(105, 1052),
                D(81),
            ],
            false,
        ),
        t(
            vec![
                P(37, 3881),
                D(92),
                P(56, 7),
                D(41),
                P(125, 277),
                D(159),
                D(112),
                P(41, 2291),
                P(16, 36),
                D(154),
                P(130, 211),
                P(98, 382),
                P(3, 162),
                P(107, 8),
                P(117, 68),
            ],
            true,
        ),
        t(
            vec![
                P(117, 9),
                P(7, 256),
                P(125, 5470),
                D(127),
                P(149, 11),
                D(35),
                P(9, 4),
                P(72, 8),
                P(122, 974),
                D(153),
                D(22),
                P(83, 17),
                D(93),
            ],
            false,
        ),
    ];
    run(steps, 40).unwrap();
}
