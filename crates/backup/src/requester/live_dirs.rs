//! Refusing a repository inside the node's live data.
//!
//! A repository inside a volume directory would be written into the live data it copies:
//! every snapshot of that volume would copy the repository too, its packs would fill the
//! volume (and its shadow storage), and a restore over the storage group could overwrite it.
//! So a backup refuses such a path before anything is created there.

use std::path::{Component, Path, PathBuf};

use store::InformationStore;

use crate::error::{RequesterError, Result};

/// A volume of the node: its label and host directory.
pub type VolumeDir = (String, PathBuf);

/// `path` made absolute, `.` and `..` resolved lexically, and its longest existing prefix
/// resolved through symbolic links (the rest of it need not exist yet).
fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            c => clean.push(c),
        }
    }
    let mut rest = Vec::new();
    let mut base = clean.as_path();
    loop {
        if let Ok(real) = base.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return clean,
        }
    }
}

/// Refuses `repo` if it lies inside (or is) a directory the node keeps live data in: one of
/// `volumes`, naming the storage group's log, system or database directory when it is inside
/// one of those. The error names both paths.
pub fn refuse_repository_in_live_dirs(
    store: &InformationStore,
    repo: &Path,
    volumes: &[VolumeDir],
) -> Result<()> {
    let target = resolved(repo);
    let root_of =
        |label: &str| volumes.iter().find(|(l, _)| l == label).map(|(_, root)| resolved(root));
    // The most precise description first: a storage group's directories, then the volume.
    let mut live: Vec<(String, PathBuf)> = Vec::new();
    for sg in store.storage_groups() {
        let def = sg.def();
        if let Some(root) = root_of(&def.log_volume.label) {
            let name = &def.name;
            live.push((
                format!("the log directory of storage group {name}"),
                root.join(&def.log_dir),
            ));
            live.push((
                format!("the system directory of storage group {name}"),
                root.join(&def.system_dir),
            ));
        }
        for db in &def.databases {
            if let (Some(root), Some(dir)) = (root_of(&db.volume.label), db.path.parent()) {
                live.push((
                    format!("the database directory of {} in storage group {}", db.name, def.name),
                    root.join(dir),
                ));
            }
        }
    }
    for (label, root) in volumes {
        live.push((format!("volume {label}"), resolved(root)));
    }
    match live.into_iter().find(|(_, dir)| target.starts_with(dir)) {
        None => Ok(()),
        Some((what, dir)) => Err(RequesterError::Refused(format!(
            "repository {} lies inside {what} ({}): a backup there would write into the live \
             data it copies; choose a directory outside the node's volumes",
            repo.display(),
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::resolved;
    use std::path::Path;

    #[test]
    fn resolution_cleans_dots_and_follows_links_of_the_existing_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("vol")).unwrap();
        std::os::unix::fs::symlink(real.join("vol"), real.join("link")).unwrap();
        assert_eq!(resolved(&real.join("link/new/repo")), real.join("vol/new/repo"));
        assert_eq!(resolved(&real.join("x/../vol/./r")), real.join("vol/r"));
        assert!(resolved(Path::new("rel")).is_absolute());
    }
}
