//! Behaviour of the shadow volume on small, explicit scenarios.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use volume::fs::read_all;
use volume::{DeleteReason, FileSystem, OpenMode, Volume, VolumeEvent, VolumeOptions};

fn vol(dir: &Path, label: &str) -> Volume {
    Volume::create(dir.join(label), VolumeOptions { label: label.into(), block_size: 4096 })
        .unwrap()
}

fn write(fs: &dyn FileSystem, path: &str, off: u64, data: &[u8]) {
    let f = fs.open(Path::new(path), OpenMode::Create).unwrap();
    f.write_at(data, off).unwrap();
}

#[test]
fn snapshot_keeps_old_bytes_names_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    v.create_dir_all(Path::new("a/b")).unwrap();
    write(&v, "a/b/f", 0, &[1u8; 10000]);
    write(&v, "g", 0, b"hello");
    let s = v.snapshot(false).unwrap();
    write(&v, "a/b/f", 5000, &[2u8; 100]);
    write(&v, "a/b/f", 20000, b"tail");
    v.rename(Path::new("g"), Path::new("h")).unwrap();
    v.remove_file(Path::new("a/b/f")).unwrap();
    v.remove_dir(Path::new("a/b")).unwrap();
    write(&v, "new", 0, b"new file");
    let view = v.view(s.id).unwrap();
    assert_eq!(read_all(&view, Path::new("a/b/f")).unwrap(), vec![1u8; 10000]);
    assert_eq!(read_all(&view, Path::new("g")).unwrap(), b"hello");
    assert!(view.metadata(Path::new("h")).is_err());
    assert!(view.metadata(Path::new("new")).is_err());
    let names: Vec<_> = view.read_dir(Path::new("")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["a", "g"]);
    let live: Vec<_> = v.read_dir(Path::new("")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(live, vec!["a", "h", "new"]);
    assert_eq!(
        view.open(Path::new("g"), OpenMode::ReadWrite).unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    assert!(v.open(Path::new(".shadowcopy/volume.json"), OpenMode::Read).is_err());
    assert!(v.snapshots()[0].diff_area_bytes > 0);
}

#[test]
fn truncate_and_extend_preserve_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let data: Vec<u8> = (0..30000u32).map(|i| (i % 251) as u8).collect();
    write(&v, "f", 0, &data);
    let s = v.snapshot(true).unwrap();
    let f = v.open(Path::new("f"), OpenMode::ReadWrite).unwrap();
    f.set_len(100).unwrap();
    f.set_len(50000).unwrap();
    f.write_at(&[7u8; 9000], 9000).unwrap();
    let view = v.view(s.id).unwrap();
    assert_eq!(read_all(&view, Path::new("f")).unwrap(), data);
    assert_eq!(f.len().unwrap(), 50000);
}

#[test]
fn older_snapshot_reads_through_newer_ones_and_deletion_merges() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    write(&v, "f", 0, &[0u8; 16384]);
    let mut ids = Vec::new();
    let mut frozen = Vec::new();
    for i in 0..6u8 {
        ids.push(v.snapshot(false).unwrap().id);
        frozen.push(read_all(&v, Path::new("f")).unwrap());
        write(&v, "f", (i as u64 % 4) * 4096 + 10, &[i + 1; 100]);
    }
    // Delete a middle and the newest snapshot: the older ones must stay exact.
    v.delete_snapshot(ids[3]).unwrap();
    v.delete_snapshot(ids[5]).unwrap();
    write(&v, "f", 0, &[9u8; 16384]);
    for (i, id) in ids.iter().enumerate() {
        if i == 3 || i == 5 {
            assert!(v.view(*id).is_err());
            continue;
        }
        let view = v.view(*id).unwrap();
        assert_eq!(read_all(&view, Path::new("f")).unwrap(), frozen[i], "snapshot {i}");
    }
}

#[test]
fn sixty_four_snapshots_each_exact() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let mut snaps = Vec::new();
    for i in 0..70u32 {
        write(&v, "f", (i as u64 * 1000) % 60000, &i.to_le_bytes().repeat(300));
        write(&v, &format!("file{i}"), 0, &[i as u8; 10]);
        if i % 7 == 3 {
            v.remove_file(Path::new(&format!("file{}", i - 2))).unwrap();
        }
        let s = v.snapshot(false).unwrap();
        let fr = read_all(&v, Path::new("f")).unwrap();
        let names: Vec<_> = v.read_dir(Path::new("")).unwrap();
        snaps.push((s.id, fr, names));
    }
    assert_eq!(v.snapshots().len(), 70);
    write(&v, "f", 0, &[0xEEu8; 70000]);
    for (id, fr, names) in &snaps {
        let view = v.view(*id).unwrap();
        assert_eq!(&read_all(&view, Path::new("f")).unwrap(), fr);
        assert_eq!(&view.read_dir(Path::new("")).unwrap(), names);
    }
}

#[test]
fn overflow_deletes_oldest_reports_it_and_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let rx = v.subscribe();
    v.set_shadow_storage_max(Some(1 << 20)).unwrap();
    write(&v, "f", 0, &vec![1u8; 600 * 1024]);
    let s1 = v.snapshot(false).unwrap();
    write(&v, "f", 0, &vec![2u8; 600 * 1024]); // preserves 600 KiB into s1
    let s2 = v.snapshot(false).unwrap();
    let frozen2 = read_all(&v, Path::new("f")).unwrap();
    write(&v, "f", 0, &vec![3u8; 600 * 1024]); // needs 600 KiB more: s1 must go
    assert_eq!(read_all(&v, Path::new("f")).unwrap(), vec![3u8; 600 * 1024]);
    assert!(v.view(s1.id).is_err());
    assert_eq!(read_all(&v.view(s2.id).unwrap(), Path::new("f")).unwrap(), frozen2);
    assert!(v.shadow_storage_used() <= 1 << 20);
    let evs: Vec<_> = rx.try_iter().collect();
    assert!(evs.iter().any(|e| matches!(e, VolumeEvent::SnapshotDeleted {
        snapshot, reason: DeleteReason::Overflow, bytes_freed, .. } if *snapshot == s1.id && *bytes_freed > 600 * 1024)));
    assert!(evs.iter().any(|e| matches!(e, VolumeEvent::ShadowStorageNearFull { .. })));
}

#[test]
fn shadow_storage_on_another_volume() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let store = vol(dir.path(), "store");
    v.set_shadow_storage_location(&store).unwrap();
    write(&v, "f", 0, &[1u8; 8192]);
    let s = v.snapshot(true).unwrap();
    write(&v, "f", 0, &[2u8; 8192]);
    assert_eq!(read_all(&v.view(s.id).unwrap(), Path::new("f")).unwrap(), vec![1u8; 8192]);
    assert_eq!(v.shadow_storage().on_volume, store.guid());
    assert!(store.read_dir(Path::new("")).unwrap().is_empty());
    drop(v);
    let v = Volume::open(dir.path().join("db")).unwrap();
    assert_eq!(read_all(&v.view(s.id).unwrap(), Path::new("f")).unwrap(), vec![1u8; 8192]);
}

#[test]
fn reopen_keeps_persistent_and_drops_non_persistent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    let v = vol(dir.path(), "db");
    write(&v, "f", 0, &[1u8; 8192]);
    let p = v.snapshot(true).unwrap();
    write(&v, "f", 0, &[2u8; 4096]);
    let n = v.snapshot(false).unwrap();
    write(&v, "f", 4096, &[3u8; 4096]); // preserved into the non-persistent one only
    assert!(Volume::open(&root).is_err(), "second opener must be refused");
    drop(v);
    let v = Volume::open(&root).unwrap();
    let ids: Vec<_> = v.snapshots().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![p.id]);
    assert!(v.view(n.id).is_err());
    assert_eq!(read_all(&v.view(p.id).unwrap(), Path::new("f")).unwrap(), vec![1u8; 8192]);
}

#[test]
fn handles_opened_before_a_snapshot_and_removed_files_still_preserve() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let h = v.open(Path::new("f"), OpenMode::Create).unwrap();
    h.write_at(&[1u8; 8192], 0).unwrap();
    let s1 = v.snapshot(false).unwrap();
    h.write_at(&[2u8; 100], 0).unwrap(); // handle opened before the snapshot
    v.remove_file(Path::new("f")).unwrap();
    let s2 = v.snapshot(false).unwrap(); // does not hold f any more
    h.write_at(&[3u8; 100], 4096).unwrap(); // a removed file, still open: s1 needs its bytes
    h.set_len(10).unwrap();
    let mut want = vec![1u8; 8192];
    assert_eq!(read_all(&v.view(s1.id).unwrap(), Path::new("f")).unwrap(), want);
    assert!(v.view(s2.id).unwrap().metadata(Path::new("f")).is_err());
    want.truncate(10);
    want[..10].fill(2);
    let mut got = vec![0u8; 10];
    h.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, want);
    // Once no snapshot needs it, the parked file is gone.
    v.delete_snapshot(s1.id).unwrap();
    assert_eq!(std::fs::read_dir(v.root().join(".shadowcopy/links")).unwrap().count(), 0);
}

#[test]
fn shrinking_shadow_storage_deletes_oldest_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let rx = v.subscribe();
    let mut ids = Vec::new();
    for i in 0..4u8 {
        write(&v, "f", 0, &vec![i; 512 * 1024]);
        ids.push(v.snapshot(false).unwrap().id);
    }
    write(&v, "f", 0, &vec![9u8; 512 * 1024]);
    assert!(v.shadow_storage_used() > 3 * 512 * 1024);
    v.set_shadow_storage_max(Some(1 << 20)).unwrap();
    assert!(v.shadow_storage_used() <= 1 << 20);
    let left: Vec<_> = v.snapshots().into_iter().map(|s| s.id).collect();
    assert_eq!(left, ids[ids.len() - left.len()..].to_vec(), "oldest go first");
    assert_eq!(
        read_all(&v.view(*left.last().unwrap()).unwrap(), Path::new("f")).unwrap(),
        vec![3u8; 512 * 1024]
    );
    let deleted = rx
        .try_iter()
        .filter(|e| {
            matches!(e, VolumeEvent::SnapshotDeleted { reason: DeleteReason::Overflow, .. })
        })
        .count();
    assert_eq!(deleted, 4 - left.len());
}

#[test]
fn blocks_preserved_counts_each_block_copied_on_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    write(&v, "f", 0, &[1u8; 4 * 4096]);
    write(&v, "f", 0, &[2u8; 4096]);
    assert_eq!(v.blocks_preserved(), 0, "no snapshot, nothing to preserve");
    v.snapshot(false).unwrap();
    write(&v, "f", 4096, &[3u8; 10]);
    write(&v, "f", 4096 + 100, &[3u8; 10]); // the same block again
    write(&v, "f", 2 * 4096 - 5, &[4u8; 10]); // straddles blocks 1 and 2
    // Block 2 follows a preserved block: a sequential writer, so block 3 goes with it.
    assert_eq!(v.blocks_preserved(), 3);
    write(&v, "f", 3 * 4096, &[5u8; 10]);
    assert_eq!(v.blocks_preserved(), 3, "block 3 was preserved already");
}

/// A sequential writer's first writes preserve the blocks after the one written, in runs:
/// the snapshot still reads every block as it was, those preserved ahead and written later,
/// those preserved ahead and never written, and those past a hole, also after a reopen.
#[test]
fn blocks_preserved_ahead_of_a_sequential_writer_read_as_at_snapshot_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    let v = vol(dir.path(), "db");
    let old: Vec<u8> = (0..200 * 4096u32).map(|i| (i / 4096) as u8 ^ (i % 251) as u8).collect();
    write(&v, "f", 0, &old);
    // A hole from block 120 to 130.
    v.open(Path::new("f"), OpenMode::ReadWrite).unwrap().set_len(120 * 4096).unwrap();
    write(&v, "f", 130 * 4096, &old[130 * 4096..]);
    let mut before = old.clone();
    before[120 * 4096..130 * 4096].fill(0);
    let s = v.snapshot(true).unwrap();
    // Sequential overwrites of blocks 10..140, stopping there; one random write far away.
    for b in 10..140u64 {
        write(&v, "f", b * 4096, &[0xEE; 4096]);
    }
    write(&v, "f", 190 * 4096 + 7, b"late");
    // Written: blocks 10..120 and 130..140 (120..130 is a hole). Ahead of them at most one
    // run of 256 KiB (64 blocks) past the last written block.
    let preserved = v.blocks_preserved();
    assert!((120..=120 + 64).contains(&preserved), "{preserved} blocks preserved");
    let check = |v: &Volume| {
        let got = read_all(&v.view(s.id).unwrap(), Path::new("f")).unwrap();
        assert_eq!(got.len(), before.len());
        assert!(got == before, "the snapshot changed with the live file");
    };
    check(&v);
    drop(v);
    let v = Volume::open(&root).unwrap();
    check(&v);
}

/// A backup records each file's mode from the snapshot view, so the view reports the mode the
/// file had when the snapshot was taken, also after the volume is reopened.
#[test]
fn snapshot_view_reports_the_mode_at_snapshot_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    let v = vol(dir.path(), "db");
    write(&v, "f", 0, b"mail");
    v.set_mode(Path::new("f"), 0o640).unwrap();
    assert_eq!(v.metadata(Path::new("f")).unwrap().mode, 0o640);
    let s = v.snapshot(true).unwrap();
    v.set_mode(Path::new("f"), 0o600).unwrap();
    assert_eq!(v.view(s.id).unwrap().metadata(Path::new("f")).unwrap().mode, 0o640);
    drop(v);
    let v = Volume::open(&root).unwrap();
    assert_eq!(v.view(s.id).unwrap().metadata(Path::new("f")).unwrap().mode, 0o640);
    assert_eq!(v.metadata(Path::new("f")).unwrap().mode, 0o600);
}

/// Reopening a volume with another block size is refused naming both sizes; the size it was
/// created with opens it.
#[test]
fn reopening_with_another_block_size_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    drop(vol(dir.path(), "db"));
    let opts = |block_size| VolumeOptions { label: "db".into(), block_size };
    let e = Volume::open_or_create(&root, opts(8192)).unwrap_err();
    let volume::VolumeError::Io { source, .. } = &e else { panic!("not an I/O error: {e}") };
    assert!(source.get_ref().is_some_and(|p| p.is::<volume::BlockSizeChanged>()), "{e}");
    let text = e.to_string();
    assert!(text.contains("4096") && text.contains("8192"), "{text}");
    let v = Volume::open_or_create(&root, opts(4096)).unwrap();
    assert_eq!(v.block_size(), 4096);
}

/// Whatever deletes a snapshot — overflow, a request, the release at close — the hook hears
/// of it first, while the snapshot can still be read (so that the node can unexpose it).
#[test]
fn the_before_delete_hook_runs_for_every_deletion_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "db");
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = v.clone();
    v.on_before_delete(move |id| {
        // Still there: the hook runs before the deletion.
        tx.send((id, probe.view(id).is_ok())).unwrap();
    });
    v.set_shadow_storage_max(Some(1 << 20)).unwrap();
    write(&v, "f", 0, &vec![1u8; 600 * 1024]);
    let s1 = v.snapshot(false).unwrap();
    write(&v, "f", 0, &vec![2u8; 600 * 1024]);
    let s2 = v.snapshot(true).unwrap();
    write(&v, "f", 0, &vec![3u8; 600 * 1024]); // overflow: s1 goes
    assert_eq!(rx.try_recv().unwrap(), (s1.id, true));
    let s3 = v.snapshot(false).unwrap();
    v.delete_snapshot(s2.id).unwrap();
    assert_eq!(rx.try_recv().unwrap(), (s2.id, true));
    assert!(v.delete_snapshot(s2.id).is_err());
    assert!(rx.try_recv().is_err(), "no hook for a snapshot that does not exist");
    v.delete_snapshot_because(s3.id, DeleteReason::Released).unwrap();
    assert_eq!(rx.try_recv().unwrap(), (s3.id, true));
}

/// What a mount of a snapshot shows: owners, directory modes and times of snapshot time, also
/// after a reopen, and the file's holes for SEEK_DATA / SEEK_HOLE.
#[test]
fn snapshot_view_keeps_owners_times_and_holes() {
    use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    let v = vol(dir.path(), "db");
    v.create_dir_all(Path::new("d")).unwrap();
    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o751)).unwrap();
    // A sparse file: data at 64 KiB only, 256 KiB long.
    let host = std::fs::File::create(root.join("d/sparse")).unwrap();
    host.write_all_at(&[9u8; 4096], 64 << 10).unwrap();
    host.set_len(256 << 10).unwrap();
    drop(host);
    let m = std::fs::metadata(root.join("d/sparse")).unwrap();
    let s = v.snapshot(true).unwrap();
    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(v);
    let v = Volume::open(&root).unwrap();
    let view = v.view(s.id).unwrap();
    let d = view.attributes(Path::new("d")).unwrap();
    assert_eq!((d.kind, d.mode), (volume::FileKind::Dir, 0o751));
    let f = view.attributes(Path::new("d/sparse")).unwrap();
    assert_eq!((f.uid, f.gid, f.len), (m.uid(), m.gid(), 256 << 10));
    assert_eq!(f.mtime, (m.mtime(), m.mtime_nsec() as u32));
    assert!(f.allocated < f.len, "a sparse file reports its holes: {f:?}");
    let file = view.open(Path::new("d/sparse"), OpenMode::Read).unwrap();
    let data = file.seek_data(0, false).unwrap().unwrap();
    assert!(data <= 64 << 10 && data > 0, "data at {data}");
    let hole = file.seek_data(data, true).unwrap().unwrap();
    assert!(((64 << 10) + 4096..256 << 10).contains(&hole), "hole at {hole}");
    assert_eq!(file.seek_data(hole, false).unwrap(), None);
    assert_eq!(file.seek_data(256 << 10, true).unwrap(), None);
}
