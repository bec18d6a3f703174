//! Model test of a mailbox database: random sequences of mailbox and message operations run
//! against `MailDb` and against a plain in-memory model side by side, through clean
//! dismount/mount cycles and simulated power losses.
//!
//! The crash rule is the store's promise to its callers: a delivery acknowledged with a
//! durable commit survives a crash; a lazily committed one may or may not, but recovery never
//! invents a state that was not acknowledged. Since the log is written in commit order and a
//! durable commit flushes everything before it, the states a crash may leave are: the state
//! at the last durable acknowledgement, followed by each lazily acknowledged state after it.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{Contents, Rig, Stored, body, headers, read_contents, single};
use ese::Durability;
use proptest::prelude::*;
use proptest::sample::Index;
use store::StoreError;
use store::mailbox::DEFAULT_FOLDERS;
use volume::mem::MemFs;

const MAILBOXES: [&str; 3] = ["alice", "bob", "carol"];
/// The mailbox folders plus one that never exists, to exercise the refusals.
const FOLDERS: [&str; 4] = [DEFAULT_FOLDERS[0], DEFAULT_FOLDERS[1], DEFAULT_FOLDERS[2], "Archive"];
/// An id no delivery reaches in a test.
const GHOST_ID: u64 = 1 << 40;

#[derive(Debug, Clone)]
enum Op {
    CreateMailbox(usize),
    Deliver {
        mailbox: usize,
        folder: usize,
        len: usize,
        seed: u64,
        durable: bool,
    },
    List {
        mailbox: usize,
        folder: usize,
    },
    /// `ghost`: aim at a message that does not exist (in mailbox `pick % 3`).
    Read {
        pick: Index,
        ghost: bool,
    },
    Move {
        pick: Index,
        ghost: bool,
        to: usize,
    },
    Delete {
        pick: Index,
        ghost: bool,
    },
    /// Clean dismount and mount.
    Remount,
    /// Power loss, then a restart of the service (mount runs soft recovery).
    Crash {
        torn: bool,
        seed: u64,
    },
}

/// Mostly small bodies, some medium, and now and then one of several MiB (a handful per run:
/// enough to cross log generations and fill overflow pages, few enough to stay fast).
fn body_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        40 => 0usize..2048,
        6 => 2048usize..(96 << 10),
        1 => (1usize << 20)..(5usize << 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..MAILBOXES.len()).prop_map(Op::CreateMailbox),
        8 => (0..MAILBOXES.len(), 0..FOLDERS.len(), body_len(), any::<u64>(), prop::bool::weighted(0.6))
            .prop_map(|(mailbox, folder, len, seed, durable)| Op::Deliver { mailbox, folder, len, seed, durable }),
        2 => (0..MAILBOXES.len(), 0..FOLDERS.len()).prop_map(|(mailbox, folder)| Op::List { mailbox, folder }),
        3 => (any::<Index>(), prop::bool::weighted(0.15)).prop_map(|(pick, ghost)| Op::Read { pick, ghost }),
        2 => (any::<Index>(), prop::bool::weighted(0.15), 0..FOLDERS.len())
            .prop_map(|(pick, ghost, to)| Op::Move { pick, ghost, to }),
        2 => (any::<Index>(), prop::bool::weighted(0.15)).prop_map(|(pick, ghost)| Op::Delete { pick, ghost }),
        1 => Just(Op::Remount),
        1 => (any::<bool>(), any::<u64>()).prop_map(|(torn, seed)| Op::Crash { torn, seed }),
    ]
}

/// The model and the states a crash may legitimately leave.
struct Model {
    now: Contents,
    crash_candidates: Vec<Contents>,
}

impl Model {
    /// A durable commit was acknowledged: it and every lazy commit before it are on disk.
    fn durable(&mut self) {
        self.crash_candidates = vec![self.now.clone()];
    }
    /// A lazy commit was acknowledged: it may or may not survive a crash.
    fn lazy(&mut self) {
        self.crash_candidates.push(self.now.clone());
    }
    /// The existing message `pick` chooses, or a ghost in mailbox `pick % 3`.
    fn target(&self, pick: &Index, ghost: bool) -> (String, u64, Option<Stored>) {
        if ghost || self.now.messages.is_empty() {
            return (MAILBOXES[pick.index(MAILBOXES.len())].to_string(), GHOST_ID, None);
        }
        let (k, v) = self.now.messages.iter().nth(pick.index(self.now.messages.len())).unwrap();
        (k.0.clone(), k.1, Some(v.clone()))
    }
}

fn folder_exists(folder: &str) -> bool {
    DEFAULT_FOLDERS.contains(&folder)
}

fn step(fs: &MemFs, slot: &mut Option<Rig>, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let rig = slot.as_ref().expect("the service runs");
    let db = rig.db("DB1");
    match op {
        Op::CreateMailbox(i) => {
            let mb = MAILBOXES[*i];
            match db.create_mailbox(mb) {
                Ok(()) => {
                    prop_assert!(m.now.mailboxes.insert(mb.to_string()), "{mb} created twice");
                    m.durable();
                }
                Err(StoreError::MailboxExists(n)) => {
                    prop_assert_eq!(&n, mb);
                    prop_assert!(m.now.mailboxes.contains(mb));
                }
                Err(e) => return Err(TestCaseError::fail(format!("create {mb}: {e}"))),
            }
        }
        Op::Deliver { mailbox, folder, len, seed, durable } => {
            let (mb, folder) = (MAILBOXES[*mailbox], FOLDERS[*folder]);
            let content = body(*len, *seed);
            let h = headers(mb, *seed);
            let durability = if *durable { Durability::Durable } else { Durability::Lazy };
            let r = db.deliver(mb, folder, h.clone(), &content, durability);
            match r {
                Ok(id) => {
                    prop_assert!(m.now.mailboxes.contains(mb) && folder_exists(folder));
                    // Ids are unique in the database and grow: the next id is committed in
                    // the same transaction as each message.
                    prop_assert!(
                        m.now.messages.keys().all(|(_, i)| *i < id),
                        "id {} not above every existing id",
                        id
                    );
                    m.now.messages.insert((mb.into(), id), Stored::new(folder, h, &content));
                    if *durable { m.durable() } else { m.lazy() }
                }
                Err(StoreError::NoSuchMailbox(n)) => {
                    prop_assert_eq!(&n, mb);
                    prop_assert!(!m.now.mailboxes.contains(mb));
                }
                Err(StoreError::NoSuchFolder { mailbox, folder: f }) => {
                    prop_assert_eq!((mailbox.as_str(), f.as_str()), (mb, folder));
                    prop_assert!(m.now.mailboxes.contains(mb) && !folder_exists(folder));
                }
                Err(e) => {
                    return Err(TestCaseError::fail(format!("deliver to {mb}/{folder}: {e}")));
                }
            }
        }
        Op::List { mailbox, folder } => {
            let (mb, folder) = (MAILBOXES[*mailbox], FOLDERS[*folder]);
            match db.list(mb, folder) {
                Ok(listing) => {
                    prop_assert!(m.now.mailboxes.contains(mb));
                    let want: Vec<(u64, String, String, u64)> = m
                        .now
                        .messages
                        .iter()
                        .filter(|((b, _), s)| b == mb && s.folder == folder)
                        .map(|((_, id), s)| {
                            (*id, s.headers.subject.clone(), s.headers.from.clone(), s.len as u64)
                        })
                        .collect();
                    let got: Vec<(u64, String, String, u64)> =
                        listing.into_iter().map(|s| (s.id, s.subject, s.from, s.size)).collect();
                    prop_assert_eq!(got, want);
                }
                Err(StoreError::NoSuchMailbox(_)) => prop_assert!(!m.now.mailboxes.contains(mb)),
                Err(e) => return Err(TestCaseError::fail(format!("list {mb}/{folder}: {e}"))),
            }
        }
        Op::Read { pick, ghost } => {
            let (mb, id, want) = m.target(pick, *ghost);
            match (db.read(&mb, id), want) {
                (Ok((folder, msg)), Some(w)) => {
                    prop_assert_eq!(Stored::new(&folder, msg.headers, &msg.body), w);
                }
                (Err(StoreError::NoSuchMessage { mailbox, id: i }), None) => {
                    prop_assert_eq!((mailbox.as_str(), i), (mb.as_str(), id));
                }
                (r, w) => {
                    return Err(TestCaseError::fail(format!(
                        "read {id} of {mb}: got {:?}, model has {w:?}",
                        r.map(|(f, msg)| (f, msg.headers))
                    )));
                }
            }
        }
        Op::Move { pick, ghost, to } => {
            let (mb, id, want) = m.target(pick, *ghost);
            let to = FOLDERS[*to];
            // The refusals come in this order: mailbox, folder, message.
            let expect_err = if !m.now.mailboxes.contains(&mb) {
                Some("mailbox")
            } else if !folder_exists(to) {
                Some("folder")
            } else if want.is_none() {
                Some("message")
            } else {
                None
            };
            match (db.move_message(&mb, id, to), expect_err) {
                (Ok(()), None) => {
                    m.now.messages.get_mut(&(mb, id)).expect("target exists").folder = to.into();
                    m.durable();
                }
                (Err(StoreError::NoSuchMailbox(_)), Some("mailbox"))
                | (Err(StoreError::NoSuchFolder { .. }), Some("folder"))
                | (Err(StoreError::NoSuchMessage { .. }), Some("message")) => {}
                (r, want) => {
                    return Err(TestCaseError::fail(format!(
                        "move {id} of {mb} to {to}: got {r:?}, expected refusal {want:?}"
                    )));
                }
            }
        }
        Op::Delete { pick, ghost } => {
            let (mb, id, want) = m.target(pick, *ghost);
            let existed = db.delete(&mb, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(existed, want.is_some());
            if existed {
                m.now.messages.remove(&(mb, id));
                m.durable();
            }
        }
        Op::Remount => {
            drop(db);
            rig.sg.dismount(false).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(rig.sg.mail("DB1").is_err(), "no mail while dismounted");
            rig.sg.mount().map_err(|e| TestCaseError::fail(e.to_string()))?;
            // A clean dismount writes everything, lazy commits included.
            prop_assert_eq!(&read_contents(&rig.db("DB1")), &m.now);
            m.durable();
        }
        Op::Crash { torn, seed } => {
            drop(db);
            if *torn {
                fs.crash_torn(*seed);
            } else {
                fs.crash();
            }
            // The service restarts: the old store goes away without shutting down, before
            // the new one opens the files.
            drop(slot.take());
            let rig = slot.insert(Rig::start(single(fs)));
            let got = read_contents(&rig.db("DB1"));
            prop_assert!(
                m.crash_candidates.contains(&got),
                "recovered {} mailboxes / {} messages; acknowledged states after the last durable commit: {:?}",
                got.mailboxes.len(),
                got.messages.len(),
                m.crash_candidates.iter().map(|c| c.messages.len()).collect::<Vec<_>>()
            );
            m.now = got;
            m.durable();
        }
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let fs = MemFs::new();
    let mut rig = Some(Rig::start(single(&fs)));
    let mut m = Model { now: Contents::default(), crash_candidates: vec![Contents::default()] };
    for op in ops {
        step(&fs, &mut rig, &mut m, op)?;
    }
    let rig = rig.expect("the service runs");
    // Whatever happened, a final clean cycle shows exactly the model.
    rig.sg.dismount(false).map_err(|e| TestCaseError::fail(e.to_string()))?;
    rig.sg.mount().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&read_contents(&rig.db("DB1")), &m.now);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 400, ..ProptestConfig::default() })]

    #[test]
    fn maildb_matches_a_model_across_remounts_and_crashes(ops in prop::collection::vec(op(), 1..48)) {
        run(&ops)?;
    }
}

/// The same rules on a fixed sequence with several multi-MiB bodies, so that large messages
/// are always covered whatever the random cases draw: delivered, listed, moved, read back
/// byte for byte, and surviving a clean remount and a torn crash.
#[test]
fn large_bodies_survive_remount_and_crash() {
    let fs = MemFs::new();
    let rig = Rig::start(single(&fs));
    let db = rig.db("DB1");
    db.create_mailbox("alice").unwrap();
    let sizes = [3 << 20, (5 << 20) + 7, 1, (2 << 20) - 3];
    let mut ids = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        let content = body(*len, i as u64);
        ids.push(
            db.deliver("alice", "Inbox", headers("alice", i as u64), &content, Durability::Durable)
                .unwrap(),
        );
    }
    db.move_message("alice", ids[1], "Deleted Items").unwrap();
    let check = |rig: &Rig| {
        let db = rig.db("DB1");
        for (i, (len, id)) in sizes.iter().zip(&ids).enumerate() {
            let (folder, m) = db.read("alice", *id).unwrap();
            assert_eq!(folder, if i == 1 { "Deleted Items" } else { "Inbox" });
            assert!(m.body == body(*len, i as u64), "body of message {id} differs");
        }
        let inbox: Vec<u64> = db.list("alice", "Inbox").unwrap().iter().map(|s| s.id).collect();
        assert_eq!(inbox, [ids[0], ids[2], ids[3]]);
        let c = read_contents(&db);
        assert_eq!(c.mailboxes, BTreeSet::from(["alice".to_string()]));
        assert_eq!(c.messages.len(), sizes.len());
    };
    check(&rig);
    drop(db);
    rig.sg.dismount(false).unwrap();
    rig.sg.mount().unwrap();
    check(&rig);
    fs.crash_torn(7);
    drop(rig);
    let rig = Rig::start(single(&fs));
    check(&rig);
}
