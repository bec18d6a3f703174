//! Shadow copies exposed read-only at a path through FUSE (`admin expose` / `admin unexpose`).
//!
//! The node mounts the snapshot view its provider hands out ([`vss::Coordinator::snapshot_view`],
//! any provider's) with [`fuse::SnapshotFs`], served by a few threads so that one slow read does
//! not hold up the others. Rules:
//!
//! - **Deleting an exposed shadow copy unexposes it first**, whatever deletes it (`admin delete
//!   shadows`, the release at the end of a backup, the oldest-first deletion at the
//!   shadow-storage limit): the volume calls [`Exposures::withdraw`] before the deletion
//!   ([`volume::Volume::on_before_delete`]), and the delete endpoint does too for other
//!   providers. The unmount is lazy (`MNT_DETACH`) and the FUSE connection is then aborted, so
//!   a process that holds a file open there gets errors instead of making the deletion wait:
//!   the delete never hangs.
//! - **Exposure of a persistent shadow copy survives a restart**: it is recorded in
//!   `<data_dir>/exposed.toml` and mounted again at start (a mount left behind by a node that
//!   was killed is detached first). A non-persistent one goes with its backup anyway.
//! - **The node unmounts everything it mounted when it stops** ([`Exposures::shutdown`]),
//!   keeping the record, so the persistent ones come back at the next start.
//! - A path inside a volume's directory or the node's data directory is refused: the volume's
//!   next snapshot would scan the mount.

pub mod fuse;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use events::EventSink;
use events::catalog as cat;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// The file in the node's data directory.
pub const FILE: &str = "exposed.toml";

/// Threads serving one mount: a slow read (a cold block of a diff area) does not stall the
/// readers of other files.
const SERVING_THREADS: usize = 4;

/// Why a shadow copy could not be exposed or unexposed.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    #[error("shadow copy {0} does not exist")]
    UnknownShadow(Uuid),
    #[error("shadow copy {shadow} is already exposed at {at}")]
    AlreadyExposed { shadow: Uuid, at: PathBuf },
    #[error("{at}: {reason}")]
    BadPath { at: PathBuf, reason: String },
    #[error(
        "FUSE is not available on this node ({0}): install fuse3 and make sure /dev/fuse exists \
         (modprobe fuse)"
    )]
    FuseUnavailable(String),
    #[error("mounting shadow copy {shadow} at {at}: {source}")]
    Mount {
        shadow: Uuid,
        at: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("nothing is exposed {0}")]
    NotExposed(String),
    #[error("getting a view of shadow copy {shadow}: {source}")]
    View {
        shadow: Uuid,
        #[source]
        source: vss::VssError,
    },
}

/// `[[exposed]]` of `exposed.toml`: a persistent shadow copy exposed at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    pub shadow: Uuid,
    pub at: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exposed: Vec<Recorded>,
}

/// A snapshot view mounted through FUSE ([`mount_view`]).
#[derive(Debug)]
pub struct FuseMount {
    at: PathBuf,
    /// The device number of the mount, which names its FUSE connection (for the abort).
    dev: Option<u64>,
    session: fuser::BackgroundSession,
}

impl FuseMount {
    /// Where it is mounted.
    pub fn at(&self) -> &Path {
        &self.at
    }

    /// Unmounts lazily (`MNT_DETACH`) without waiting for anything; `abort` also ends the FUSE
    /// connection, so that files still open there fail at once instead of keeping it.
    pub fn unmount(self, abort: bool) {
        if let Err(e) = detach(&self.at) {
            tracing::warn!(at = %self.at.display(), "unmounting: {e}");
        }
        if abort && let Some(dev) = self.dev {
            abort_connection(dev);
        }
        reap(self.session, self.at);
    }
}

/// Mounts `view` (shadow copy `shadow`) read-only at `at`, an existing empty directory,
/// served by [`SERVING_THREADS`] threads. The kernel checks access against the owners and
/// permissions of the view; as root, every user may read what those let them read.
pub fn mount_view(shadow: Uuid, view: volume::FsRef, at: &Path) -> Result<FuseMount, ExposeError> {
    fuse_available().map_err(ExposeError::FuseUnavailable)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(fs_name(shadow)),
        fuser::MountOption::Subtype("shadowcopy".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if rustix::process::geteuid().is_root() {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(SERVING_THREADS);
    config.clone_fd = true;
    let err = |source| ExposeError::Mount { shadow, at: at.to_path_buf(), source };
    let session = fuser::Session::new(fuse::SnapshotFs::new(view), at, &config).map_err(err)?;
    let session = session.spawn().map_err(err)?;
    // Served from here on: this stat is answered by the session's threads.
    let dev = std::fs::metadata(at).map(|m| m.dev()).ok();
    Ok(FuseMount { at: at.to_path_buf(), dev, session })
}

/// One exposed shadow copy.
#[derive(Debug)]
struct Mounted {
    volume: String,
    persistent: bool,
    mount: FuseMount,
}

/// What an exposure looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub shadow: Uuid,
    pub at: PathBuf,
    pub persistent: bool,
}

/// The node's exposed shadow copies.
pub struct Exposures {
    data_dir: PathBuf,
    sink: Arc<dyn EventSink>,
    /// Where no mount may go (the volumes' directories, the data directory).
    forbidden: Vec<PathBuf>,
    mounted: Mutex<BTreeMap<Uuid, Mounted>>,
    /// Serializes expose and unexpose requests (not [`Exposures::withdraw`], which runs inside
    /// a deletion and must not wait for a mount in progress).
    ops: Mutex<()>,
    /// Serializes writes of the record file.
    record: Mutex<()>,
}

impl std::fmt::Debug for Exposures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposures").field("mounted", &self.list()).finish()
    }
}

fn bad(at: &Path, reason: impl Into<String>) -> ExposeError {
    ExposeError::BadPath { at: at.to_path_buf(), reason: reason.into() }
}

/// Whether `/dev/fuse` can be used; the reason when not.
pub fn fuse_available() -> Result<(), String> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("/dev/fuse: {e}")),
    }
}

/// The name the mount shows in `/proc/self/mountinfo` (its source), by which a mount left by a
/// killed node is recognised.
fn fs_name(shadow: Uuid) -> String {
    format!("shadowcopy:{shadow}")
}

/// Whether a FUSE mount of shadow copy `shadow` (by [`fs_name`]) is at `at`, per the kernel's
/// mount table.
fn stale_mount_at(at: &Path, shadow: Uuid) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let name = fs_name(shadow);
    table.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { return false };
        fields.get(4).is_some_and(|m| Path::new(m) == at)
            && fields.get(sep + 1).is_some_and(|t| t.starts_with("fuse"))
            && fields.get(sep + 2).is_some_and(|s| *s == name)
    })
}

/// Detaches the mount at `at` (`umount2(MNT_DETACH)`): gone from the namespace at once, ended
/// when its last open file is closed. Never waits for readers.
fn detach(at: &Path) -> io::Result<()> {
    rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH).map_err(io::Error::from)
}

/// Aborts the FUSE connection of the mount with device `dev` through the FUSE control file
/// system (mounted here if it is not yet): requests in flight and later ones fail at once,
/// and the serving threads end. Best effort: without the control file system, readers of a
/// deleted snapshot get I/O errors from the view instead.
fn abort_connection(dev: u64) {
    let dir = Path::new("/sys/fs/fuse/connections");
    let abort = dir.join(rustix::fs::minor(dev).to_string()).join("abort");
    if !abort.exists() && dir.is_dir() {
        let _ = rustix::mount::mount(
            "fusectl",
            dir,
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None::<&std::ffi::CStr>,
        );
    }
    if let Err(e) = std::fs::write(&abort, "1") {
        tracing::debug!(path = %abort.display(), "aborting the FUSE connection: {e}");
    }
}

/// Lets the serving threads of a detached mount end on their own (when its last open file is
/// closed, or at once after an abort), without anyone waiting for them.
fn reap(session: fuser::BackgroundSession, at: PathBuf) {
    let spawned = std::thread::Builder::new().name("unexposed".into()).spawn(move || {
        if let Err(e) = session.join() {
            tracing::debug!(at = %at.display(), "the FUSE session ended with: {e}");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("could not start a thread to reap a FUSE session: {e}");
    }
}

/// Checks `at` as a mount point (absolute, no `..`, not under a forbidden directory), creates
/// it if missing, and checks that it is an empty directory.
fn prepare_mount_point(at: &Path, forbidden: &[PathBuf]) -> Result<PathBuf, ExposeError> {
    if !at.is_absolute() || at.components().any(|c| c == Component::ParentDir) {
        return Err(bad(at, "give an absolute path without `..`"));
    }
    std::fs::create_dir_all(at).map_err(|e| bad(at, format!("creating it: {e}")))?;
    let at = at.canonicalize().map_err(|e| bad(at, e.to_string()))?;
    for f in forbidden {
        let f = f.canonicalize().unwrap_or_else(|_| f.clone());
        if at.starts_with(&f) {
            return Err(bad(
                &at,
                format!(
                    "is inside {}, which the node keeps (a volume or its data directory): the \
                     volume's next snapshot would read the mount",
                    f.display()
                ),
            ));
        }
    }
    let mut entries = std::fs::read_dir(&at).map_err(|e| bad(&at, e.to_string()))?;
    if entries.next().is_some() {
        return Err(bad(&at, "is not an empty directory"));
    }
    Ok(at)
}

impl Exposures {
    /// No shadow copy exposed yet; `forbidden` are the directories no mount may go in.
    pub fn new(data_dir: PathBuf, sink: Arc<dyn EventSink>, forbidden: Vec<PathBuf>) -> Self {
        Exposures {
            data_dir,
            sink,
            forbidden,
            mounted: Mutex::new(BTreeMap::new()),
            ops: Mutex::new(()),
            record: Mutex::new(()),
        }
    }

    /// What is exposed, by shadow copy.
    pub fn list(&self) -> Vec<Exposure> {
        self.mounted
            .lock()
            .iter()
            .map(|(id, m)| Exposure {
                shadow: *id,
                at: m.mount.at.clone(),
                persistent: m.persistent,
            })
            .collect()
    }

    /// Where shadow copy `shadow` is exposed.
    pub fn exposed_at(&self, shadow: Uuid) -> Option<PathBuf> {
        self.mounted.lock().get(&shadow).map(|m| m.mount.at.clone())
    }

    fn load(&self) -> Vec<Recorded> {
        match crate::state_file::load::<RecordFile>(&self.data_dir, FILE) {
            Ok(f) => f.unwrap_or_default().exposed,
            Err(e) => {
                tracing::warn!(
                    "{}: {e}; no shadow copy is exposed again",
                    self.data_dir.join(FILE).display()
                );
                Vec::new()
            }
        }
    }

    /// Records the persistent exposures, so that they are mounted again at the next start.
    /// `keep` are recorded exposures not mounted now that stay recorded (those that could not
    /// be mounted again at start).
    fn save(&self, keep: &[Recorded]) {
        let _g = self.record.lock();
        let mut file = RecordFile::default();
        file.exposed.extend(
            self.mounted
                .lock()
                .iter()
                .filter(|(_, m)| m.persistent)
                .map(|(id, m)| Recorded { shadow: *id, at: m.mount.at.clone() }),
        );
        for r in keep {
            if !file.exposed.iter().any(|e| e.shadow == r.shadow) {
                file.exposed.push(r.clone());
            }
        }
        let header = "# Persistent shadow copies exposed with `shadowcopy admin expose`.\n\
                      # Written by the node; each is mounted again at start.\n";
        if let Err(e) = crate::state_file::save(&self.data_dir, FILE, header, &file) {
            tracing::error!(
                "saving {}: {e}; the exposures may not come back after a restart",
                self.data_dir.join(FILE).display()
            );
        }
    }

    /// `admin expose`: mounts shadow copy `shadow` read-only at `at`.
    pub fn expose(
        &self,
        coordinator: &vss::Coordinator,
        shadow: Uuid,
        at: &Path,
    ) -> Result<Exposure, ExposeError> {
        let _op = self.ops.lock();
        if let Some(m) = self.mounted.lock().get(&shadow) {
            return Err(ExposeError::AlreadyExposed { shadow, at: m.mount.at.clone() });
        }
        let (provider, info) = coordinator
            .list_snapshots()
            .into_iter()
            .find(|(_, s)| s.snapshot_id == shadow)
            .ok_or(ExposeError::UnknownShadow(shadow))?;
        let at = prepare_mount_point(at, &self.forbidden)?;
        let view = coordinator
            .snapshot_view(shadow)
            .map_err(|source| ExposeError::View { shadow, source })?;
        let mount = mount_view(shadow, view, &at)?;
        let m = Mounted { volume: info.volume.clone(), persistent: info.persistent, mount };
        let exposure = Exposure { shadow, at: at.clone(), persistent: info.persistent };
        self.mounted.lock().insert(shadow, m);
        // A deletion that ran while the mount was being made found nothing to withdraw.
        if !coordinator.list_snapshots().iter().any(|(_, s)| s.snapshot_id == shadow) {
            self.withdraw(shadow, "the shadow copy was deleted");
            return Err(ExposeError::UnknownShadow(shadow));
        }
        if info.persistent {
            self.save(&[]);
        }
        tracing::info!(%shadow, provider, at = %at.display(), "exposed a shadow copy");
        self.sink.emit(
            &cat::PROVIDER_SHADOW_EXPOSED,
            None,
            json!({"snapshot": shadow.to_string(), "volume": info.volume, "at": at.display().to_string()}),
        );
        Ok(exposure)
    }

    /// Takes shadow copy `shadow`'s mount away (lazily), without waiting for anything;
    /// `abort` also ends its FUSE connection, failing files still open there.
    fn take_down(&self, shadow: Uuid, reason: &str, abort: bool) -> Option<Exposure> {
        let m = self.mounted.lock().remove(&shadow)?;
        let exposure = Exposure { shadow, at: m.mount.at.clone(), persistent: m.persistent };
        m.mount.unmount(abort);
        self.sink.emit(
            &cat::PROVIDER_SHADOW_UNEXPOSED,
            None,
            json!({"snapshot": shadow.to_string(), "volume": m.volume,
                   "at": exposure.at.display().to_string(), "reason": reason}),
        );
        Some(exposure)
    }

    /// `admin unexpose`: by shadow copy or by path. A process that has a file open there
    /// keeps reading it until it closes it.
    pub fn unexpose(
        &self,
        shadow: Option<Uuid>,
        at: Option<&Path>,
    ) -> Result<Exposure, ExposeError> {
        let _op = self.ops.lock();
        let id = match (shadow, at) {
            (Some(id), None) => {
                if !self.mounted.lock().contains_key(&id) {
                    return Err(ExposeError::NotExposed(format!("for shadow copy {id}")));
                }
                id
            }
            (None, Some(at)) => {
                let canonical = at.canonicalize().unwrap_or_else(|_| at.to_path_buf());
                self.mounted
                    .lock()
                    .iter()
                    .find(|(_, m)| m.mount.at == canonical || m.mount.at == at)
                    .map(|(id, _)| *id)
                    .ok_or_else(|| ExposeError::NotExposed(format!("at {}", at.display())))?
            }
            _ => return Err(bad(Path::new("-"), "give exactly one of a shadow copy or a path")),
        };
        let gone = self
            .take_down(id, "unexposed", false)
            .ok_or_else(|| ExposeError::NotExposed(format!("for shadow copy {id}")))?;
        if gone.persistent {
            self.save(&[]);
        }
        Ok(gone)
    }

    /// Called before shadow copy `shadow` is deleted: unexposes it (lazy unmount, connection
    /// aborted) so that the deletion never waits for a reader. Does nothing when it is not
    /// exposed.
    pub fn withdraw(&self, shadow: Uuid, reason: &str) {
        if let Some(gone) = self.take_down(shadow, reason, true)
            && gone.persistent
        {
            self.save(&[]);
        }
    }

    /// At start: mounts again the persistent shadow copies recorded as exposed. One that no
    /// longer exists is forgotten; one that cannot be mounted is reported (event 8112) and
    /// stays recorded, to be tried again at the next start.
    pub fn restore(&self, coordinator: &vss::Coordinator) {
        let recorded = self.load();
        if recorded.is_empty() {
            return;
        }
        let _op = self.ops.lock();
        let live = coordinator.list_snapshots();
        let mut keep = Vec::new();
        for r in &recorded {
            let Some((_, info)) = live.iter().find(|(_, s)| s.snapshot_id == r.shadow) else {
                tracing::info!(shadow = %r.shadow, "an exposed shadow copy no longer exists");
                continue;
            };
            // A mount left by a node that was killed: it answers nothing any more.
            if stale_mount_at(&r.at, r.shadow)
                && let Err(e) = detach(&r.at)
            {
                tracing::warn!(at = %r.at.display(), "detaching a stale mount: {e}");
            }
            let mounted = prepare_mount_point(&r.at, &self.forbidden).and_then(|at| {
                let view = coordinator
                    .snapshot_view(r.shadow)
                    .map_err(|source| ExposeError::View { shadow: r.shadow, source })?;
                mount_view(r.shadow, view, &at)
            });
            match mounted {
                Ok(mount) => {
                    let m = Mounted { volume: info.volume.clone(), persistent: true, mount };
                    self.mounted.lock().insert(r.shadow, m);
                    self.sink.emit(
                        &cat::PROVIDER_SHADOW_EXPOSED,
                        None,
                        json!({"snapshot": r.shadow.to_string(), "volume": info.volume,
                               "at": r.at.display().to_string()}),
                    );
                }
                Err(e) => {
                    tracing::error!(shadow = %r.shadow, at = %r.at.display(), "not exposed again: {e}");
                    self.sink.emit(
                        &cat::PROVIDER_SHADOW_EXPOSE_FAILED,
                        None,
                        json!({"snapshot": r.shadow.to_string(), "at": r.at.display().to_string(),
                               "error": e.to_string()}),
                    );
                    keep.push(r.clone());
                }
            }
        }
        self.save(&keep);
    }

    /// When the node stops: unmounts everything (lazily; open files fail from here on, the
    /// process is going away), keeping the record so that the persistent ones come back.
    pub fn shutdown(&self) {
        let ids: Vec<Uuid> = self.mounted.lock().keys().copied().collect();
        for id in ids {
            self.take_down(id, "the node is stopping", true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_must_be_absolute_empty_and_outside_the_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        let forbidden = vec![vol.clone()];
        assert!(prepare_mount_point(Path::new("rel/path"), &forbidden).is_err());
        let inside = prepare_mount_point(&vol.join("sub/mnt"), &forbidden).unwrap_err();
        assert!(inside.to_string().contains("inside"), "{inside}");
        let full = dir.path().join("full");
        std::fs::create_dir_all(full.join("x")).unwrap();
        let e = prepare_mount_point(&full, &forbidden).unwrap_err();
        assert!(e.to_string().contains("not an empty directory"), "{e}");
        let made = prepare_mount_point(&dir.path().join("new/mnt"), &forbidden).unwrap();
        assert!(made.is_dir());
    }

    #[test]
    fn the_record_file_round_trips() {
        let f = RecordFile {
            exposed: vec![Recorded { shadow: Uuid::from_u128(7), at: "/mnt/x".into() }],
        };
        let text = toml::to_string(&f).unwrap();
        let back: RecordFile = toml::from_str(&text).unwrap();
        assert_eq!(back.exposed, f.exposed);
    }
}
