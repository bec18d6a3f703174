//! Property test: whatever each writer does at whichever event, a job either succeeds
//! completely or ends aborted with every invariant of the reference intact.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{quick_config, rig};
use proptest::prelude::*;
use vss::testing::Behavior;
use vss::{BackupSchema, BackupState, Phase, Provider, SnapshotContext, WriterFailure};

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::PrepareBackup),
        Just(Phase::PrepareSnapshot),
        Just(Phase::Freeze),
        Just(Phase::Thaw),
        Just(Phase::PostSnapshot),
        Just(Phase::BackupComplete),
        Just(Phase::BackupShutdown),
        Just(Phase::Abort),
    ]
}

fn behavior() -> impl Strategy<Value = Behavior> {
    prop_oneof![
        Just(Behavior::Succeed),
        Just(Behavior::Fail(WriterFailure::Retryable)),
        Just(Behavior::Fail(WriterFailure::NonRetryable)),
        Just(Behavior::Stall(Duration::from_secs(60))),
    ]
}

fn cases() -> u32 {
    if std::env::var_os("SHADOWCOPY_STRESS").is_some() { 400 } else { 24 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_job_ends_clean(scripts in prop::collection::vec(prop::collection::vec((phase(), behavior()), 0..3), 3),
                            selected in prop::collection::vec(any::<bool>(), 3),
                            drop_before_complete: bool) {
        let mut config = quick_config();
        // Shorter than quick_config's, as stalls are frequent here. A healthy writer that
        // still missed it would look like a stalled one, which the property covers too.
        config.event_timeout = Duration::from_secs(1);
        let rig = rig(3, config, BackupSchema::default());
        for (w, script) in rig.writers.iter().zip(&scripts) {
            for (p, b) in script {
                w.set(*p, *b);
            }
        }
        let components: Vec<_> = rig.writers.iter().zip(&selected).filter(|(_, s)| **s).flat_map(|(w, _)| w.component_keys()).collect();
        let any_selected = !components.is_empty();
        let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
        let job = s.job();
        s.gather_writer_metadata().unwrap();
        s.set_backup_state(BackupState { components: components.clone(), ..BackupState::default() }).unwrap();
        let made = s.prepare_for_backup().and_then(|_| s.do_snapshot_set().map(|_| ())).is_ok();
        prop_assert!(any_selected || !made, "nothing selected cannot make a set");
        let mut completed = false;
        if made && !drop_before_complete {
            for c in &components {
                s.set_backup_succeeded(c, true).unwrap();
            }
            let _ = s.backup_complete();
            completed = true;
        }
        drop(s);

        prop_assert!(rig.provider.query().is_empty(), "snapshots released");
        prop_assert_eq!(rig.provider.open_sets(), 0);
        prop_assert_eq!(rig.coord.snapshot_set_in_progress(), None);
        for (i, w) in rig.writers.iter().enumerate() {
            let phases = w.phases(job);
            prop_assert!(!w.is_frozen(), "writer {} left frozen: {:?}", i, phases);
            let got_complete = phases.contains(&Phase::BackupComplete);
            prop_assert_eq!(got_complete, completed && selected[i], "writer {}: {:?}", i, phases);
            if phases.contains(&Phase::Freeze) {
                prop_assert!(phases.contains(&Phase::Thaw), "writer {} frozen but never thawed: {:?}", i, phases);
            }
            if selected[i] {
                // Involved writers always hear the end of the job.
                prop_assert_eq!(phases.last(), Some(&Phase::BackupShutdown), "writer {}: {:?}", i, phases);
            } else {
                // Uninvolved: nothing after prepare_backup — unless the job failed while still
                // being prepared (before it knew who is involved), then abort and shutdown.
                let narrowed = phases == [Phase::Identify, Phase::PrepareBackup];
                let ended = phases.last() == Some(&Phase::BackupShutdown) && !phases.contains(&Phase::PrepareSnapshot);
                prop_assert!(narrowed || ended, "uninvolved writer {}: {:?}", i, phases);
            }
            if !completed && selected[i] && phases.contains(&Phase::PrepareSnapshot) {
                prop_assert!(phases.contains(&Phase::Abort), "writer {} not aborted: {:?}", i, phases);
            }
        }
        let trail = rig.trail_ids(job);
        prop_assert_eq!(trail.last(), Some(&events::catalog::COORD_SESSION_SHUTDOWN.id));
    }
}
