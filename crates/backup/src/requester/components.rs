//! Finding a storage group's components in the writers' metadata documents.

use std::path::Path;

use store::StorageGroupDef;
use vss::{Component, ComponentType, FileDescriptor, WriterDescription};

/// Where a storage group's components are in the writers' metadata (see [`find_components`]).
#[derive(Debug)]
pub struct FoundComponents<'w> {
    /// Index of the writer in the gathered list.
    pub writer: usize,
    /// The file-group component holding the group's logs and checkpoint.
    pub logs: &'w Component,
    /// The database components, by the database name of the storage group's definition.
    pub databases: Vec<(String, &'w Component)>,
}

/// Finds storage group `def`'s components in the writers' metadata documents by the files
/// they describe: the file-group component whose descriptors cover the group's log stream,
/// and the database components of the same writer whose descriptors cover the group's
/// database files. Neither a writer id, an instance name nor a logical path is assumed, so a
/// second writer (the replication writer, describing its copies under its own logical path)
/// is never taken for the store's and needs no change here.
pub fn find_components<'w>(
    writers: &'w [WriterDescription],
    def: &StorageGroupDef,
) -> Option<FoundComponents<'w>> {
    let on = |fd: &FileDescriptor, volume: &str, file: &Path| {
        fd.volume == volume && fd.matches(&file.to_string_lossy())
    };
    let first_log = def.log_dir.join(ese::logfmt::generation_name(&def.prefix, 1));
    writers.iter().enumerate().find_map(|(i, w)| {
        let components = &w.metadata.components;
        let logs = components.iter().find(|c| {
            c.component_type == ComponentType::Filegroup
                && c.files.iter().any(|fd| on(fd, &def.log_volume.label, &first_log))
        })?;
        let databases = def
            .databases
            .iter()
            .filter_map(|d| {
                components
                    .iter()
                    .find(|c| {
                        c.component_type == ComponentType::Database
                            && c.files.iter().any(|fd| on(fd, &d.volume.label, &d.path))
                    })
                    .map(|c| (d.name.clone(), c))
            })
            .collect();
        Some(FoundComponents { writer: i, logs, databases })
    })
}

/// The backup state that selects `components` of writer `chosen` and excludes every other
/// writer of the gathered metadata (so that only the chosen writer takes part in the job).
pub fn selection_state(
    writers: &[WriterDescription],
    chosen: &vss::WriterKey,
    components: Vec<vss::ComponentKey>,
    backup_type: vss::BackupType,
    base: Option<vss::BackupComponentsDocument>,
) -> vss::BackupState {
    vss::BackupState {
        backup_type: vss::BackupTypeChoice(backup_type),
        components,
        excluded_writers: writers
            .iter()
            .filter(|w| &w.key != chosen)
            .map(|w| w.key.clone())
            .collect(),
        base,
        volumes: Vec::new(),
    }
}

/// The base set's components document as writer `chosen` of this job reads it. The store
/// writer and the replication writer are two instances of one writer class, over one database
/// history: a base taken through the other instance (a full of the active, for an incremental
/// of a passive copy, or the reverse) counts as this writer's.
pub fn base_for_writer(
    mut base: vss::BackupComponentsDocument,
    chosen: &vss::WriterKey,
) -> vss::BackupComponentsDocument {
    if base.writer(chosen).is_none()
        && let Some(w) = base.writers.iter_mut().find(|w| w.key.writer_id == chosen.writer_id)
    {
        w.key = chosen.clone();
    }
    base
}
