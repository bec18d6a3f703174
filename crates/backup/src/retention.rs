//! Retention: which backup sets a policy keeps, and forgetting the others (`backup forget`).
//!
//! The rules are restic's (`--keep-last`, `--keep-hourly`, … `--keep-yearly`), made aware of
//! chains: a kept incremental or differential keeps the full and every set it builds on, since
//! without them it cannot be restored.
//!
//! STUB: the types and signatures are fixed; the rules are being written.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::repo::{BackupSet, Repository, Result};

/// How many sets to keep in each time bucket. `None` (or 0) means the rule is not used. A
/// policy with no rule keeps everything (forgetting everything is never what a typo means).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub keep_yearly: Option<u32>,
}

/// What the policy decided for one set, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub set: Uuid,
    pub storage_group: String,
    pub created_unix_ms: u64,
    /// `full`, `incremental`, `differential` or `copy`.
    pub backup_type: String,
    pub keep: bool,
    /// The rules that keep it (`last 1`, `daily 3`, `base of 5d1e…`), empty when it goes.
    pub reasons: Vec<String>,
}

/// The decisions for every set considered, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetPlan {
    pub decisions: Vec<Decision>,
    /// Whether the forgotten sets were removed (false for a dry run).
    pub applied: bool,
}

/// Decides which of `sets` `policy` keeps (sets of every storage group: the rules are applied
/// per storage group). Pure: used by `forget`, `--dry-run` and the tests' model.
pub fn plan(sets: &[BackupSet], policy: &RetentionPolicy) -> ForgetPlan {
    let _ = policy;
    ForgetPlan {
        decisions: sets
            .iter()
            .map(|s| Decision {
                set: s.id,
                storage_group: s.storage_group.clone(),
                created_unix_ms: s.created_unix_ms,
                backup_type: s.backup_type.to_string(),
                keep: true,
                reasons: vec!["stub".into()],
            })
            .collect(),
        applied: false,
    }
}

/// Applies `policy` to the sets of storage group `sg` (all when `None`) and, unless `dry_run`,
/// removes the sets it does not keep. Chunks stay until `prune`.
pub fn forget(
    repo: &Repository,
    sg: Option<&str>,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<ForgetPlan> {
    let sets: Vec<BackupSet> = repo
        .list_sets()?
        .into_iter()
        .filter(|s| sg.is_none_or(|sg| s.storage_group == sg))
        .collect();
    let mut p = plan(&sets, policy);
    if !dry_run {
        for d in p.decisions.iter().filter(|d| !d.keep) {
            repo.remove_set(&d.set)?;
        }
        p.applied = true;
    }
    Ok(p)
}
