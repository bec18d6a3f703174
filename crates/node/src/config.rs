//! The node's configuration file (TOML).
//!
//! `shadowcopy config sample` prints a commented configuration with every key
//! ([`SAMPLE`], `sample.toml` beside this file). In short:
//!
//! ```toml
//! [node]
//! name = "mbx1"
//! data_dir = "/var/lib/shadowcopy"      # event log and node state
//! umask = "077"                         # default: databases, logs, packs owner-only
//!
//! [api]
//! socket = "/run/shadowcopy/api.sock"   # default: <data_dir>/api.sock, created owner-only
//! tcp = "127.0.0.1:7070"                # optional; needs a token
//! token_file = "/etc/shadowcopy/token"  # or: token = "..."
//!
//! [[volume]]
//! label = "logs"
//! path = "/srv/shadowcopy/logs"
//! create = true                         # create the directory if missing (default: error)
//!
//! [[shadow_storage]]
//! for = "logs"
//! on = "logs"
//! max_size = "2GiB"
//!
//! [[storage_group]]
//! name = "SG1"
//! log_volume = "logs"
//! log_dir = "SG1"
//! system_dir = "SG1"                    # on the log volume; holds E00.chk
//! prefix = "E00"
//! circular_logging = false
//!
//! [[storage_group.database]]
//! name = "DB1"
//! volume = "db"
//! path = "SG1/DB1.edb"
//! ```
//!
//! A configuration is checked as a whole before the node starts; the first problem found is
//! reported with the key it is about (`storage_group[0].database[1].volume`) and the reason.

/// A commented configuration with every key (`shadowcopy config sample`), checked by a test to
/// be a valid configuration.
pub const SAMPLE: &str = include_str!("sample.toml");

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A problem with the configuration, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Not TOML: no key can be named, only where the text stops making sense.
    #[error("{path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    /// TOML, but a key is missing, unknown or of the wrong type.
    #[error("{path}: configuration key `{key}`{at}: {reason}")]
    Key { path: PathBuf, key: String, at: String, reason: String },
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default, rename = "volume")]
    pub volumes: Vec<VolumeConfig>,
    #[serde(default)]
    pub shadow_storage: Vec<ShadowStorageConfig>,
    #[serde(default, rename = "storage_group")]
    pub storage_groups: Vec<StorageGroupConfig>,
    /// Membership of a database availability group; absent, the node needs no etcd.
    #[serde(default)]
    pub dag: Option<DagSection>,
    /// Backups and prunes the node runs by itself ([`crate::schedule`]).
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<ScheduleConfig>,
    /// Passwords of encrypted repositories, for requests that carry none.
    #[serde(default, rename = "repository", skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryConfig>,
    /// The S3 connection for `s3://` repositories; absent, the `AWS_*` variables alone.
    #[serde(default)]
    pub s3: Option<S3Section>,
}

/// `[[schedule]]`: a backup (or a prune) the node runs by itself at the times of a cron
/// expression. Relative `password_file` is relative to the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// `minute hour day-of-month month day-of-week` (POSIX: day-of-week 0 and 7 are Sunday),
    /// or six fields with seconds first; `@daily` and the like too.
    pub cron: String,
    /// The calendar `cron` is read in (default: the node's local time zone).
    #[serde(default)]
    pub timezone: ScheduleZone,
    #[serde(default)]
    pub action: api::ScheduleAction,
    /// The storage group a backup schedule backs up.
    pub sg: Option<String>,
    /// The kind of backup (a backup schedule needs it).
    #[serde(rename = "type")]
    pub backup_type: Option<api::BackupType>,
    /// In a DAG, which copy to back up: `active`, `passive` or a node (`backup run --from`).
    pub from: Option<String>,
    /// The repository: a directory on the node (absolute) or `s3://bucket/prefix`.
    pub repo: PathBuf,
    /// The repository's password, for encrypted repositories (carried for their use).
    pub password_file: Option<PathBuf>,
    /// Applied to the storage group's sets in `repo` after each successful backup run.
    pub retention: Option<backup::retention::RetentionPolicy>,
}

/// The calendar a schedule's cron expression is read in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleZone {
    /// The node's time zone (what `date` shows): `0 2 * * *` is 02:00 on the wall clock.
    #[default]
    Local,
    Utc,
}

impl ScheduleZone {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleZone::Local => "local",
            ScheduleZone::Utc => "utc",
        }
    }
}

/// Parses a schedule's cron expression: five fields (minute first), six (seconds first) or
/// seven (a year last), or a nickname such as `@daily`. The error says what is wrong with it.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::new().parse(text).map_err(|e| e.to_string())
}

/// `[[repository]]`: where the node finds the password of the repository at `path` when a
/// request names it without one (a scheduled backup, a script that should not hold the
/// password). A relative `password_file` is relative to the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// The repository's directory, as requests name it (absolute).
    pub path: PathBuf,
    /// A file holding the password (one line).
    pub password_file: PathBuf,
}

/// `[s3]`: how the node reaches `s3://bucket/prefix` repositories. Each key left out is taken
/// from the node's `AWS_*` environment. The secret is read from a file (owner-only, like the
/// API token's) so that the configuration itself can be world-readable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (surrounding whitespace ignored).
    pub secret_key_file: Option<PathBuf>,
    /// Allow plain HTTP (a server on loopback).
    pub allow_http: Option<bool>,
}

/// `[dag]`: this node is a member of a database availability group (`shadowcopy dag init`
/// writes it). Relative paths are relative to the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DagSection {
    /// The DAG's name (its keys in etcd live under `/shadowcopy/<name>/`).
    pub name: String,
    /// etcd client endpoints, e.g. `["http://127.0.0.1:2379"]`.
    pub etcd: Vec<String>,
    /// Where the replication listener (mutual TLS) binds, host:port.
    pub listen: SocketAddr,
    /// The address other members connect to (default: `listen`).
    pub advertise: Option<String>,
    /// The DAG's CA certificate, this node's certificate and its key (PEM).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The volume that holds this node's passive copies (under `copies/<storage group>/`);
    /// default: the first volume.
    pub copy_volume: Option<String>,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub name: String,
    pub data_dir: PathBuf,
    /// The file-mode creation mask `serve` runs with, in octal; `"077"` when absent, so that
    /// databases, logs, checkpoints, packs and restored files are created 0600 (directories
    /// 0700): they hold the mail, and other local users must not read it.
    pub umask: Option<String>,
}

impl NodeSection {
    /// The creation mask to run with ([`NodeSection::umask`]); `None` when it is not octal.
    pub fn umask_bits(&self) -> Option<u32> {
        match &self.umask {
            None => Some(0o077),
            Some(text) => u32::from_str_radix(text.trim(), 8).ok().filter(|m| *m <= 0o777),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub socket: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// `[[volume]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub label: String,
    pub path: PathBuf,
    /// Whether the node may create the volume's directory. A directory that does not exist is
    /// an error otherwise: a typo in `path` must not silently make an empty volume (and a new
    /// log stream beside an existing database).
    #[serde(default)]
    pub create: bool,
    /// Copy-on-write block size; a power of two (default 16 KiB).
    pub block_size: Option<String>,
    /// Which provider snapshots the volume (default `software`).
    #[serde(default)]
    pub provider: VolumeProvider,
}

/// `provider` of a `[[volume]]`: who takes its snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeProvider {
    /// The copy-on-write filter: protects what the node writes.
    #[default]
    Software,
    /// btrfs read-only snapshots: the directory must be a btrfs subvolume; protects anything
    /// written to it, by any program.
    Btrfs,
    /// btrfs where the directory is a btrfs subvolume, software elsewhere.
    Auto,
}

/// `[[shadow_storage]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowStorageConfig {
    #[serde(rename = "for")]
    pub for_volume: String,
    pub on: String,
    /// `"UNBOUNDED"`, a size such as `"2GiB"`, or a percentage of the host file system (`"10%"`).
    pub max_size: String,
}

/// `[[storage_group]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageGroupConfig {
    pub name: String,
    pub log_volume: String,
    pub log_dir: PathBuf,
    pub system_dir: Option<PathBuf>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub circular_logging: bool,
    #[serde(default, rename = "database")]
    pub databases: Vec<DatabaseConfig>,
}

fn default_prefix() -> String {
    "E00".into()
}

/// `[[storage_group.database]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub name: String,
    pub volume: String,
    pub path: PathBuf,
}

/// Shadow-storage limits and sizes are written as the API takes them (one parser for both).
pub use api::{MaxSize, parse_size};

/// Parses a shadow-storage `max_size` (`None`: not a size, a percentage or `UNBOUNDED`).
pub fn parse_max_size(text: &str) -> Option<MaxSize> {
    text.parse().ok()
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn check_relative(key: &str, p: &Path) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(invalid(
                    key,
                    format!(
                        "{} must be a relative path inside the volume, without '..'",
                        p.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.into(), reason: e.to_string() })?;
        let mut cfg = Self::parse(&text, path)?;
        if let (Some(s3), Some(base)) = (cfg.s3.as_mut(), path.parent())
            && let Some(p) = s3.secret_key_file.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        if let (Some(dag), Some(base)) = (cfg.dag.as_mut(), path.parent()) {
            for p in [&mut dag.ca, &mut dag.cert, &mut dag.key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if let Some(base) = path.parent() {
            for p in cfg.schedules.iter_mut().filter_map(|s| s.password_file.as_mut()) {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            for r in &mut cfg.repositories {
                if r.password_file.is_relative() {
                    r.password_file = base.join(&r.password_file);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    ///
    /// The deserializer's own errors are rebuilt rather than shown as they come: they name
    /// only the innermost field (`missing field `path``, not which database lacks it), and
    /// they quote the offending line of the file, which may hold the API token.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let doc = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            path: origin.into(),
            reason: format!("{}{}", position(text, e.span()), e.message()),
        })?;
        let cfg: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let e = e.into_inner();
            key_error(origin, key, e.message(), position(text, e.span()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The API socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.api.socket.clone().unwrap_or_else(|| self.node.data_dir.join("api.sock"))
    }

    /// The volume with this label.
    pub fn volume(&self, label: &str) -> Option<&VolumeConfig> {
        self.volumes.iter().find(|v| v.label == label)
    }

    /// Checks everything that can be checked without touching the disk.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("node.name", &self.node.name)?;
        if !self.node.data_dir.is_absolute() {
            return Err(invalid("node.data_dir", "must be an absolute path"));
        }
        if self.node.umask_bits().is_none() {
            return Err(invalid("node.umask", "must be an octal mask such as \"077\" or \"027\""));
        }
        if self.api.tcp.is_some() && self.api.token.is_none() && self.api.token_file.is_none() {
            return Err(invalid(
                "api.tcp",
                "listening on TCP needs `api.token` or `api.token_file`",
            ));
        }
        if self.api.token.is_some() && self.api.token_file.is_some() {
            return Err(invalid("api.token", "give either `token` or `token_file`, not both"));
        }
        if let Some(t) = &self.api.token
            && t.len() < 16
        {
            return Err(invalid("api.token", "must be at least 16 characters"));
        }
        let mut labels = HashSet::new();
        let mut roots: Vec<&Path> = Vec::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let key = format!("volume[{i}]");
            check_name(&format!("{key}.label"), &v.label)?;
            if !labels.insert(v.label.as_str()) {
                return Err(invalid(
                    format!("{key}.label"),
                    format!("volume {:?} is defined twice", v.label),
                ));
            }
            if !v.path.is_absolute() {
                return Err(invalid(format!("{key}.path"), "must be an absolute path"));
            }
            if let Some(other) =
                roots.iter().find(|r| v.path.starts_with(r) || r.starts_with(&v.path))
            {
                return Err(invalid(
                    format!("{key}.path"),
                    format!("{} overlaps the volume at {}", v.path.display(), other.display()),
                ));
            }
            roots.push(&v.path);
            if let Some(bs) = &v.block_size {
                match parse_size(bs) {
                    Some(n) if n.is_power_of_two() && (4096..=1 << 20).contains(&n) => {}
                    _ => {
                        return Err(invalid(
                            format!("{key}.block_size"),
                            format!("{bs:?} must be a power of two from 4KiB to 1MiB"),
                        ));
                    }
                }
            }
        }
        let known = |key: String, label: &str| -> Result<(), ConfigError> {
            if labels.contains(label) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("no volume labelled {label:?} (defined: {})", sorted(&labels)),
                ))
            }
        };
        let mut storage_for = HashSet::new();
        for (i, s) in self.shadow_storage.iter().enumerate() {
            let key = format!("shadow_storage[{i}]");
            known(format!("{key}.for"), &s.for_volume)?;
            known(format!("{key}.on"), &s.on)?;
            if !storage_for.insert(s.for_volume.as_str()) {
                return Err(invalid(
                    format!("{key}.for"),
                    format!("volume {:?} already has shadow storage", s.for_volume),
                ));
            }
            match parse_max_size(&s.max_size) {
                Some(MaxSize::Bytes(n)) if n < 1 << 20 => {
                    return Err(invalid(format!("{key}.max_size"), "must be at least 1MiB"));
                }
                Some(_) => {}
                None => {
                    return Err(invalid(
                        format!("{key}.max_size"),
                        format!(
                            "{:?} is not a size (\"2GiB\"), a percentage (\"10%\") or \"UNBOUNDED\"",
                            s.max_size
                        ),
                    ));
                }
            }
        }
        let mut groups = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut checkpoints = HashSet::new();
        let mut databases = HashSet::new();
        for (i, sg) in self.storage_groups.iter().enumerate() {
            let key = format!("storage_group[{i}]");
            check_name(&format!("{key}.name"), &sg.name)?;
            if !groups.insert(sg.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("storage group {:?} is defined twice", sg.name),
                ));
            }
            known(format!("{key}.log_volume"), &sg.log_volume)?;
            check_relative(&format!("{key}.log_dir"), &sg.log_dir)?;
            if let Some(d) = &sg.system_dir {
                check_relative(&format!("{key}.system_dir"), d)?;
            }
            let p = sg.prefix.as_bytes();
            if p.len() != 3 || p[0] != b'E' || !p[1..].iter().all(u8::is_ascii_hexdigit) {
                return Err(invalid(
                    format!("{key}.prefix"),
                    format!("{:?} must be E followed by two hex digits (E00, E01, …)", sg.prefix),
                ));
            }
            if !prefixes.insert((sg.log_volume.as_str(), sg.log_dir.as_path(), sg.prefix.as_str()))
            {
                return Err(invalid(
                    format!("{key}.prefix"),
                    "another storage group writes the same logs (same volume, directory and prefix)",
                ));
            }
            // The checkpoint file (`<prefix>.chk` in the system directory, which defaults
            // to the log directory) must be the storage group's own too.
            let system_dir = sg.system_dir.as_deref().unwrap_or(&sg.log_dir);
            if !checkpoints.insert((sg.log_volume.as_str(), system_dir, sg.prefix.as_str())) {
                return Err(invalid(
                    format!("{key}.system_dir"),
                    format!(
                        "another storage group keeps its checkpoint {}.chk in the same directory",
                        sg.prefix
                    ),
                ));
            }
            if sg.databases.is_empty() {
                return Err(invalid(
                    format!("{key}.database"),
                    "a storage group needs at least one database",
                ));
            }
            for (j, db) in sg.databases.iter().enumerate() {
                let dkey = format!("{key}.database[{j}]");
                check_name(&format!("{dkey}.name"), &db.name)?;
                known(format!("{dkey}.volume"), &db.volume)?;
                check_relative(&format!("{dkey}.path"), &db.path)?;
                if !databases.insert((db.volume.as_str(), db.path.as_path())) {
                    return Err(invalid(
                        format!("{dkey}.path"),
                        "another database uses the same file",
                    ));
                }
            }
        }
        self.validate_schedules()?;
        if let Some(dag) = &self.dag {
            check_name("dag.name", &dag.name)?;
            if dag.etcd.is_empty() {
                return Err(invalid("dag.etcd", "name at least one etcd endpoint"));
            }
            match &dag.copy_volume {
                Some(v) => known("dag.copy_volume".into(), v)?,
                None if self.volumes.is_empty() => {
                    return Err(invalid(
                        "dag.copy_volume",
                        "a DAG member needs a volume for its passive copies",
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Checks the `[[schedule]]` entries on their own (their storage groups are checked
    /// against the node's layout by [`Config::check_schedule_groups`]). Each error names the
    /// schedule as well as the key.
    fn validate_schedules(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let key = |k: &str| format!("schedule[{i}].{k}");
            let bad =
                |k: &str, why: String| invalid(key(k), format!("schedule {:?}: {why}", s.name));
            check_name(&key("name"), &s.name)?;
            if !names.insert(s.name.as_str()) {
                return Err(bad("name", "is defined twice".into()));
            }
            if let Err(e) = parse_cron(&s.cron) {
                return Err(bad("cron", format!("{:?} is not a cron expression: {e}", s.cron)));
            }
            // A directory on the node (absolute: the node's working directory is nobody's
            // business) or an `s3://bucket/prefix` (reached through `[s3]`).
            match backup::repo::RepoLocation::parse(&s.repo.to_string_lossy()) {
                Err(e) => return Err(bad("repo", e.to_string())),
                Ok(backup::repo::RepoLocation::Local(p)) if !p.is_absolute() => {
                    return Err(bad(
                        "repo",
                        format!("{} must be an absolute path or s3://BUCKET/PREFIX", p.display()),
                    ));
                }
                Ok(_) => {}
            }
            match s.action {
                api::ScheduleAction::Backup => {
                    if s.sg.is_none() {
                        return Err(bad("sg", "a backup schedule names its storage group".into()));
                    }
                    if s.backup_type.is_none() {
                        return Err(bad(
                            "type",
                            "a backup schedule needs `type` (full, incremental, differential \
                             or copy)"
                                .into(),
                        ));
                    }
                }
                api::ScheduleAction::Prune => {
                    let given = [
                        ("sg", s.sg.is_some()),
                        ("type", s.backup_type.is_some()),
                        ("from", s.from.is_some()),
                        ("retention", s.retention.is_some()),
                    ];
                    if let Some((k, _)) = given.iter().find(|(_, set)| *set) {
                        return Err(bad(
                            k,
                            "only backup schedules take it (this one prunes)".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that each backup schedule names a storage group of this configuration (call it
    /// on the node's layout, which holds the storage groups created at runtime too). A DAG
    /// member may back up a copy of a storage group defined on another member: not checked.
    pub fn check_schedule_groups(&self) -> Result<(), ConfigError> {
        if self.dag.is_some() {
            return Ok(());
        }
        for (i, s) in self.schedules.iter().enumerate() {
            let Some(sg) = &s.sg else { continue };
            if !self.storage_groups.iter().any(|g| &g.name == sg) {
                let defined: HashSet<&str> =
                    self.storage_groups.iter().map(|g| g.name.as_str()).collect();
                return Err(invalid(
                    format!("schedule[{i}].sg"),
                    format!(
                        "schedule {:?}: no storage group {sg:?} (defined: {})",
                        s.name,
                        sorted(&defined)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The volume that holds this node's passive copies.
    pub fn copy_volume(&self) -> Option<&str> {
        let dag = self.dag.as_ref()?;
        dag.copy_volume.as_deref().or_else(|| self.volumes.first().map(|v| v.label.as_str()))
    }
}

/// `"line L, column C: "` for a byte span of `text`, or nothing without one.
fn position(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(start) = span.map(|s| s.start.min(text.len())) else { return String::new() };
    let before = &text[..text.floor_char_boundary(start)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: ")
}

/// Keys whose values are never shown in an error.
const SECRET_KEYS: &[&str] = &["api.token"];

/// The error for a key the deserializer refused. `key` is where it was (`.` for the top); a
/// missing field is named by the message only (the path stops at the table that lacks it),
/// so it is appended to the key. An unknown field is already the path's last segment.
fn key_error(origin: &Path, key: String, message: &str, at: String) -> ConfigError {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(f, _)| f);
    let key = match (key.as_str(), missing) {
        (".", Some(f)) => f.to_string(),
        (".", None) => "(top level)".to_string(),
        (k, Some(f)) => format!("{k}.{f}"),
        (_, None) => key,
    };
    let reason = if SECRET_KEYS.contains(&key.as_str()) {
        // The deserializer quotes the value ("invalid type: integer `…`"); a token, even a
        // mistyped one, is a secret.
        "must be a string (the value is not shown: it is a secret)".to_string()
    } else {
        message.to_string()
    };
    let at = at.trim_end_matches(": ");
    let at = if at.is_empty() { String::new() } else { format!(" ({at})") };
    ConfigError::Key { path: origin.into(), key, at, reason }
}

fn sorted(set: &HashSet<&str>) -> String {
    let mut v: Vec<&str> = set.iter().copied().collect();
    v.sort();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "mbx1"
data_dir = "/var/lib/shadowcopy"

[[volume]]
label = "logs"
path = "/srv/sc/logs"

[[volume]]
label = "db"
path = "/srv/sc/db"

[[shadow_storage]]
for = "db"
on = "logs"
max_size = "2GiB"

[[storage_group]]
name = "SG1"
log_volume = "logs"
log_dir = "SG1"

[[storage_group.database]]
name = "DB1"
volume = "db"
path = "SG1/DB1.edb"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("test.toml")).unwrap_err().to_string()
    }

    #[test]
    fn a_good_configuration_parses() {
        let c = Config::parse(GOOD, Path::new("t")).unwrap();
        assert_eq!(c.storage_groups[0].prefix, "E00");
        assert_eq!(c.socket_path(), PathBuf::from("/var/lib/shadowcopy/api.sock"));
        assert_eq!(parse_max_size(&c.shadow_storage[0].max_size), Some(MaxSize::Bytes(2 << 30)));
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(&GOOD.replace("volume = \"db\"", "volume = \"dbx\""));
        assert!(e.contains("storage_group[0].database[0].volume") && e.contains("dbx"), "{e}");
        let e = err(&GOOD.replace("max_size = \"2GiB\"", "max_size = \"lots\""));
        assert!(e.contains("shadow_storage[0].max_size"), "{e}");
        let e = err(&GOOD.replace("path = \"/srv/sc/db\"", "path = \"/srv/sc/logs/db\""));
        assert!(e.contains("volume[1].path") && e.contains("overlaps"), "{e}");
        let e = err(&GOOD.replace("log_dir = \"SG1\"", "log_dir = \"../etc\""));
        assert!(e.contains("storage_group[0].log_dir"), "{e}");
        // A second storage group with its own logs but the first one's checkpoint file.
        let second = "\n[[storage_group]]\nname = \"SG2\"\nlog_volume = \"logs\"\nlog_dir = \"SG2\"\nsystem_dir = \"SG1\"\n\n[[storage_group.database]]\nname = \"DB2\"\nvolume = \"db\"\npath = \"SG2/DB2.edb\"\n";
        let e = err(&format!("{GOOD}{second}"));
        assert!(e.contains("storage_group[1].system_dir") && e.contains("E00.chk"), "{e}");
        let other_prefix = second.replace("name = \"SG2\"", "name = \"SG2\"\nprefix = \"E01\"");
        Config::parse(&format!("{GOOD}{other_prefix}"), Path::new("t")).unwrap();
        let e = err(&GOOD.replace("[node]", "[node]\ncolour = \"blue\""));
        assert!(e.contains("colour"), "unknown keys are refused: {e}");
        let e = err(&format!("{GOOD}\n[api]\ntcp = \"127.0.0.1:7070\"\n"));
        assert!(e.contains("api.tcp") && e.contains("token"), "{e}");
        let e = err(&GOOD.replace("name = \"SG1\"", "name = \"SG1\"\nprefix = \"X00\""));
        assert!(e.contains("storage_group[0].prefix"), "{e}");
        let e = err(&GOOD.replace("[node]", "[node]\numask = \"0999\""));
        assert!(e.contains("node.umask"), "{e}");
    }

    #[test]
    fn the_s3_section_is_optional_and_its_secret_file_relative_to_the_configuration() {
        assert_eq!(Config::parse(GOOD, Path::new("t")).unwrap().s3, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let s3 = "\n[s3]\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\naccess_key_id = \"AK\"\nsecret_key_file = \"s3.key\"\nallow_http = true\n";
        std::fs::write(&path, format!("{GOOD}{s3}")).unwrap();
        let c = Config::load(&path).unwrap().s3.unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.secret_key_file, Some(dir.path().join("s3.key")));
        assert_eq!(c.allow_http, Some(true));
        let e = err(&format!("{GOOD}\n[s3]\nsecret_key = \"x\"\n"));
        assert!(e.contains("secret_key"), "only a file holds the secret: {e}");
    }

    #[test]
    fn the_sample_is_a_valid_configuration_with_every_key() {
        let c = Config::parse(SAMPLE, Path::new("sample.toml")).unwrap();
        assert!(c.volumes.iter().all(|v| v.create));
        assert_eq!(c.schedules.len(), 3);
        c.check_schedule_groups().unwrap();
        for key in [
            "umask",
            "socket",
            "tcp",
            "token_file",
            "block_size",
            "provider",
            "system_dir",
            "prefix",
            "cron",
            "timezone",
            "action",
            "from",
            "password_file",
            "keep_daily",
            "secret_key_file",
        ] {
            assert!(SAMPLE.contains(&format!("{key} =")), "the sample lacks {key}");
        }
    }

    #[test]
    fn a_volume_names_its_provider() {
        let text = GOOD.replacen("[[volume]]\n", "[[volume]]\nprovider = \"auto\"\n", 1);
        assert_ne!(text, GOOD, "the test edits the first volume");
        let c = Config::parse(&text, Path::new("t")).unwrap();
        assert_eq!(c.volumes[0].provider, VolumeProvider::Auto);
        assert_eq!(c.volumes[1].provider, VolumeProvider::Software);
        let bad = GOOD.replacen("[[volume]]\n", "[[volume]]\nprovider = \"zfs\"\n", 1);
        assert!(Config::parse(&bad, Path::new("t")).is_err());
    }

    const SCHEDULE: &str = "\n[[schedule]]\nname = \"nightly\"\ncron = \"0 2 * * *\"\nsg = \"SG1\"\ntype = \"full\"\nrepo = \"/srv/backups\"\n";

    #[test]
    fn schedules_parse_with_their_defaults() {
        let text = format!("{GOOD}{SCHEDULE}\n[schedule.retention]\nkeep_last = 3\n");
        let c = Config::parse(&text, Path::new("t")).unwrap();
        let s = &c.schedules[0];
        assert_eq!(s.action, api::ScheduleAction::Backup);
        assert_eq!(s.timezone, ScheduleZone::Local);
        assert_eq!(s.backup_type, Some(api::BackupType::Full));
        assert_eq!(s.retention.as_ref().and_then(|r| r.keep_last), Some(3));
        c.check_schedule_groups().unwrap();
        // Seconds are optional: six fields parse too.
        let six = SCHEDULE.replace("0 2 * * *", "30 0 2 * * *");
        Config::parse(&format!("{GOOD}{six}"), Path::new("t")).unwrap();
    }

    #[test]
    fn schedule_errors_name_the_schedule_and_the_key() {
        let e = err(&format!("{GOOD}{}", SCHEDULE.replace("0 2 * * *", "0 25 * * *")));
        assert!(e.contains("schedule[0].cron") && e.contains("\"nightly\""), "{e}");
        assert!(e.contains("0 25 * * *"), "{e}");
        let e = err(&format!("{GOOD}{}", SCHEDULE.replace("/srv/backups", "backups")));
        assert!(
            e.contains("schedule[0].repo") && e.contains("\"nightly\"") && e.contains("absolute"),
            "{e}"
        );
        // An S3 repository is a repository too; another scheme is a typo, refused by name.
        Config::parse(
            &format!("{GOOD}{}", SCHEDULE.replace("/srv/backups", "s3://mail/nightly")),
            Path::new("t"),
        )
        .unwrap();
        let e = err(&format!("{GOOD}{}", SCHEDULE.replace("/srv/backups", "gs://mail/nightly")));
        assert!(e.contains("schedule[0].repo") && e.contains("gs://mail/nightly"), "{e}");
        let e = err(&format!("{GOOD}{}", SCHEDULE.replace("type = \"full\"\n", "")));
        assert!(e.contains("schedule[0].type") && e.contains("\"nightly\""), "{e}");
        let e = err(&format!("{GOOD}{SCHEDULE}{SCHEDULE}"));
        assert!(e.contains("schedule[1].name") && e.contains("twice"), "{e}");
        let e = err(&format!(
            "{GOOD}{}",
            SCHEDULE.replace("name = \"nightly\"", "name = \"p\"\naction = \"prune\"")
        ));
        assert!(e.contains("schedule[0].sg") && e.contains("only backup schedules"), "{e}");
        let e = err(&format!("{GOOD}{}", SCHEDULE.replace("type = \"full\"", "type = \"fulll\"")));
        assert!(e.contains("schedule[0].type"), "{e}");
        // The storage group is checked against the node's layout.
        let c = Config::parse(
            &format!("{GOOD}{}", SCHEDULE.replace("\"SG1\"", "\"SG9\"")),
            Path::new("t"),
        )
        .unwrap();
        let e = c.check_schedule_groups().unwrap_err().to_string();
        assert!(
            e.contains("schedule[0].sg") && e.contains("\"nightly\"") && e.contains("SG9"),
            "{e}"
        );
        assert!(e.contains("defined: SG1"), "{e}");
    }

    #[test]
    fn repository_password_files_are_read_relative_to_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let extra = "\n[[repository]]\npath = \"/srv/b\"\npassword_file = \"b.pass\"\n\n[[repository]]\npath = \"/srv/c\"\npassword_file = \"/etc/c.pass\"\n";
        std::fs::write(&path, format!("{GOOD}{extra}")).unwrap();
        let c = Config::load(&path).unwrap();
        let got: Vec<(PathBuf, PathBuf)> =
            c.repositories.iter().map(|r| (r.path.clone(), r.password_file.clone())).collect();
        assert_eq!(
            got,
            [
                (PathBuf::from("/srv/b"), dir.path().join("b.pass")),
                (PathBuf::from("/srv/c"), PathBuf::from("/etc/c.pass"))
            ]
        );
        let e = err(&format!("{GOOD}\n[[repository]]\npath = \"/srv/b\"\n"));
        assert!(e.contains("repository[0].password_file"), "{e}");
    }

    #[test]
    fn data_files_are_owner_only_unless_the_configuration_says_otherwise() {
        let c = Config::parse(GOOD, Path::new("t")).unwrap();
        assert_eq!(c.node.umask_bits(), Some(0o077));
        let c = Config::parse(&GOOD.replace("[node]", "[node]\numask = \"027\""), Path::new("t"))
            .unwrap();
        assert_eq!(c.node.umask_bits(), Some(0o027));
    }

    #[test]
    fn deserializer_errors_name_the_full_key_path() {
        let e = err(&GOOD.replace("path = \"SG1/DB1.edb\"", ""));
        assert!(e.contains("`storage_group[0].database[0].path`"), "{e}");
        assert!(e.contains("missing field"), "{e}");
        let e = err(&GOOD.replace("max_size = \"2GiB\"", "max_size = 2"));
        assert!(e.contains("`shadow_storage[0].max_size`") && e.contains("invalid type"), "{e}");
        let e = err(&GOOD.replace("log_dir = \"SG1\"", "log_dir = \"SG1\"\nlogdir = \"x\""));
        assert!(e.contains("`storage_group[0].logdir`") && e.contains("unknown field"), "{e}");
        let e = err(&GOOD.replace("name = \"mbx1\"\n", ""));
        assert!(e.contains("`node.name`"), "{e}");
        let e = err("");
        assert!(e.contains("`node`") && e.contains("missing field"), "{e}");
        // Where: the line of the offending value.
        let e = err(&GOOD.replace("max_size = \"2GiB\"", "max_size = 2"));
        let line = GOOD.lines().position(|l| l.starts_with("max_size")).unwrap() + 1;
        assert!(e.contains(&format!("line {line},")), "{e}");
    }

    #[test]
    fn syntax_errors_say_where_without_quoting_the_file() {
        let e = err(&GOOD.replace("name = \"SG1\"", "name = \"SG1"));
        let line = GOOD.lines().position(|l| l.starts_with("name = \"SG1\"")).unwrap() + 1;
        assert!(e.starts_with("test.toml: ") && e.contains(&format!("line {line},")), "{e}");
        assert!(!e.contains('|') && !e.contains('^'), "no source excerpt: {e}");
    }

    #[test]
    fn a_mistyped_or_malformed_token_is_never_echoed() {
        const SECRET: &str = "9f8e7d6c5b4a39281706";
        for bad in [
            format!("token = {SECRET}"),
            format!("token = [\"{SECRET}\"]"),
            format!("token = {{ value = \"{SECRET}\" }}"),
            format!("token = \"{SECRET}"),
            format!("token = {SECRET}x"),
            format!("token = \"{SECRET}\"\ntoken = \"{SECRET}\""),
        ] {
            let e = err(&format!("{GOOD}\n[api]\ntcp = \"127.0.0.1:7070\"\n{bad}\n"));
            assert!(!e.contains(SECRET), "the token leaked for {bad:?}: {e}");
            assert!(!e.contains("9f8e7d"), "part of the token leaked for {bad:?}: {e}");
        }
        // A token of digits only is valid TOML: an integer, which serde would quote.
        const DIGITS: &str = "918273645546372819";
        let e = err(&format!("{GOOD}\n[api]\ntcp = \"127.0.0.1:7070\"\ntoken = {DIGITS}\n"));
        assert!(!e.contains(DIGITS), "{e}");
        assert!(e.contains("`api.token`") && e.contains("must be a string"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB"), Some(16384));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_max_size("10%"), Some(MaxSize::Percent(10)));
        assert_eq!(parse_max_size("150%"), None);
        assert_eq!(parse_max_size("unbounded"), Some(MaxSize::Unbounded));
    }
}
