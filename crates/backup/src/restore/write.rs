//! Writing a backed-up file out of the repository, durably, with its syncs on a second
//! thread so that the disk writes while later chunks are still decompressed.

use std::path::Path;

use volume::{FileSystem, OpenMode};

use super::io_err;
use crate::error::Result;
use crate::repo::{FileEntry, Repository};
use crate::requester::{Progress, aborted};

/// Past this many bytes written since the last one, a restore asks for another sync of the
/// file it writes, on a thread of its own (see [`write_entry`]).
pub(super) const FLUSH_EVERY: u64 = 64 << 20;

/// Writes a backed-up file into `fs` at `path`, durably. Stops between chunks when the job
/// is cancelled (the caller's cleanup removes the partial file with its staging directory).
///
/// The file is synced every [`FLUSH_EVERY`] bytes on a second thread while the chunks keep
/// coming, so that the disk writes the file as it is restored instead of all of it in the
/// final sync (a database of gigabytes would otherwise wait seconds there). A failed sync on
/// that thread fails the restore like the final one: Linux reports a write-back error to
/// one sync only, so it must not be dropped.
pub(super) fn write_entry(
    repo: &Repository,
    entry: &FileEntry,
    fs: &dyn FileSystem,
    path: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    write_entry_flushing(repo, entry, fs, path, progress, FLUSH_EVERY)
}

/// [`write_entry`], syncing every `flush_every` bytes.
pub(super) fn write_entry_flushing(
    repo: &Repository,
    entry: &FileEntry,
    fs: &dyn FileSystem,
    path: &Path,
    progress: &dyn Progress,
    flush_every: u64,
) -> Result<()> {
    if let Some(reason) = progress.cancelled() {
        return Err(aborted(reason));
    }
    let f = fs.open(path, OpenMode::CreateNew).map_err(io_err("creating", path))?;
    // Before any byte is written: the content never sits under wider access than recorded.
    fs.set_mode(path, entry.restore_mode()).map_err(io_err("setting the mode of", path))?;
    let (kick, kicks) = std::sync::mpsc::sync_channel::<()>(1);
    let (written, flushed) = std::thread::scope(|s| {
        let flusher = std::thread::Builder::new().name("restore-flush".into()).spawn_scoped(
            s,
            || -> std::io::Result<()> {
                for () in kicks {
                    f.sync()?;
                }
                Ok(())
            },
        );
        let mut since_kick = 0u64;
        let written = repo.read_file(entry, &mut |off, data| match progress.cancelled() {
            Some(reason) => Err(std::io::Error::other(reason)),
            None => {
                f.write_at(data, off)?;
                since_kick += data.len() as u64;
                if since_kick >= flush_every {
                    // A sync already asked for and not begun covers these bytes too.
                    let _ = kick.try_send(());
                    since_kick = 0;
                }
                Ok(())
            }
        });
        drop(kick);
        let flushed = match flusher {
            // A panic on the syncing thread is a bug: carry it on here.
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread: the final sync below does all of it.
            Err(_) => Ok(()),
        };
        (written, flushed)
    });
    if let Err(e) = written {
        return Err(progress.cancelled().map_or(e.into(), aborted));
    }
    flushed.map_err(io_err("syncing", path))?;
    f.sync().map_err(io_err("syncing", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use volume::FileSystem;
    use volume::fault::{FaultInjector, FaultKind};
    use volume::mem::MemFs;

    use super::write_entry_flushing;
    use crate::repo::{InitOptions, Repository, SetMeta};
    use crate::requester::Quiet;

    /// A sync that fails on the background thread fails the restore, although the final
    /// sync succeeds: the kernel reports a write-back error to one sync only.
    #[test]
    fn a_failed_background_sync_fails_the_restore_of_the_file() {
        let repo_fs = MemFs::new();
        let opts = InitOptions { chunk_size: 4096, zstd_level: 1, ..Default::default() };
        let repo = Repository::init(repo_fs.as_ref(), "r", opts).unwrap();
        let src = MemFs::new();
        let data: Vec<u8> = (0..10 * 4096u32).map(|i| (i % 251) as u8).collect();
        let f = src.open(Path::new("db"), volume::OpenMode::Create).unwrap();
        f.write_at(&data, 0).unwrap();
        let mut w = repo.begin_set();
        w.add_file("vol/db", crate::repo::FileRole::Database, "c", f.as_ref(), &|_| {}).unwrap();
        let set = w.publish(SetMeta::default()).unwrap();
        let entry = &set.files[0];

        let target = FaultInjector::new(MemFs::new().as_ref());
        target.fail_sync_of("out", FaultKind::Eio);
        let fs = target.as_ref();
        let err = write_entry_flushing(&repo, entry, fs.as_ref(), Path::new("out"), &Quiet, 4096)
            .unwrap_err()
            .to_string();
        assert!(err.contains("syncing out") && err.contains("injected fault"), "{err}");

        // With the disk healthy the same restore writes every byte.
        write_entry_flushing(&repo, entry, fs.as_ref(), Path::new("out2"), &Quiet, 4096).unwrap();
        assert_eq!(volume::fs::read_all(fs.as_ref(), Path::new("out2")).unwrap(), data);
    }

    /// A restored file gets the mode its backup recorded; a set written before modes were
    /// recorded restores owner-only (0600), never wider.
    #[test]
    fn a_restored_file_gets_the_recorded_mode_or_0600() {
        let repo_fs = MemFs::new();
        let opts = InitOptions { chunk_size: 4096, zstd_level: 1, ..Default::default() };
        let repo = Repository::init(repo_fs.as_ref(), "r", opts).unwrap();
        let src = MemFs::new();
        let f = src.open(Path::new("db"), volume::OpenMode::Create).unwrap();
        f.write_at(b"mail", 0).unwrap();
        let mut w = repo.begin_set();
        let role = crate::repo::FileRole::Database;
        w.add_file_checked("vol/a", role, "c", f.as_ref(), Some(0o640), None, &|_| {}).unwrap();
        w.add_file("vol/b", role, "c", f.as_ref(), &|_| {}).unwrap();
        let set = w.publish(SetMeta::default()).unwrap();
        assert_eq!((set.files[0].mode, set.files[1].mode), (Some(0o640), None));

        let target = MemFs::new().as_ref();
        for (entry, name, want) in [(&set.files[0], "a", 0o640), (&set.files[1], "b", 0o600)] {
            write_entry_flushing(&repo, entry, target.as_ref(), Path::new(name), &Quiet, 4096)
                .unwrap();
            assert_eq!(target.metadata(Path::new(name)).unwrap().mode, want, "{name}");
        }
    }
}
