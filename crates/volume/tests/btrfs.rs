#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The btrfs provider on a real btrfs (a loop device made by [`ScratchBtrfs`]; needs root:
//! fails under CI without it, else skips saying why).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Receiver;

use uuid::Uuid;
use volume::btrfs::scratch::ScratchBtrfs;
use volume::fs::read_all;
use volume::{
    BtrfsProvider, CommitOptions, DeleteReason, FileSystem, OpenMode, Volume, VolumeError,
    VolumeEvent, VolumeOptions,
};

fn write_file(path: &Path, byte: u8, len: usize) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&vec![byte; len]).unwrap();
}

fn drain(rx: &Receiver<VolumeEvent>) -> Vec<VolumeEvent> {
    rx.try_iter().collect()
}

#[test]
fn not_a_subvolume_is_refused_naming_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let vol = Volume::create(dir.path().join("v"), VolumeOptions::new("plain")).unwrap();
    let err = BtrfsProvider::new().register(vol).unwrap_err();
    assert!(matches!(&err, VolumeError::NotBtrfsSubvolume { volume, .. } if volume == "plain"));
    assert!(err.to_string().contains("plain"), "{err}");
}

#[test]
fn snapshots_hold_every_writer_as_of_the_commit_and_are_read_only() {
    let Some(b) = ScratchBtrfs::for_test("btrfs snapshots") else { return };
    let root = b.subvolume("db").unwrap();
    let vol = Volume::create(&root, VolumeOptions::new("db")).unwrap();
    let p = BtrfsProvider::new();
    p.register(vol.clone()).unwrap();
    assert!(p.is_supported("db") && !p.is_supported("nope"));

    // One file through the node's filter, one by another program straight into the subvolume.
    vol.open(Path::new("e.edb"), OpenMode::Create)
        .unwrap()
        .write_at(b"through the node", 0)
        .unwrap();
    fs::create_dir_all(root.join("other")).unwrap();
    fs::write(root.join("other/app.dat"), b"written by another program").unwrap();

    let set = Uuid::new_v4();
    let r = p.commit(&["db".to_string()], set, &CommitOptions::default()).unwrap();
    assert_eq!(r.snapshots.len(), 1);
    let id = r.snapshots[0].id;
    assert_eq!(r.snapshots[0].set_id, set);
    assert_eq!(r.snapshots[0].files, 2);

    // Later changes, by both kinds of writer, are not in the snapshot.
    vol.open(Path::new("e.edb"), OpenMode::ReadWrite).unwrap().write_at(b"CHANGED", 0).unwrap();
    fs::write(root.join("other/app.dat"), b"changed").unwrap();
    fs::write(root.join("later.txt"), b"new").unwrap();

    let view = p.view(id).unwrap();
    assert_eq!(read_all(&view, Path::new("e.edb")).unwrap(), b"through the node");
    assert_eq!(read_all(&view, Path::new("other/app.dat")).unwrap(), b"written by another program");
    let names: Vec<String> =
        view.read_dir(Path::new("")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["e.edb", "other"], "the hidden directory is not listed");
    assert!(view.open(Path::new("e.edb"), OpenMode::ReadWrite).is_err());
    assert!(view.remove_file(Path::new("e.edb")).is_err());
    assert!(view.open(Path::new(".shadowcopy/lock"), OpenMode::Read).is_err());
    // The snapshot is a read-only subvolume: not even root writes into it directly.
    let direct = fs::OpenOptions::new().write(true).open(view.root().join("e.edb"));
    assert!(direct.is_err(), "a btrfs read-only snapshot refused the write");

    assert_eq!(p.query().len(), 1);
    assert_eq!(p.delete_snapshot(id).map(|_| ()).ok(), Some(()));
    assert!(p.query().is_empty());
    assert!(!view.root().exists(), "the snapshot subvolume is destroyed");
}

#[test]
fn persistent_snapshots_survive_reopening_and_the_others_do_not() {
    let Some(b) = ScratchBtrfs::for_test("btrfs persistence") else { return };
    let root = b.subvolume("v").unwrap();
    let (kept, gone) = {
        let vol = Volume::create(&root, VolumeOptions::new("v")).unwrap();
        let p = BtrfsProvider::new();
        p.register(vol).unwrap();
        fs::write(root.join("f"), b"one").unwrap();
        let persistent = CommitOptions { persistent: true, ..Default::default() };
        let kept = p.commit(&["v".into()], Uuid::new_v4(), &persistent).unwrap().snapshots[0].id;
        fs::write(root.join("f"), b"two").unwrap();
        let gone =
            p.commit(&["v".into()], Uuid::new_v4(), &CommitOptions::default()).unwrap().snapshots
                [0]
            .id;
        (kept, gone)
    };
    // A restart: the volume and the provider are opened again.
    let vol = Volume::open(&root).unwrap();
    let rx = vol.subscribe();
    let p = BtrfsProvider::new();
    p.register(vol).unwrap();
    let ids: Vec<Uuid> = p.query().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![kept]);
    assert!(p.query()[0].persistent);
    assert_eq!(read_all(&p.view(kept).unwrap(), Path::new("f")).unwrap(), b"one");
    let events = drain(&rx);
    assert!(
        events.iter().any(|e| matches!(e, VolumeEvent::SnapshotDeleted { snapshot, reason: DeleteReason::Restart, .. } if *snapshot == gone)),
        "{events:?}"
    );
    assert_eq!(p.delete_all("v").unwrap(), 1);
}

#[test]
fn overflow_at_the_limit_deletes_only_the_oldest_with_the_event() {
    let Some(b) = ScratchBtrfs::for_test("btrfs overflow") else { return };
    let root = b.subvolume("v").unwrap();
    let vol = Volume::create(&root, VolumeOptions::new("v")).unwrap();
    let rx = vol.subscribe();
    // What the node hangs here to unexpose a shadow copy: it must hear of every deletion
    // first, while the snapshot can still be read.
    let (hook_tx, hook_rx) = std::sync::mpsc::channel();
    let probe = root.clone();
    vol.on_before_delete(move |id| {
        let still_there = fs::read_dir(probe.join(".shadowcopy/btrfs"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(&id.to_string()));
        hook_tx.send((id, still_there)).unwrap();
    });
    let p = BtrfsProvider::new();
    p.register(vol).unwrap();
    p.set_shadow_storage_max("v", Some(6 << 20)).unwrap();
    const MIB4: usize = 4 << 20;
    write_file(&root.join("a"), 1, MIB4);
    let s1 = p.commit(&["v".into()], Uuid::new_v4(), &CommitOptions::default()).unwrap();
    write_file(&root.join("a"), 2, MIB4); // s1 now alone holds the first 4 MiB
    let s2 = p.commit(&["v".into()], Uuid::new_v4(), &CommitOptions::default()).unwrap();
    let (s1, s2) = (s1.snapshots[0].id, s2.snapshots[0].id);
    assert_eq!(p.query().len(), 2, "4 MiB held: under the 6 MiB limit");
    let used = p.list_shadow_storage()[0].used_bytes;
    assert!((MIB4 as u64..6 << 20).contains(&used), "used {used}");

    write_file(&root.join("a"), 3, MIB4); // s2 holds 4 MiB more: 8 MiB > 6 MiB
    drain(&rx);
    p.check_shadow_storage().unwrap();
    let left: Vec<Uuid> = p.query().into_iter().map(|s| s.id).collect();
    assert_eq!(left, vec![s2], "only the oldest snapshot is deleted");
    let events = drain(&rx);
    let overflow: Vec<Uuid> = events
        .iter()
        .filter_map(|e| match e {
            VolumeEvent::SnapshotDeleted { snapshot, reason: DeleteReason::Overflow, .. } => {
                Some(*snapshot)
            }
            _ => None,
        })
        .collect();
    assert_eq!(overflow, vec![s1], "{events:?}");
    assert_eq!(hook_rx.try_recv().ok(), Some((s1, true)), "the overflow ran the hook first");
    assert!(hook_rx.try_recv().is_err(), "the hook ran for s1 only");
    assert_eq!(read_all(&p.view(s2).unwrap(), Path::new("a")).unwrap(), vec![2u8; MIB4]);
    let info = &p.list_shadow_storage()[0];
    assert_eq!(info.max_bytes, Some(6 << 20));
    assert!(info.used_bytes <= 6 << 20, "{info:?}");

    // The release at the end of a backup runs it too; a snapshot that is gone does not.
    p.delete_snapshot_because(s2, DeleteReason::Released).unwrap();
    assert_eq!(hook_rx.try_recv().ok(), Some((s2, true)), "the release ran the hook first");
    assert!(p.delete_snapshot(s2).is_err());
    assert!(hook_rx.try_recv().is_err(), "no hook for a snapshot that does not exist");
}
