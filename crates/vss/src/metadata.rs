//! The writer metadata document: what a writer owns and how it may be backed up and restored.
//!
//! A writer describes its data as *components* (a database, a log stream) under logical paths;
//! each component lists *file descriptors* that say which files on which volume belong to it.
//! The coordinator derives a snapshot set's volumes from the file descriptors of the selected
//! components; the requester copies the matching files out of the snapshot views.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifies a writer across jobs: the writer class id (shared by all writers of one product,
/// as the store's and the replication service's writers share one) plus the instance name that
/// tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriterKey {
    pub writer_id: Uuid,
    pub instance_name: String,
}

impl fmt::Display for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.instance_name, self.writer_id)
    }
}

/// The kind of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentType {
    Database,
    Filegroup,
}

/// A set of files of one component on one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDescriptor {
    /// Label of the volume the files live on (the snapshot set includes that volume).
    pub volume: String,
    /// Directory relative to the volume root (`""` is the root), `/`-separated.
    pub path: String,
    /// File name pattern: `*` matches any run of characters, `?` any one character.
    pub filespec: String,
    /// Whether subdirectories of `path` are included.
    pub recursive: bool,
}

impl FileDescriptor {
    /// Whether `file` (a path relative to the volume root) is described by this descriptor.
    pub fn matches(&self, file: &str) -> bool {
        let dir = self.path.trim_matches('/');
        let rest = if dir.is_empty() {
            file
        } else {
            match file.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) {
                Some(r) => r,
                None => return false,
            }
        };
        let (subdir, name) = match rest.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, rest),
        };
        (subdir.is_none() || self.recursive) && glob_match(&self.filespec, name)
    }
}

/// Matches `name` against a pattern with `*` and `?`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// One component a writer offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// Logical path (`product\store\server` in the mail writers), may be empty.
    pub logical_path: String,
    /// Component name, unique under its logical path (e.g. the database GUID).
    pub name: String,
    pub component_type: ComponentType,
    /// Human-readable caption.
    pub caption: String,
    /// The files that make up the component.
    pub files: Vec<FileDescriptor>,
    /// Whether the requester may select this component on its own.
    pub selectable: bool,
}

impl Component {
    /// The key that selects this component of writer `writer`.
    pub fn key(&self, writer: &WriterKey) -> ComponentKey {
        ComponentKey {
            writer: writer.clone(),
            logical_path: self.logical_path.clone(),
            name: self.name.clone(),
        }
    }
}

/// Names one component of one writer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ComponentKey {
    pub writer: WriterKey,
    pub logical_path: String,
    pub name: String,
}

impl fmt::Display for ComponentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.logical_path.is_empty() {
            write!(f, "{}:{}", self.writer.instance_name, self.name)
        } else {
            write!(f, "{}:{}\\{}", self.writer.instance_name, self.logical_path, self.name)
        }
    }
}

/// The backup types a requester may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupType {
    /// Everything; backup history updated (logs may be truncated afterwards).
    Full,
    /// Changes since the last full or incremental; marks them backed up.
    Incremental,
    /// Changes since the last full; marks nothing.
    Differential,
    /// Logs only.
    Log,
    /// Like full, but the history is untouched; never a base for incremental/differential.
    Copy,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
            BackupType::Differential => "differential",
            BackupType::Log => "log",
            BackupType::Copy => "copy",
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a writer's backup schema may declare beyond full (the reference's backup schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaFeature {
    Differential,
    Incremental,
    ExclusiveIncrementalDifferential,
    Log,
    Copy,
    RestoreWithMove,
    RollForwardRestore,
    NewTarget,
}

/// A writer's backup schema. Empty means "full only", the reference's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchema {
    pub features: BTreeSet<SchemaFeature>,
}

impl BackupSchema {
    pub fn with(features: impl IntoIterator<Item = SchemaFeature>) -> Self {
        BackupSchema { features: features.into_iter().collect() }
    }

    /// Whether `kind` is supported (full always is).
    pub fn supports(&self, kind: BackupType) -> bool {
        let f = |x| self.features.contains(&x);
        match kind {
            BackupType::Full => true,
            BackupType::Incremental => {
                f(SchemaFeature::Incremental) || f(SchemaFeature::ExclusiveIncrementalDifferential)
            }
            BackupType::Differential => {
                f(SchemaFeature::Differential) || f(SchemaFeature::ExclusiveIncrementalDifferential)
            }
            BackupType::Log => f(SchemaFeature::Log),
            BackupType::Copy => f(SchemaFeature::Copy),
        }
    }

    /// The type the writer is actually backed up with when `requested` is asked for: the
    /// reference backs up a writer as full when its schema lacks the requested type.
    pub fn effective(&self, requested: BackupType) -> BackupType {
        if self.supports(requested) { requested } else { BackupType::Full }
    }
}

/// How a writer's data is put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMethod {
    /// Restore over the files if they are not in use.
    RestoreIfNotThere,
    /// Restore only if the files can be replaced.
    RestoreIfCanReplace,
    /// Stop the service, restore, restart.
    StopRestoreStart,
    /// Restore to an alternate location and let the writer move them.
    RestoreToAlternateLocation,
    /// Custom: the writer's pre/post restore do the work.
    Custom,
}

/// The writer metadata document handed out at identify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterMetadata {
    /// Document format version.
    pub version: u32,
    pub writer_id: Uuid,
    pub writer_name: String,
    pub instance_name: String,
    pub components: Vec<Component>,
    pub schema: BackupSchema,
    pub restore_method: RestoreMethod,
}

/// Current writer metadata format.
pub const WRITER_METADATA_VERSION: u32 = 1;

impl WriterMetadata {
    pub fn key(&self) -> WriterKey {
        WriterKey { writer_id: self.writer_id, instance_name: self.instance_name.clone() }
    }

    /// The component at `logical_path` / `name`.
    pub fn component(&self, logical_path: &str, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.logical_path == logical_path && c.name == name)
    }

    pub fn to_json(&self) -> String {
        #[allow(clippy::expect_used)] // plain data with string keys: serializing cannot fail
        let json = serde_json::to_string_pretty(self).expect("metadata serializes");
        json
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_descriptors_match_by_directory_spec_and_recursion() {
        let d = FileDescriptor {
            volume: "logs".into(),
            path: "sg1".into(),
            filespec: "E00*.log".into(),
            recursive: false,
        };
        assert!(d.matches("sg1/E00.log"));
        assert!(d.matches("sg1/E000000000A.log"));
        assert!(!d.matches("sg1/E00.chk"));
        assert!(!d.matches("sg1/sub/E00.log"));
        assert!(!d.matches("sg2/E00.log"));
        let r = FileDescriptor { recursive: true, path: "".into(), ..d };
        assert!(r.matches("a/b/E001.log"));
        assert!(glob_match("*.e?b", "x.edb"));
        assert!(!glob_match("*.e?b", "x.edbx"));
    }

    #[test]
    fn unsupported_types_fall_back_to_full() {
        let s = BackupSchema::default();
        assert_eq!(s.effective(BackupType::Incremental), BackupType::Full);
        assert_eq!(s.effective(BackupType::Copy), BackupType::Full);
        let s = BackupSchema::with([SchemaFeature::ExclusiveIncrementalDifferential]);
        assert_eq!(s.effective(BackupType::Incremental), BackupType::Incremental);
        assert_eq!(s.effective(BackupType::Differential), BackupType::Differential);
        assert_eq!(s.effective(BackupType::Log), BackupType::Full);
    }
}
