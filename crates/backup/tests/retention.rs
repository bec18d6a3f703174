//! Retention (`backup forget`): the edge cases of restic's rules, chains kept whole, and a
//! property test of `plan` against a simple model of the rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap, HashSet};

use backup::repo::{BackupSet, InitOptions, MANIFEST_FORMAT, Repository, SetMeta};
use backup::retention::{Decision, ForgetPlan, RetentionPolicy, forget, plan};
use proptest::prelude::*;
use uuid::Uuid;
use volume::mem::MemFs;
use vss::BackupType;

/// Milliseconds since the Unix epoch of a UTC time.
fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    use chrono::TimeZone;
    let t = chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap();
    u64::try_from(t.timestamp_millis()).unwrap()
}

fn set(
    n: u128,
    sg: &str,
    created_unix_ms: u64,
    backup_type: BackupType,
    base: Option<&BackupSet>,
) -> BackupSet {
    BackupSet {
        format: MANIFEST_FORMAT,
        id: Uuid::from_u128(n),
        created_unix_ms,
        node: "n1".into(),
        backup_type,
        storage_group: sg.into(),
        job_id: None,
        base_set: base.map(|b| b.id),
        log_range: None,
        writer_metadata: serde_json::Value::Null,
        components: serde_json::Value::Null,
        database_headers: serde_json::Value::Null,
        files: Vec::new(),
    }
}

fn decision<'p>(p: &'p ForgetPlan, s: &BackupSet) -> &'p Decision {
    p.decisions.iter().find(|d| d.set == s.id).expect("a decision for every set")
}

fn kept(p: &ForgetPlan) -> BTreeSet<Uuid> {
    p.decisions.iter().filter(|d| d.keep).map(|d| d.set).collect()
}

fn prefix(s: &BackupSet) -> String {
    s.id.to_string()[..8].to_string()
}

#[test]
fn the_newest_set_of_a_bucket_is_the_one_kept() {
    let a = set(1, "SG1", at(2026, 11, 29, 1, 0), BackupType::Full, None);
    let b = set(2, "SG1", at(2026, 11, 29, 12, 0), BackupType::Full, None);
    let c = set(3, "SG1", at(2026, 11, 29, 23, 59), BackupType::Full, None);
    let p = plan(
        &[a.clone(), b.clone(), c.clone()],
        &RetentionPolicy { keep_daily: Some(1), ..Default::default() },
    );
    assert_eq!(kept(&p), BTreeSet::from([c.id]));
    assert_eq!(decision(&p, &c).reasons, vec!["daily 2026-11-29".to_string()]);
    assert!(decision(&p, &a).reasons.is_empty() && !decision(&p, &a).keep);
    assert!(!decision(&p, &b).keep);
    assert!(!p.applied);
}

#[test]
fn buckets_without_a_set_do_not_count() {
    // Two sets a month apart: --keep-daily 2 keeps both (the days between hold none).
    let a = set(1, "SG1", at(2026, 10, 1, 8, 0), BackupType::Full, None);
    let b = set(2, "SG1", at(2026, 11, 1, 8, 0), BackupType::Full, None);
    let p = plan(
        &[a.clone(), b.clone()],
        &RetentionPolicy { keep_daily: Some(2), ..Default::default() },
    );
    assert_eq!(kept(&p), BTreeSet::from([a.id, b.id]));
}

#[test]
fn iso_weeks_run_monday_to_sunday_and_across_the_new_year() {
    let sun = set(1, "SG1", at(2026, 11, 29, 10, 0), BackupType::Full, None);
    let mon = set(2, "SG1", at(2026, 11, 30, 10, 0), BackupType::Full, None);
    // 2026-12-31 is a Thursday and 2027-01-01 a Friday: both in week 53 of 2026.
    let thu = set(3, "SG1", at(2026, 12, 31, 10, 0), BackupType::Full, None);
    let fri = set(4, "SG1", at(2027, 1, 1, 10, 0), BackupType::Full, None);
    let sets = [sun.clone(), mon.clone(), thu.clone(), fri.clone()];
    let p = plan(&sets, &RetentionPolicy { keep_weekly: Some(3), ..Default::default() });
    assert_eq!(kept(&p), BTreeSet::from([sun.id, mon.id, fri.id]));
    assert_eq!(decision(&p, &fri).reasons, vec!["weekly 2026-W53".to_string()]);
    assert_eq!(decision(&p, &sun).reasons, vec!["weekly 2026-W48".to_string()]);
    let p = plan(&sets, &RetentionPolicy { keep_yearly: Some(1), ..Default::default() });
    assert_eq!(kept(&p), BTreeSet::from([fri.id]));
    assert_eq!(decision(&p, &fri).reasons, vec!["yearly 2027".to_string()]);
}

#[test]
fn a_set_kept_by_several_rules_lists_each() {
    let a = set(1, "SG1", at(2026, 11, 28, 10, 0), BackupType::Full, None);
    let b = set(2, "SG1", at(2026, 11, 29, 10, 0), BackupType::Full, None);
    let p = plan(
        &[a.clone(), b.clone()],
        &RetentionPolicy {
            keep_last: Some(1),
            keep_hourly: Some(1),
            keep_monthly: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(kept(&p), BTreeSet::from([b.id]));
    assert_eq!(
        decision(&p, &b).reasons,
        vec!["last".to_string(), "hourly 2026-11-29T10".into(), "monthly 2026-11".into()]
    );
}

#[test]
fn a_policy_without_a_rule_keeps_everything() {
    let a = set(1, "SG1", at(2026, 11, 28, 10, 0), BackupType::Full, None);
    let b = set(2, "SG2", at(2026, 11, 29, 10, 0), BackupType::Copy, None);
    for policy in [
        RetentionPolicy::default(),
        RetentionPolicy { keep_last: Some(0), keep_daily: Some(0), ..Default::default() },
    ] {
        assert!(policy.is_empty());
        let p = plan(&[a.clone(), b.clone()], &policy);
        assert!(p.decisions.iter().all(|d| d.keep && d.reasons == ["no rule given"]), "{p:?}");
    }
    assert!(!RetentionPolicy { keep_yearly: Some(1), ..Default::default() }.is_empty());
    assert!(
        plan(&[], &RetentionPolicy { keep_last: Some(3), ..Default::default() })
            .decisions
            .is_empty()
    );
}

#[test]
fn rules_apply_to_each_storage_group_on_its_own() {
    let a1 = set(1, "SG1", at(2026, 11, 1, 10, 0), BackupType::Full, None);
    let a2 = set(2, "SG1", at(2026, 11, 2, 10, 0), BackupType::Full, None);
    let b1 = set(3, "SG2", at(2026, 11, 3, 10, 0), BackupType::Full, None);
    let b2 = set(4, "SG2", at(2026, 11, 4, 10, 0), BackupType::Full, None);
    let p = plan(
        &[b2.clone(), a1.clone(), b1.clone(), a2.clone()],
        &RetentionPolicy { keep_last: Some(1), ..Default::default() },
    );
    assert_eq!(kept(&p), BTreeSet::from([a2.id, b2.id]));
    // Oldest first, whatever order the sets came in.
    let order: Vec<Uuid> = p.decisions.iter().map(|d| d.set).collect();
    assert_eq!(order, vec![a1.id, a2.id, b1.id, b2.id]);
}

#[test]
fn a_copy_set_stands_alone() {
    let full = set(1, "SG1", at(2026, 11, 1, 10, 0), BackupType::Full, None);
    let copy = set(2, "SG1", at(2026, 11, 2, 10, 0), BackupType::Copy, None);
    let p = plan(
        &[full.clone(), copy.clone()],
        &RetentionPolicy { keep_last: Some(1), ..Default::default() },
    );
    assert_eq!(kept(&p), BTreeSet::from([copy.id]));
    assert_eq!(decision(&p, &copy).reasons, vec!["last".to_string()]);
}

#[test]
fn a_kept_incremental_keeps_its_full_and_the_sets_between() {
    let full = set(1, "SG1", at(2026, 11, 1, 10, 0), BackupType::Full, None);
    let i1 = set(2, "SG1", at(2026, 11, 2, 10, 0), BackupType::Incremental, Some(&full));
    let i2 = set(3, "SG1", at(2026, 11, 3, 10, 0), BackupType::Incremental, Some(&i1));
    let p = plan(
        &[full.clone(), i1.clone(), i2.clone()],
        &RetentionPolicy { keep_last: Some(1), ..Default::default() },
    );
    assert_eq!(kept(&p), BTreeSet::from([full.id, i1.id, i2.id]));
    let needed = format!("needed by {}", prefix(&i2));
    assert_eq!(decision(&p, &i1).reasons, vec![needed.clone()]);
    assert!(decision(&p, &full).reasons.contains(&needed), "{p:?}");
}

#[test]
fn a_kept_differential_keeps_its_full_and_the_incrementals_before_it() {
    // The incremental truncated the logs it holds: the differential after it lacks them.
    let old = set(1, "SG1", at(2026, 10, 1, 10, 0), BackupType::Full, None);
    let full = set(2, "SG1", at(2026, 11, 1, 10, 0), BackupType::Full, None);
    let inc = set(3, "SG1", at(2026, 11, 2, 10, 0), BackupType::Incremental, Some(&full));
    let diff = set(4, "SG1", at(2026, 11, 3, 10, 0), BackupType::Differential, Some(&full));
    let later = set(5, "SG1", at(2026, 11, 4, 10, 0), BackupType::Incremental, Some(&inc));
    let sets = [old.clone(), full.clone(), inc.clone(), diff.clone(), later.clone()];
    let p = plan(&sets, &RetentionPolicy { keep_daily: Some(1), ..Default::default() });
    // The newest day keeps `later`, and its chain: full, inc. Not the differential.
    assert_eq!(kept(&p), BTreeSet::from([full.id, inc.id, later.id]));
    let policy = RetentionPolicy { keep_daily: Some(2), ..Default::default() };
    let p = plan(&sets, &policy);
    assert_eq!(kept(&p), BTreeSet::from([full.id, inc.id, diff.id, later.id]));
    assert!(decision(&p, &inc).reasons.contains(&format!("needed by {}", prefix(&diff))));
    // Without the later incremental, the differential still keeps the one before it.
    let p = plan(&sets[..4], &RetentionPolicy { keep_last: Some(1), ..Default::default() });
    assert_eq!(kept(&p), BTreeSet::from([full.id, inc.id, diff.id]));
}

#[test]
fn a_broken_chain_keeps_what_was_found() {
    let full = set(1, "SG1", at(2026, 11, 1, 10, 0), BackupType::Full, None);
    let i1 = set(2, "SG1", at(2026, 11, 2, 10, 0), BackupType::Incremental, Some(&full));
    let i2 = set(3, "SG1", at(2026, 11, 3, 10, 0), BackupType::Incremental, Some(&i1));
    // i1's base is gone from the list: i2 still keeps i1.
    let p = plan(
        &[i1.clone(), i2.clone()],
        &RetentionPolicy { keep_last: Some(1), ..Default::default() },
    );
    assert_eq!(kept(&p), BTreeSet::from([i1.id, i2.id]));
}

// ---------------------------------------------------------------------------------------
// The property: `plan` agrees with a simple model of the rules.

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// One generated set: its kind, the gap after the previous set of its group, its group.
#[derive(Debug, Clone)]
struct Step {
    sg: usize,
    kind: u8,
    gap: u64,
}

fn step() -> impl Strategy<Value = Step> {
    let gap = prop_oneof![
        Just(0u64),
        1u64..60_000,
        HOUR / 2..2 * HOUR,
        DAY / 2..2 * DAY,
        5 * DAY..9 * DAY,
        25 * DAY..40 * DAY,
        300 * DAY..400 * DAY,
    ];
    (0usize..2, 0u8..4, gap).prop_map(|(sg, kind, gap)| Step { sg, kind, gap })
}

fn policy() -> impl Strategy<Value = RetentionPolicy> {
    let n = || prop_oneof![2 => Just(None), 1 => Just(Some(0)), 4 => (1u32..5).prop_map(Some)];
    (n(), n(), n(), n(), n(), n()).prop_map(|(l, h, d, w, m, y)| RetentionPolicy {
        keep_last: l,
        keep_hourly: h,
        keep_daily: d,
        keep_weekly: w,
        keep_monthly: m,
        keep_yearly: y,
    })
}

/// Sets as a backup schedule makes them, oldest first per group: fulls, copies,
/// incrementals on the last full or incremental, differentials on the last full. The
/// second value is what each set needs, as the generator knows it.
fn history(steps: &[Step], start: u64) -> (Vec<BackupSet>, HashMap<Uuid, BTreeSet<Uuid>>) {
    let mut sets: Vec<BackupSet> = Vec::new();
    let mut needs: HashMap<Uuid, BTreeSet<Uuid>> = HashMap::new();
    // Per group: time, last full, last full-or-incremental since it, incrementals of it.
    let mut clock = [start; 2];
    let mut full: [Option<usize>; 2] = [None; 2];
    let mut tip: [Option<usize>; 2] = [None; 2];
    let mut incs: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (i, st) in steps.iter().enumerate() {
        let g = st.sg;
        clock[g] += st.gap;
        let sg = ["SG1", "SG2"][g];
        let kind = match (st.kind, full[g]) {
            (0, _) | (1 | 2, None) => BackupType::Full,
            (1, Some(_)) => BackupType::Incremental,
            (2, Some(_)) => BackupType::Differential,
            _ => BackupType::Copy,
        };
        let base = match kind {
            BackupType::Incremental => tip[g],
            BackupType::Differential => full[g],
            _ => None,
        };
        let s = set(i as u128 + 1, sg, clock[g], kind, base.map(|b| &sets[b]));
        let mut need = BTreeSet::new();
        match kind {
            BackupType::Full => {
                full[g] = Some(i);
                tip[g] = Some(i);
                incs[g].clear();
            }
            BackupType::Incremental => {
                let b = &sets[tip[g].unwrap()];
                need.insert(b.id);
                need.extend(needs[&b.id].iter().copied());
                tip[g] = Some(i);
                incs[g].push(i);
            }
            BackupType::Differential => {
                need.insert(sets[full[g].unwrap()].id);
                for &j in &incs[g] {
                    need.insert(sets[j].id);
                }
            }
            _ => {}
        }
        needs.insert(s.id, need);
        sets.push(s);
    }
    (sets, needs)
}

/// The rules as stated: per group, the N newest sets; per rule, the newest set of each of
/// the N most recent buckets holding one; then what those need. Buckets by plain
/// arithmetic where it is plain (Unix time has no leap seconds; 1970-01-01 was a Thursday).
fn model(
    sets: &[BackupSet],
    needs: &HashMap<Uuid, BTreeSet<Uuid>>,
    p: &RetentionPolicy,
) -> BTreeSet<Uuid> {
    let rules = [p.keep_hourly, p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_yearly];
    if p.keep_last.unwrap_or(0) == 0 && rules.iter().all(|n| n.unwrap_or(0) == 0) {
        return sets.iter().map(|s| s.id).collect();
    }
    let month = |ms: u64| {
        use chrono::Datelike;
        let d = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap();
        i64::from(d.year()) * 12 + i64::from(d.month()) - 1
    };
    let buckets: [&dyn Fn(u64) -> i64; 5] = [
        &|ms| (ms / HOUR) as i64,
        &|ms| (ms / DAY) as i64,
        &|ms| ((ms / DAY + 3) / 7) as i64,
        &month,
        &|ms| month(ms).div_euclid(12),
    ];
    let mut keep = BTreeSet::new();
    for sg in ["SG1", "SG2"] {
        let mut group: Vec<&BackupSet> = sets.iter().filter(|s| s.storage_group == sg).collect();
        group.sort_by_key(|s| (s.created_unix_ms, s.id));
        let last = p.keep_last.unwrap_or(0) as usize;
        keep.extend(group.iter().rev().take(last).map(|s| s.id));
        for (n, bucket) in rules.iter().zip(buckets) {
            let n = n.unwrap_or(0) as usize;
            let distinct: BTreeSet<i64> = group.iter().map(|s| bucket(s.created_unix_ms)).collect();
            for b in distinct.iter().rev().take(n) {
                let newest = group
                    .iter()
                    .filter(|s| bucket(s.created_unix_ms) == *b)
                    .max_by_key(|s| (s.created_unix_ms, s.id))
                    .unwrap();
                keep.insert(newest.id);
            }
        }
    }
    // The differential's needs in the model are the incrementals generated before it;
    // `plan` goes by time, so incrementals taken in the same millisecond count too.
    let mut extra: HashMap<Uuid, BTreeSet<Uuid>> = HashMap::new();
    for s in sets.iter().filter(|s| s.backup_type == BackupType::Differential) {
        let full = s.base_set.unwrap();
        for i in sets.iter().filter(|i| i.backup_type == BackupType::Incremental) {
            if i.created_unix_ms <= s.created_unix_ms && needs[&i.id].contains(&full) {
                extra.entry(s.id).or_default().insert(i.id);
                extra.entry(s.id).or_default().extend(needs[&i.id].iter().copied());
            }
        }
    }
    let direct: Vec<Uuid> = keep.iter().copied().collect();
    for id in direct {
        keep.extend(needs[&id].iter().copied());
        keep.extend(extra.get(&id).into_iter().flatten().copied());
    }
    keep
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn plan_agrees_with_the_model(
        steps in prop::collection::vec(step(), 0..30),
        start in 1_600_000_000_000u64..1_900_000_000_000,
        policy in policy(),
    ) {
        let (sets, needs) = history(&steps, start);
        let p = plan(&sets, &policy);
        prop_assert_eq!(p.decisions.len(), sets.len());
        prop_assert!(p.decisions.windows(2).all(|w| (w[0].created_unix_ms, w[0].set) <= (w[1].created_unix_ms, w[1].set)));
        // A set is kept exactly when something keeps it.
        prop_assert!(p.decisions.iter().all(|d| d.reasons.is_empty() != d.keep));
        prop_assert_eq!(kept(&p), model(&sets, &needs, &policy));
        // Nothing a kept set needs is forgotten.
        let keep = kept(&p);
        for id in &keep {
            for need in &needs[id] {
                prop_assert!(keep.contains(need), "{} is kept, {} it needs is not", id, need);
            }
        }
    }
}

/// A repository in memory holding `sets`' histories (as manifests published through the
/// writer, their times set afterwards), with each generated id mapped to the published one.
fn repository(sets: &[BackupSet]) -> (Repository, HashMap<Uuid, Uuid>) {
    let fs = MemFs::new();
    let repo = Repository::init(fs.as_ref(), "repo", InitOptions::default()).unwrap();
    let mut ids: HashMap<Uuid, Uuid> = HashMap::new();
    for s in sets {
        let meta = SetMeta {
            node: s.node.clone(),
            backup_type: s.backup_type,
            storage_group: s.storage_group.clone(),
            base_set: s.base_set.map(|b| ids[&b]),
            ..SetMeta::default()
        };
        let mut published = repo.begin_set().publish(meta).unwrap();
        published.created_unix_ms = s.created_unix_ms;
        repo.rewrite_manifest(&published).unwrap();
        ids.insert(s.id, published.id);
    }
    (repo, ids)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_dry_run_changes_nothing_and_forget_removes_what_the_plan_forgets(
        steps in prop::collection::vec(step(), 1..12),
        policy in policy(),
        only_sg1 in any::<bool>(),
    ) {
        let (sets, _) = history(&steps, 1_750_000_000_000);
        let (repo, _) = repository(&sets);
        let sg = only_sg1.then_some("SG1");
        let before = repo.list_sets().unwrap();
        let dry = forget(&repo, sg, &policy, true).unwrap();
        prop_assert!(!dry.applied);
        prop_assert_eq!(&repo.list_sets().unwrap(), &before);
        let done = forget(&repo, sg, &policy, false).unwrap();
        prop_assert!(done.applied);
        prop_assert_eq!(&done.decisions, &dry.decisions);
        let left: HashSet<Uuid> = repo.list_sets().unwrap().iter().map(|s| s.id).collect();
        let expected: HashSet<Uuid> = before
            .iter()
            .filter(|s| sg.is_some_and(|sg| s.storage_group != sg) || kept(&dry).contains(&s.id))
            .map(|s| s.id)
            .collect();
        prop_assert_eq!(left, expected);
    }
}
