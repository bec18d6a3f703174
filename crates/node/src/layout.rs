//! Storage groups and databases created at runtime (`shadowcopy store create …`), and the
//! file that keeps them across restarts.
//!
//! The configuration file is the administrator's; the node never rewrites it. What is created
//! through the API goes to `<data_dir>/storage_groups.toml` instead — whole storage groups,
//! and databases added to storage groups of either origin — written atomically after the
//! new storage group or database is mounted (so that the file never names something the next
//! start could not mount). At start the file is merged into the configuration and the result
//! is checked as one configuration: an administrator who later adds a colliding storage group
//! to the configuration file gets an error naming both at start, not a silent override.
//!
//! Creating refuses, before touching anything, a name that exists, a log prefix whose files
//! would land beside another storage group's (same log or system directory), a database file
//! another database uses, and files already on disk (creating never adopts old logs or
//! databases; mount them through the configuration if that is what is meant).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use volume::FileSystem;

use crate::config::{Config, ConfigError, DatabaseConfig, StorageGroupConfig};
use crate::node::Node;

/// The file in the node's data directory.
pub const FILE: &str = "storage_groups.toml";

/// What was created at runtime, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Created {
    /// Storage groups created at runtime, with every database they have.
    #[serde(default, rename = "storage_group", skip_serializing_if = "Vec::is_empty")]
    pub storage_groups: Vec<StorageGroupConfig>,
    /// Databases added at runtime to storage groups of the configuration file.
    #[serde(default, rename = "database", skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<AddedDatabase>,
}

/// `[[database]]`: a database added to a storage group of the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedDatabase {
    pub storage_group: String,
    pub name: String,
    pub volume: String,
    pub path: PathBuf,
}

/// Why the persisted file could not be used at start.
#[derive(Debug, thiserror::Error)]
#[error("{path} (storage groups and databases created at runtime): {reason}")]
pub struct LayoutError {
    pub path: PathBuf,
    pub reason: String,
}

impl Created {
    /// Reads `<data_dir>/storage_groups.toml`; nothing was created when it does not exist.
    pub fn load(data_dir: &Path) -> Result<Created, LayoutError> {
        crate::state_file::load(data_dir, FILE)
            .map(Option::unwrap_or_default)
            .map_err(|reason| LayoutError { path: data_dir.join(FILE), reason })
    }

    /// Writes the file atomically and durably: a temporary file, synced, renamed over the old
    /// one, and the directory synced, so that a crash leaves the old or the new content.
    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        let header = "# Storage groups and databases created with `shadowcopy store create`.\n\
             # Written by the node; merged with the configuration file at start.\n";
        crate::state_file::save(data_dir, FILE, header, self)
    }

    /// The configuration with these storage groups and databases added, checked as a whole.
    pub fn merge(&self, config: &Config) -> Result<Config, ConfigError> {
        let mut merged = config.clone();
        merged.storage_groups.extend(self.storage_groups.iter().cloned());
        for (i, d) in self.databases.iter().enumerate() {
            let sg =
                merged.storage_groups.iter_mut().find(|g| g.name == d.storage_group).ok_or_else(
                    || ConfigError::Invalid {
                        key: format!("database[{i}].storage_group"),
                        reason: format!("no storage group {:?}", d.storage_group),
                    },
                )?;
            sg.databases.push(DatabaseConfig {
                name: d.name.clone(),
                volume: d.volume.clone(),
                path: d.path.clone(),
            });
        }
        merged.validate()?;
        Ok(merged)
    }
}

/// A storage group to create: its logs and its first database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStorageGroup {
    pub name: String,
    pub log_volume: String,
    /// On the log volume; the storage group's name when absent.
    pub log_dir: Option<PathBuf>,
    /// Holds the checkpoint; the log directory when absent.
    pub system_dir: Option<PathBuf>,
    /// `E00`…`EFF`; the lowest one no storage group of the node uses when absent.
    pub prefix: Option<String>,
    #[serde(default)]
    pub circular_logging: bool,
    pub database: NewDatabase,
}

/// A database to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDatabase {
    pub name: String,
    pub volume: String,
    /// On its volume; `<storage group>/<name>.edb` when absent.
    pub path: Option<PathBuf>,
}

/// Why a storage group or database was not created. Nothing was changed, unless the message
/// says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{what} {name:?} already exists")]
    Exists { what: &'static str, name: String },
    #[error("{0}")]
    Collides(String),
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{what} was created and is mounted, but saving {path} failed ({source}): {outcome}")]
    Persist {
        what: String,
        path: PathBuf,
        outcome: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("checking {path} on volume {volume}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The request's own name for a key of the merged configuration: `storage_group[3].prefix`
/// is `prefix` of the storage group being created (index `sg`), `….database[1].path` is
/// `database.path` (or `path` when a database is being added, `db` its index).
fn field_of(err: ConfigError, sg: usize, db: Option<usize>) -> CreateError {
    match err {
        ConfigError::Invalid { key, reason } => {
            let mut field =
                key.strip_prefix(&format!("storage_group[{sg}].")).unwrap_or(&key).to_string();
            if let Some(j) = db {
                field = field.strip_prefix(&format!("database[{j}].")).unwrap_or(&field).into();
            } else {
                field = field.replacen("database[0].", "database.", 1);
            }
            CreateError::Invalid { field, reason }
        }
        other => CreateError::Invalid { field: "storage_group".into(), reason: other.to_string() },
    }
}

/// The lowest prefix no storage group of `layout` uses.
fn free_prefix(layout: &Config) -> Option<String> {
    (0..=0xFFu32)
        .map(|n| format!("E{n:02X}"))
        .find(|p| layout.storage_groups.iter().all(|g| &g.prefix != p))
}

/// The default path of a database: `<storage group>/<name>.edb`.
fn default_db_path(sg: &str, db: &str) -> PathBuf {
    Path::new(sg).join(format!("{db}.edb"))
}

/// Refuses a database file another database of `layout` uses.
fn check_database_file(layout: &Config, db: &DatabaseConfig) -> Result<(), CreateError> {
    for g in &layout.storage_groups {
        if let Some(d) = g.databases.iter().find(|d| d.volume == db.volume && d.path == db.path) {
            return Err(CreateError::Collides(format!(
                "database file {}:{} is database {} of storage group {}",
                db.volume,
                db.path.display(),
                d.name,
                g.name
            )));
        }
    }
    Ok(())
}

impl Node {
    /// Whether `path` exists on the volume labelled `label` (unknown labels are left to the
    /// configuration check, which names them).
    fn exists_on(&self, label: &str, path: &Path) -> Result<bool, CreateError> {
        let Some(vol) = self.volume(label) else { return Ok(false) };
        vol.exists(path).map_err(|source| CreateError::Io {
            volume: label.into(),
            path: path.into(),
            source,
        })
    }

    /// Refuses a database file already on disk.
    fn check_database_on_disk(&self, db: &DatabaseConfig) -> Result<(), CreateError> {
        if self.exists_on(&db.volume, &db.path)? {
            return Err(CreateError::Collides(format!(
                "{}:{} already exists; a new database needs a new file",
                db.volume,
                db.path.display()
            )));
        }
        Ok(())
    }

    /// Creates and mounts a storage group with its first database, and records it so that
    /// it is mounted at every later start. Returns its definition.
    pub fn create_storage_group(&self, req: NewStorageGroup) -> Result<Value, CreateError> {
        let mut rt = self.runtime.lock();
        if rt.layout.storage_groups.iter().any(|g| g.name == req.name)
            || self.store().storage_group(&req.name).is_ok()
        {
            return Err(CreateError::Exists { what: "storage group", name: req.name });
        }
        let log_dir = req.log_dir.unwrap_or_else(|| PathBuf::from(&req.name));
        let system_dir = req.system_dir.unwrap_or_else(|| log_dir.clone());
        let prefix = match req.prefix {
            Some(p) => p.to_ascii_uppercase(),
            None => free_prefix(&rt.layout).ok_or_else(|| CreateError::Invalid {
                field: "prefix".into(),
                reason: "every prefix from E00 to EFF is in use".into(),
            })?,
        };
        let db_path =
            req.database.path.unwrap_or_else(|| default_db_path(&req.name, &req.database.name));
        let sg = StorageGroupConfig {
            name: req.name.clone(),
            log_volume: req.log_volume,
            system_dir: Some(system_dir.clone()),
            log_dir,
            prefix,
            circular_logging: req.circular_logging,
            databases: vec![DatabaseConfig {
                name: req.database.name,
                volume: req.database.volume,
                path: db_path,
            }],
        };
        // What would collide with the storage groups there are, then the syntax (names,
        // relative paths, prefix form, known volumes), then what is on disk.
        for g in &rt.layout.storage_groups {
            let g_system = g.system_dir.as_ref().unwrap_or(&g.log_dir);
            let same_dir = g.log_dir == sg.log_dir || *g_system == system_dir;
            if g.log_volume == sg.log_volume && g.prefix == sg.prefix && same_dir {
                return Err(CreateError::Collides(format!(
                    "prefix {} is storage group {}'s in the same directory of volume {}; give \
                     another --prefix or directory",
                    sg.prefix, g.name, sg.log_volume
                )));
            }
        }
        check_database_file(&rt.layout, &sg.databases[0])?;
        let mut merged = rt.layout.clone();
        merged.storage_groups.push(sg.clone());
        let index = merged.storage_groups.len() - 1;
        merged.validate().map_err(|e| field_of(e, index, None))?;
        let chk = system_dir.join(ese::logfmt::checkpoint_name(&sg.prefix));
        let cur = sg.log_dir.join(format!("{}.log", sg.prefix));
        for path in [&chk, &cur] {
            if self.exists_on(&sg.log_volume, path)? {
                return Err(CreateError::Collides(format!(
                    "{}:{} already exists: the directory holds the files of a storage group \
                     with prefix {}; give another directory or prefix",
                    sg.log_volume,
                    path.display(),
                    sg.prefix
                )));
            }
        }
        self.check_database_on_disk(&sg.databases[0])?;

        let group = self.store().add_storage_group(self.group_def(&sg))?;
        if let Err(e) = group.mount() {
            let _ = self.store().remove_storage_group(&sg.name);
            return Err(e.into());
        }
        rt.created.storage_groups.push(sg.clone());
        if let Err(source) = rt.created.save(&self.config().node.data_dir) {
            rt.created.storage_groups.pop();
            let _ = self.store().remove_storage_group(&sg.name);
            return Err(CreateError::Persist {
                what: format!("storage group {}", sg.name),
                path: self.config().node.data_dir.join(FILE),
                outcome: "it was dismounted and forgotten again (its new files stay on disk)",
                source,
            });
        }
        rt.layout = merged;
        tracing::info!(storage_group = %sg.name, prefix = %sg.prefix, "storage group created");
        Ok(json!(sg))
    }

    /// Creates a database in a mounted storage group, and records it so that it is mounted
    /// at every later start. The storage group is dismounted and mounted again with the
    /// database (its definition is fixed while mounted); requests on it meanwhile fail.
    pub fn add_database(
        &self,
        storage_group: &str,
        req: NewDatabase,
    ) -> Result<Value, CreateError> {
        let mut rt = self.runtime.lock();
        let Some(index) = rt.layout.storage_groups.iter().position(|g| g.name == storage_group)
        else {
            return Err(store::StoreError::NoSuchStorageGroup(storage_group.into()).into());
        };
        let current = rt.layout.storage_groups[index].clone();
        if current.databases.iter().any(|d| d.name == req.name) {
            return Err(CreateError::Exists {
                what: "database",
                name: format!("{storage_group}/{}", req.name),
            });
        }
        let db = DatabaseConfig {
            path: req.path.unwrap_or_else(|| default_db_path(storage_group, &req.name)),
            name: req.name,
            volume: req.volume,
        };
        check_database_file(&rt.layout, &db)?;
        let mut merged = rt.layout.clone();
        merged.storage_groups[index].databases.push(db.clone());
        merged.validate().map_err(|e| field_of(e, index, Some(current.databases.len())))?;
        self.check_database_on_disk(&db)?;

        let group = self.store().storage_group(storage_group)?;
        if !group.is_mounted() {
            return Err(store::StoreError::NotMounted(storage_group.into()).into());
        }
        if let Some((job, by)) = group.backup_holder() {
            return Err(store::StoreError::BackupInProgress {
                storage_group: storage_group.into(),
                job,
                by,
                action: "adding a database".into(),
            }
            .into());
        }
        let fs = self
            .volume(&db.volume)
            .ok_or_else(|| CreateError::Invalid {
                field: "volume".into(),
                reason: format!("no volume {:?}", db.volume),
            })?
            .clone();
        group
            .instance()?
            .create_database(&db.name, std::sync::Arc::new(fs), &db.path)
            .map_err(|e| CreateError::Store(store::StoreError::from(e)))?;
        // Mount again with the new definition; on failure, with the old one.
        let updated = merged.storage_groups[index].clone();
        self.store().remove_storage_group(storage_group)?;
        let remounted =
            self.store().add_storage_group(self.group_def(&updated)).and_then(|g| g.mount());
        if let Err(e) = remounted {
            let _ = self.store().remove_storage_group(storage_group);
            if let Ok(g) = self.store().add_storage_group(self.group_def(&current)) {
                let _ = g.mount();
            }
            return Err(e.into());
        }
        let before = rt.created.clone();
        match rt.created.storage_groups.iter_mut().find(|g| g.name == storage_group) {
            Some(g) => g.databases.push(db.clone()),
            None => rt.created.databases.push(AddedDatabase {
                storage_group: storage_group.into(),
                name: db.name.clone(),
                volume: db.volume.clone(),
                path: db.path.clone(),
            }),
        }
        if let Err(source) = rt.created.save(&self.config().node.data_dir) {
            rt.created = before;
            rt.layout = merged;
            return Err(CreateError::Persist {
                what: format!("database {storage_group}/{}", db.name),
                path: self.config().node.data_dir.join(FILE),
                outcome: "it is not known after a restart unless the configuration names it",
                source,
            });
        }
        rt.layout = merged;
        tracing::info!(storage_group, database = %db.name, "database created");
        Ok(json!({ "storage_group": storage_group, "database": db }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_merges() {
        let created = Created {
            storage_groups: vec![StorageGroupConfig {
                name: "SG2".into(),
                log_volume: "logs".into(),
                log_dir: "SG2".into(),
                system_dir: None,
                prefix: "E01".into(),
                circular_logging: true,
                databases: vec![DatabaseConfig {
                    name: "DB1".into(),
                    volume: "db".into(),
                    path: "SG2/DB1.edb".into(),
                }],
            }],
            databases: vec![AddedDatabase {
                storage_group: "SG1".into(),
                name: "DB2".into(),
                volume: "db".into(),
                path: "SG1/DB2.edb".into(),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        created.save(dir.path()).unwrap();
        assert_eq!(Created::load(dir.path()).unwrap(), created);
        assert_eq!(Created::load(&dir.path().join("none")).unwrap(), Created::default());

        let config = crate::sample::Sample { node: "n", shadow_max: None, ..Default::default() }
            .config(dir.path())
            .unwrap();
        let merged = created.merge(&config).unwrap();
        let names: Vec<_> = merged.storage_groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["SG1", "SG2"]);
        assert_eq!(merged.storage_groups[0].databases[1].name, "DB2");

        // A configuration that later defines the same storage group is refused at start.
        let mut clash = config.clone();
        clash.storage_groups.push(created.storage_groups[0].clone());
        let e = created.merge(&clash).unwrap_err().to_string();
        assert!(e.contains("SG2") && e.contains("twice"), "{e}");
        let orphan = Created {
            databases: vec![AddedDatabase {
                storage_group: "SG9".into(),
                ..created.databases[0].clone()
            }],
            ..Default::default()
        };
        let e = orphan.merge(&config).unwrap_err().to_string();
        assert!(e.contains("database[0].storage_group") && e.contains("SG9"), "{e}");
    }
}
