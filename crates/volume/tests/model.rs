//! Model-based test of the shadow volume: random interleavings of writes, extensions,
//! truncations, creations, renames, removals, directory changes, syncs, snapshot-set commits
//! and snapshot deletions across two volumes. After every step, every live snapshot's view
//! equals (names, sizes, bytes) the model's copy frozen at its commit, and each live volume
//! equals the model's live state.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use uuid::Uuid;
use volume::fs::read_all;
use volume::{CommitOptions, FileKind, FileSystem, OpenMode, Volume, VolumeOptions, commit_set};

const NAMES: [&str; 7] = ["a", "b", "c", "d/x", "d/y", "e/z", "d/w"];
const DIRS: [&str; 2] = ["d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Write { v: usize, f: usize, off: u64, len: usize, seed: u8 },
    SetLen { v: usize, f: usize, len: u64 },
    Create { v: usize, f: usize },
    Rename { v: usize, from: usize, to: usize },
    RenameDir { v: usize, from: usize },
    Remove { v: usize, f: usize },
    Mkdir { v: usize, d: usize },
    Rmdir { v: usize, d: usize },
    Sync { v: usize, f: usize },
    Snapshot { mask: u8, persistent: bool },
    Delete { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let v = 0..2usize;
    let f = 0..NAMES.len();
    prop_oneof![
        6 => (v.clone(), f.clone(), 0..6000u64, 1..2500usize, any::<u8>())
            .prop_map(|(v, f, off, len, seed)| Op::Write { v, f, off, len, seed }),
        2 => (v.clone(), f.clone(), 0..9000u64).prop_map(|(v, f, len)| Op::SetLen { v, f, len }),
        2 => (v.clone(), f.clone()).prop_map(|(v, f)| Op::Create { v, f }),
        2 => (v.clone(), f.clone(), f.clone()).prop_map(|(v, from, to)| Op::Rename { v, from, to }),
        1 => (v.clone(), 0..2usize).prop_map(|(v, from)| Op::RenameDir { v, from }),
        2 => (v.clone(), f.clone()).prop_map(|(v, f)| Op::Remove { v, f }),
        1 => (v.clone(), 0..2usize).prop_map(|(v, d)| Op::Mkdir { v, d }),
        1 => (v.clone(), 0..2usize).prop_map(|(v, d)| Op::Rmdir { v, d }),
        1 => (v.clone(), f.clone()).prop_map(|(v, f)| Op::Sync { v, f }),
        3 => (1..4u8, any::<bool>()).prop_map(|(mask, persistent)| Op::Snapshot { mask, persistent }),
        1 => (0..64usize).prop_map(|pick| Op::Delete { pick }),
    ]
}

/// The model of one volume: files by path, and directories.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl Model {
    fn parent_exists(&self, path: &str) -> bool {
        match path.rsplit_once('/') {
            Some((d, _)) => self.dirs.contains(d),
            None => true,
        }
    }
}

/// Reads a whole tree through the seam into a model.
fn observe(fs: &dyn FileSystem) -> Model {
    let mut m = Model::default();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(Path::new(&dir)).unwrap() {
            let p = if dir.is_empty() { e.name.clone() } else { format!("{dir}/{}", e.name) };
            match e.kind {
                FileKind::Dir => {
                    m.dirs.insert(p.clone());
                    stack.push(p);
                }
                FileKind::File => {
                    let data = read_all(fs, Path::new(&p)).unwrap();
                    assert_eq!(data.len() as u64, e.len, "listed size of {p}");
                    m.files.insert(p, data);
                }
            }
        }
    }
    m
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let vols: Vec<Volume> = (0..2)
        .map(|i| {
            let label = format!("v{i}");
            Volume::create(dir.path().join(&label), VolumeOptions { label, block_size: 512 })
                .unwrap()
        })
        .collect();
    let mut live = [Model::default(), Model::default()];
    // (volume, snapshot id, frozen model)
    let mut snaps: Vec<(usize, Uuid, Model)> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write { v, f, off, len, seed } => {
                let name = NAMES[f];
                if !live[v].parent_exists(name) {
                    continue;
                }
                let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8) | 1).collect();
                let h = vols[v].open(Path::new(name), OpenMode::Create).unwrap();
                h.write_at(&data, off).unwrap();
                let file = live[v].files.entry(name.to_string()).or_default();
                let end = off as usize + len;
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[off as usize..end].copy_from_slice(&data);
            }
            Op::SetLen { v, f, len } => {
                let name = NAMES[f];
                let Some(file) = live[v].files.get_mut(name) else { continue };
                vols[v].open(Path::new(name), OpenMode::ReadWrite).unwrap().set_len(len).unwrap();
                file.resize(len as usize, 0);
            }
            Op::Create { v, f } => {
                let name = NAMES[f];
                if !live[v].parent_exists(name) {
                    continue;
                }
                vols[v].open(Path::new(name), OpenMode::Create).unwrap();
                live[v].files.entry(name.to_string()).or_default();
            }
            Op::Rename { v, from, to } => {
                let (from, to) = (NAMES[from], NAMES[to]);
                if from == to || !live[v].files.contains_key(from) || !live[v].parent_exists(to) {
                    continue;
                }
                vols[v].rename(Path::new(from), Path::new(to)).unwrap();
                let data = live[v].files.remove(from).unwrap();
                live[v].files.insert(to.to_string(), data);
            }
            Op::RenameDir { v, from } => {
                let (from, to) = (DIRS[from], DIRS[1 - from]);
                if !live[v].dirs.contains(from) || live[v].dirs.contains(to) {
                    continue;
                }
                vols[v].rename(Path::new(from), Path::new(to)).unwrap();
                live[v].dirs.remove(from);
                live[v].dirs.insert(to.to_string());
                let moved: Vec<String> = live[v]
                    .files
                    .keys()
                    .filter(|k| k.starts_with(&format!("{from}/")))
                    .cloned()
                    .collect();
                for k in moved {
                    let data = live[v].files.remove(&k).unwrap();
                    live[v].files.insert(format!("{to}/{}", &k[from.len() + 1..]), data);
                }
            }
            Op::Remove { v, f } => {
                let name = NAMES[f];
                if live[v].files.remove(name).is_none() {
                    continue;
                }
                vols[v].remove_file(Path::new(name)).unwrap();
            }
            Op::Mkdir { v, d } => {
                vols[v].create_dir_all(Path::new(DIRS[d])).unwrap();
                live[v].dirs.insert(DIRS[d].to_string());
            }
            Op::Rmdir { v, d } => {
                let d = DIRS[d];
                let prefix = format!("{d}/");
                if !live[v].dirs.contains(d) || live[v].files.keys().any(|k| k.starts_with(&prefix))
                {
                    continue;
                }
                vols[v].remove_dir(Path::new(d)).unwrap();
                live[v].dirs.remove(d);
            }
            Op::Sync { v, f } => {
                if live[v].files.contains_key(NAMES[f]) {
                    vols[v].open(Path::new(NAMES[f]), OpenMode::Read).unwrap().sync().unwrap();
                }
            }
            Op::Snapshot { mask, persistent } => {
                let set: Vec<usize> = (0..2).filter(|i| mask & (1 << i) != 0).collect();
                let members: Vec<Volume> = set.iter().map(|&i| vols[i].clone()).collect();
                let opts = CommitOptions { persistent, ..Default::default() };
                let r = commit_set(&members, Uuid::new_v4(), &opts).unwrap();
                for (&i, info) in set.iter().zip(&r.snapshots) {
                    assert_eq!(info.volume, vols[i].guid());
                    snaps.push((i, info.id, live[i].clone()));
                }
            }
            Op::Delete { pick } => {
                if snaps.is_empty() {
                    continue;
                }
                let (v, id, _) = snaps.remove(pick % snaps.len());
                vols[v].delete_snapshot(id).unwrap();
                assert!(vols[v].view(id).is_err());
            }
        }
        for (i, v) in vols.iter().enumerate() {
            assert_eq!(observe(v), live[i], "live volume {i} after step {step}");
        }
        for (i, id, frozen) in &snaps {
            let view = vols[*i].view(*id).unwrap();
            assert_eq!(&observe(&view), frozen, "snapshot {id} of volume {i} after step {step}");
        }
    }
    // Deleting everything leaves no parked file and no diff bytes behind.
    for (v, id, _) in snaps {
        vols[v].delete_snapshot(id).unwrap();
    }
    for v in &vols {
        assert_eq!(v.shadow_storage_used(), 0);
        assert_eq!(std::fs::read_dir(v.root().join(".shadowcopy/links")).unwrap().count(), 0);
    }
}

fn cases() -> u32 {
    if std::env::var_os("SHADOWCOPY_STRESS").is_some() { 1000 } else { 64 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn snapshots_match_the_model(ops in proptest::collection::vec(op(), 1..70)) {
        run(ops);
    }
}
