//! How an instance is configured: where its logs, checkpoint and databases are, sizes,
//! timeouts, and the log configuration derived from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use volume::FsRef;

use crate::backup::EngineNotice;
use crate::error::{EngineError, Result};
use crate::log::LogConfig;
use crate::logfmt::{self};
use crate::page::{self};

/// Receives the engine's notices (backup steps, truncation decisions).
pub type NoticeSink = Arc<dyn Fn(&EngineNotice) + Send + Sync>;

/// What holds log truncation back besides the backup and the checkpoint: a database copy on
/// another node that has not replayed every generation yet. Returns the lowest generation that
/// must stay on disk and why ("copy SG1 on b has replayed only to 0x3A"), or `None` when
/// nothing outside the engine limits truncation. Asked at each truncation, so the answer is
/// current.
pub type TruncationLimitFn = Arc<dyn Fn() -> Option<(u32, String)> + Send + Sync>;

/// How to create or open an instance.
#[derive(Clone)]
pub struct InstanceConfig {
    /// File system and directory of the transaction logs.
    pub log_fs: FsRef,
    pub log_dir: PathBuf,
    /// File system and directory of the checkpoint file.
    pub system_fs: FsRef,
    pub system_dir: PathBuf,
    /// Log prefix: `E00`, `E01`, ...
    pub prefix: String,
    /// Size of each log generation (64 KiB–32 MiB, 1 MiB by default).
    pub log_file_size: u32,
    /// Database page size (4–32 KiB, 32 KiB by default).
    pub page_size: usize,
    /// Buffer cache size in pages.
    pub cache_pages: usize,
    /// Reuse logs once the checkpoint passed them; only full and copy backups are then allowed.
    pub circular_logging: bool,
    /// How long a snapshot freeze may last before the watchdog thaws it (70 s by default).
    pub freeze_timeout: Duration,
    /// How often the lazy writer flushes lazy commits and checks the checkpoint.
    pub lazy_interval: Duration,
    /// Where notices go.
    pub notice: Option<NoticeSink>,
    /// Database copies that still need generations (see [`TruncationLimitFn`]).
    pub truncation_limit: Option<TruncationLimitFn>,
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConfig")
            .field("log_dir", &self.log_dir)
            .field("system_dir", &self.system_dir)
            .field("prefix", &self.prefix)
            .field("log_file_size", &self.log_file_size)
            .field("page_size", &self.page_size)
            .field("cache_pages", &self.cache_pages)
            .field("circular_logging", &self.circular_logging)
            .field("freeze_timeout", &self.freeze_timeout)
            .finish()
    }
}

impl InstanceConfig {
    /// Defaults: prefix `E00`, 1 MiB logs, 32 KiB pages, 1024 cache pages, no circular
    /// logging, 70 s freeze timeout.
    pub fn new(
        log_fs: FsRef,
        log_dir: impl Into<PathBuf>,
        system_fs: FsRef,
        system_dir: impl Into<PathBuf>,
    ) -> Self {
        InstanceConfig {
            log_fs,
            log_dir: log_dir.into(),
            system_fs,
            system_dir: system_dir.into(),
            prefix: "E00".into(),
            log_file_size: logfmt::DEFAULT_LOG_FILE_SIZE,
            page_size: page::DEFAULT_PAGE_SIZE,
            cache_pages: 1024,
            circular_logging: false,
            freeze_timeout: Duration::from_secs(70),
            lazy_interval: Duration::from_millis(50),
            notice: None,
            truncation_limit: None,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if !(64 * 1024..=32 * 1024 * 1024).contains(&self.log_file_size) {
            return Err(EngineError::Config(format!(
                "log file size {} is outside 64 KiB..32 MiB",
                self.log_file_size
            )));
        }
        if !page::valid_page_size(self.page_size) {
            return Err(EngineError::Config(format!(
                "page size {} is not a power of two in 4..32 KiB",
                self.page_size
            )));
        }
        if self.page_size * 2 + 8192 > self.log_file_size as usize {
            return Err(EngineError::Config("log files must hold two full pages".into()));
        }
        if self.prefix.len() != 3 || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(EngineError::Config(format!(
                "log prefix {:?} must be 3 characters like E00",
                self.prefix
            )));
        }
        Ok(())
    }

    pub(crate) fn checkpoint_path(&self) -> PathBuf {
        self.system_dir.join(logfmt::checkpoint_name(&self.prefix))
    }
}

/// Where a database file is.
#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    pub name: String,
    pub fs: FsRef,
    pub path: PathBuf,
}

impl DatabaseSpec {
    pub fn new(name: impl Into<String>, fs: FsRef, path: impl Into<PathBuf>) -> Self {
        DatabaseSpec { name: name.into(), fs, path: path.into() }
    }
}
pub(super) fn log_config(cfg: &InstanceConfig, signature: [u8; 16]) -> LogConfig {
    LogConfig {
        fs: cfg.log_fs.clone(),
        dir: cfg.log_dir.clone(),
        prefix: cfg.prefix.clone(),
        file_size: cfg.log_file_size,
        signature,
    }
}
