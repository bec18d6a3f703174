//! The information store: the node's storage groups.

use std::collections::BTreeMap;
use std::sync::Arc;

use events::EventSink;
use parking_lot::RwLock;

use crate::error::{Result, StoreError};
use crate::storage_group::{StorageGroup, StorageGroupDef};

/// Every storage group of a node.
pub struct InformationStore {
    node: String,
    events: Arc<dyn EventSink>,
    groups: RwLock<BTreeMap<String, Arc<StorageGroup>>>,
}

impl std::fmt::Debug for InformationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformationStore").field("node", &self.node).finish()
    }
}

impl InformationStore {
    /// An empty store on node `node`, emitting events to `events`.
    pub fn new(node: impl Into<String>, events: Arc<dyn EventSink>) -> Arc<Self> {
        Arc::new(Self { node: node.into(), events, groups: RwLock::default() })
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where the store's events go.
    pub fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    /// Adds a storage group (not mounted).
    pub fn add_storage_group(&self, def: StorageGroupDef) -> Result<Arc<StorageGroup>> {
        let mut g = self.groups.write();
        if g.contains_key(&def.name) {
            return Err(StoreError::StorageGroupExists(def.name));
        }
        let sg = Arc::new(StorageGroup::new(def, self.events.clone()));
        g.insert(sg.name().to_string(), sg.clone());
        Ok(sg)
    }

    /// Removes a storage group; refused while a backup of it is in progress. It is
    /// dismounted first if mounted.
    pub fn remove_storage_group(&self, name: &str) -> Result<()> {
        let sg = self.storage_group(name)?;
        if let Some((job, by)) = sg.backup_holder() {
            return Err(StoreError::BackupInProgress {
                storage_group: name.into(),
                job,
                by,
                action: "removing the storage group".into(),
            });
        }
        if sg.is_mounted() {
            sg.dismount(false)?;
        }
        self.groups.write().remove(name);
        Ok(())
    }

    /// The storage group called `name`.
    pub fn storage_group(&self, name: &str) -> Result<Arc<StorageGroup>> {
        self.groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchStorageGroup(name.into()))
    }

    /// Every storage group, by name.
    pub fn storage_groups(&self) -> Vec<Arc<StorageGroup>> {
        self.groups.read().values().cloned().collect()
    }

    /// Dismounts every mounted storage group (service shutdown): jobs holding them are
    /// released first, so nothing is left frozen or in progress.
    pub fn dismount_all(&self) -> Vec<(String, StoreError)> {
        let mut failures = Vec::new();
        for sg in self.storage_groups() {
            if let Some(job) = sg.backup_in_progress() {
                sg.release(job);
            }
            if sg.is_mounted()
                && let Err(e) = sg.dismount(false)
            {
                failures.push((sg.name().to_string(), e));
            }
        }
        failures
    }
}
