//! Retention: which backup sets a policy keeps, and forgetting the others (`backup forget`).
//!
//! The rules are restic's (`--keep-last`, `--keep-hourly`, … `--keep-yearly`), made aware of
//! chains: a kept incremental or differential keeps the full and every set it builds on (for a
//! differential, the incrementals of its full taken before it, which hold logs it lacks), since
//! without them it cannot be restored. A copy stands alone.
//!
//! Buckets are calendar hours, days, ISO weeks (Monday to Sunday), months and years in UTC:
//! the decision must not change with the time zone of the machine that runs `forget`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::repo::{BackupSet, Repository, Result};
use crate::restore::chain;

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
    /// The rules that keep it (`last`, `daily 2026-11-29`, `weekly 2026-W48`, `needed by
    /// 5d1e0a2b`), empty when it goes.
    pub reasons: Vec<String>,
}

/// The decisions for every set considered, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetPlan {
    pub decisions: Vec<Decision>,
    /// Whether the forgotten sets were removed (false for a dry run).
    pub applied: bool,
}

/// A rule: its name, its count, and how it names the bucket of a set taken at a time.
type Rule = (&'static str, Option<u32>, fn(DateTime<Utc>) -> String);

impl RetentionPolicy {
    /// Whether no rule is used (such a policy keeps everything).
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n, _)| n.unwrap_or(0) == 0)
    }

    /// The rules with their counts, and how each names a set's bucket (`last` names none:
    /// every set is a bucket of its own).
    fn rules(&self) -> [Rule; 6] {
        [
            ("last", self.keep_last, |_| String::new()),
            ("hourly", self.keep_hourly, |t| format!("{}T{:02}", t.date_naive(), t.hour())),
            ("daily", self.keep_daily, |t| t.date_naive().to_string()),
            ("weekly", self.keep_weekly, |t| {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }),
            ("monthly", self.keep_monthly, |t| format!("{:04}-{:02}", t.year(), t.month())),
            ("yearly", self.keep_yearly, |t| format!("{:04}", t.year())),
        ]
    }
}

/// A set's creation time as a UTC calendar date and time. A time past what the calendar
/// holds (year 9999) is taken as its end rather than refused: retention must still decide.
pub fn utc(created_unix_ms: u64) -> DateTime<Utc> {
    i64::try_from(created_unix_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A set's creation time as shown to people: `2026-11-29 14:03:07` (UTC).
pub fn utc_display(created_unix_ms: u64) -> String {
    utc(created_unix_ms).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The short form of a set id that reasons and tables show (as `backup list` accepts).
pub fn id_prefix(id: &Uuid) -> String {
    id.to_string()[..8].to_string()
}

/// Decides which of `sets` `policy` keeps (sets of every storage group: the rules are applied
/// per storage group). Pure: used by `forget`, `--dry-run` and the tests' model.
///
/// Restic's rules: `keep_last` keeps the N newest sets; each calendar rule goes through the
/// sets newest first and keeps a set whenever its bucket differs from the last one the rule
/// kept, until it has kept N: the newest set of each of the N most recent buckets holding a
/// set. Then every kept set keeps what restoring it reads (its chain; see
/// `restore::chain::dependencies`), whatever the rules said about those.
pub fn plan(sets: &[BackupSet], policy: &RetentionPolicy) -> ForgetPlan {
    let mut ordered: Vec<&BackupSet> = sets.iter().collect();
    ordered.sort_by_key(|s| (s.created_unix_ms, s.id));
    let mut reasons: HashMap<Uuid, Vec<String>> = HashMap::new();
    if policy.is_empty() {
        for s in &ordered {
            reasons.entry(s.id).or_default().push("no rule given".into());
        }
    } else {
        let mut groups: BTreeMap<&str, Vec<&BackupSet>> = BTreeMap::new();
        for s in &ordered {
            groups.entry(s.storage_group.as_str()).or_default().push(s);
        }
        for group in groups.values() {
            for (name, n, bucket) in policy.rules() {
                let mut left = n.unwrap_or(0);
                let mut last: Option<String> = None;
                for s in group.iter().rev() {
                    if left == 0 {
                        break;
                    }
                    let b = bucket(utc(s.created_unix_ms));
                    // `last` names no bucket: each set is one of its own.
                    if b.is_empty() || last.as_ref() != Some(&b) {
                        let why =
                            if b.is_empty() { name.to_string() } else { format!("{name} {b}") };
                        reasons.entry(s.id).or_default().push(why);
                        last = Some(b);
                        left -= 1;
                    }
                }
            }
        }
        // What the kept sets need, and what those need in turn (a worklist, so that the
        // closure holds even where a damaged chain was only partly found).
        let mut work: Vec<Uuid> =
            ordered.iter().map(|s| s.id).filter(|id| reasons.contains_key(id)).collect();
        let by_id: HashMap<Uuid, &BackupSet> = sets.iter().map(|s| (s.id, s)).collect();
        let mut done = std::collections::HashSet::new();
        while let Some(id) = work.pop() {
            if !done.insert(id) {
                continue;
            }
            let Some(set) = by_id.get(&id) else { continue };
            for dep in chain::dependencies(set, sets) {
                reasons.entry(dep).or_default().push(format!("needed by {}", id_prefix(&id)));
                work.push(dep);
            }
        }
    }
    ForgetPlan {
        decisions: ordered
            .iter()
            .map(|s| {
                let reasons = reasons.remove(&s.id).unwrap_or_default();
                Decision {
                    set: s.id,
                    storage_group: s.storage_group.clone(),
                    created_unix_ms: s.created_unix_ms,
                    backup_type: s.backup_type.to_string(),
                    keep: !reasons.is_empty(),
                    reasons,
                }
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
    // A dry run only reads; a real one must not meet a backup publishing a set it would
    // judge, nor a prune.
    let _lock = if dry_run {
        repo.lock_shared("forget --dry-run")?
    } else {
        repo.lock_exclusive("forget")?
    };
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
