//! The plan of a backup: which files of the selected components to copy out of the snapshot
//! views, and what each is to its writer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use volume::{FileKind, FsRef};
use vss::{ComponentType, FileDescriptor};

use super::Requester;
use crate::error::{RequesterError, Result};
use crate::repo::FileRole;

/// One file to copy out of a snapshot.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) volume: String,
    pub(super) path: PathBuf,
    pub(super) role: FileRole,
    pub(super) component: String,
    pub(super) len: u64,
    pub(super) generation: Option<u32>,
}

/// `*` matches any run of characters, `?` any one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

impl Requester {
    pub(super) fn plan_files(
        &self,
        views: &BTreeMap<String, FsRef>,
        component: &str,
        ctype: ComponentType,
        fd: &FileDescriptor,
        prefix: &str,
    ) -> Result<Vec<Planned>> {
        let view =
            views.get(&fd.volume).ok_or_else(|| RequesterError::NoView(fd.volume.clone()))?;
        let mut out = Vec::new();
        let mut dirs = vec![PathBuf::from(&fd.path)];
        while let Some(dir) = dirs.pop() {
            let entries = view.read_dir(&dir).map_err(|source| RequesterError::List {
                volume: fd.volume.clone(),
                path: dir.display().to_string(),
                source,
            })?;
            for e in entries {
                let path = dir.join(&e.name);
                if e.kind == FileKind::Dir {
                    if fd.recursive {
                        dirs.push(path);
                    }
                    continue;
                }
                if !glob_match(&fd.filespec, &e.name) {
                    continue;
                }
                let generation = ese::logfmt::parse_generation_name(prefix, &e.name);
                let role = match ctype {
                    ComponentType::Database => FileRole::Database,
                    ComponentType::Filegroup if e.name.ends_with(".chk") => FileRole::Checkpoint,
                    // Only closed generations: the snapshot's current log holds nothing the
                    // closed ones do not (the freeze rolled it), and a restore starts a new one.
                    ComponentType::Filegroup if generation.is_some() => FileRole::Log,
                    ComponentType::Filegroup => continue,
                };
                out.push(Planned {
                    volume: fd.volume.clone(),
                    path,
                    role,
                    component: component.into(),
                    len: e.len,
                    generation,
                });
            }
        }
        out.sort_by(|a, b| (a.generation, &a.path).cmp(&(b.generation, &b.path)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("E00*.log", "E000000000A.log"));
        assert!(glob_match("E00*.log", "E00.log"));
        assert!(!glob_match("E00*.log", "E01.log"));
        assert!(glob_match("E00.chk", "E00.chk"));
        assert!(glob_match("?00.chk", "E00.chk"));
        assert!(!glob_match("E00.chk", "E00.chkx"));
    }
}
