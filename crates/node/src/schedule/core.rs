//! The pure core of the scheduler: given the schedules, what each last did and the time, which
//! runs are due and when to look again. No clock, no I/O: the driver passes `now`, and the
//! tests pass whatever time they like.
//!
//! Each schedule has an *anchor*: the time up to which its slots (the times its cron
//! expression names) are dealt with. A new schedule is anchored when the node first sees it
//! (it does not run for slots before it existed); a run moves the anchor to its slot. A run is
//! due when a slot lies after the anchor and at or before `now`, and it is *one* run whatever
//! the number of such slots: a node that was down over three nightly slots backs up once when
//! it comes back, not three times. A schedule whose run is going on gets no other run until
//! that one ends (slots passed meanwhile make one run after it).

use std::collections::BTreeMap;

use api::ScheduleResult;
use chrono::{DateTime, Local, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::ScheduleZone;

/// Missed slots counted at most (a per-second expression missed over a week would otherwise
/// be counted one by one); more are reported as this many.
pub const MAX_COUNTED: u64 = 1000;

/// One schedule as the core sees it: its name and its times.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub cron: croner::Cron,
    pub zone: ScheduleZone,
}

impl Spec {
    /// The first slot strictly after `after_ms` (whole seconds), if the expression has one.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let secs = i64::try_from(after_ms / 1000).ok()?;
        match self.zone {
            ScheduleZone::Utc => next(&self.cron, Utc.timestamp_opt(secs, 0).single()?),
            ScheduleZone::Local => next(&self.cron, Local.timestamp_opt(secs, 0).single()?),
        }
    }

    /// The last slot at or before `at_ms`, if any.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let secs = i64::try_from(at_ms / 1000).ok()?;
        match self.zone {
            ScheduleZone::Utc => previous(&self.cron, Utc.timestamp_opt(secs, 0).single()?),
            ScheduleZone::Local => previous(&self.cron, Local.timestamp_opt(secs, 0).single()?),
        }
    }
}

fn next<Z: TimeZone>(cron: &croner::Cron, t: DateTime<Z>) -> Option<u64> {
    let n = cron.find_next_occurrence(&t, false).ok()?;
    u64::try_from(n.timestamp()).ok().map(|s| s * 1000)
}

fn previous<Z: TimeZone>(cron: &croner::Cron, t: DateTime<Z>) -> Option<u64> {
    let p = cron.find_previous_occurrence(&t, true).ok()?;
    u64::try_from(p.timestamp()).ok().map(|s| s * 1000)
}

/// What is kept of one schedule across restarts (`schedules.toml` in the data directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Slots at or before this time (Unix ms) are dealt with.
    pub anchor_ms: u64,
    /// When the last run started, and the slot it ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot_ms: Option<u64>,
    /// How the last run ended (none while it runs, or before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<ScheduleResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    /// A run is going on (found true at start: the node stopped during it).
    #[serde(default)]
    pub running: bool,
}

/// A run that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub name: String,
    /// The slot it runs for: the latest one due.
    pub slot_ms: u64,
    /// How many slots it covers (at least 1; at most [`MAX_COUNTED`]).
    pub slots: u64,
    /// Its slot passed before the node started: it catches up runs missed while it was down.
    pub caught_up: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: ScheduleResult,
    pub error: Option<String>,
    /// The backup's job.
    pub job: Option<Uuid>,
}

impl Outcome {
    pub fn ok(job: Option<Uuid>) -> Self {
        Self { result: ScheduleResult::Ok, error: None, job }
    }

    pub fn failed(error: impl Into<String>, job: Option<Uuid>) -> Self {
        Self { result: ScheduleResult::Failed, error: Some(error.into()), job }
    }
}

/// Why a run found going on at start ended.
pub const INTERRUPTED: &str = "the node stopped while the run was going on";

/// The schedules and their states.
#[derive(Debug, Default)]
pub struct Core {
    specs: Vec<Spec>,
    states: BTreeMap<String, RunState>,
    started_ms: u64,
    interrupted: Vec<String>,
}

impl Core {
    /// The core of a node starting at `now_ms` with `specs` and the states it kept. States of
    /// schedules no longer configured are dropped; a new schedule is anchored at `now_ms`; a
    /// run found going on was interrupted by the stop ([`Core::interrupted`]) and is not run
    /// again for its slot.
    pub fn new(specs: Vec<Spec>, mut kept: BTreeMap<String, RunState>, now_ms: u64) -> Self {
        let mut states = BTreeMap::new();
        let mut interrupted = Vec::new();
        for spec in &specs {
            let mut st = kept
                .remove(&spec.name)
                .unwrap_or(RunState { anchor_ms: now_ms, ..RunState::default() });
            if st.running {
                st.running = false;
                st.last_result = Some(ScheduleResult::Interrupted);
                st.last_error = Some(INTERRUPTED.into());
                interrupted.push(spec.name.clone());
            }
            states.insert(spec.name.clone(), st);
        }
        Self { specs, states, started_ms: now_ms, interrupted }
    }

    /// The schedules whose run the node's stop interrupted.
    pub fn interrupted(&self) -> &[String] {
        &self.interrupted
    }

    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    pub fn states(&self) -> &BTreeMap<String, RunState> {
        &self.states
    }

    pub fn state(&self, name: &str) -> Option<&RunState> {
        self.states.get(name)
    }

    /// The runs due at `now_ms`, each marked running (started at `now_ms`, its anchor moved
    /// to its slot) until [`Core::finished`].
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Due> {
        let mut due = Vec::new();
        for spec in &self.specs {
            let Some(st) = self.states.get_mut(&spec.name) else { continue };
            if st.running {
                continue;
            }
            let Some(slot) = spec.last_at_or_before(now_ms).filter(|s| *s > st.anchor_ms) else {
                continue;
            };
            let mut slots = 1;
            let mut at = spec.next_after(st.anchor_ms);
            while let Some(t) = at.filter(|t| *t < slot) {
                slots += 1;
                if slots >= MAX_COUNTED {
                    break;
                }
                at = spec.next_after(t);
            }
            st.anchor_ms = slot;
            st.running = true;
            st.last_run_ms = Some(now_ms);
            st.last_slot_ms = Some(slot);
            st.last_result = None;
            st.last_error = None;
            st.last_job = None;
            due.push(Due {
                name: spec.name.clone(),
                slot_ms: slot,
                slots,
                caught_up: slot < self.started_ms,
            });
        }
        due
    }

    /// Records the end of the run of `name` at `now_ms`.
    pub fn finished(&mut self, name: &str, outcome: Outcome, now_ms: u64) {
        if let Some(st) = self.states.get_mut(name) {
            st.running = false;
            if outcome.result == ScheduleResult::Ok {
                st.last_success_ms = Some(now_ms);
            }
            st.last_result = Some(outcome.result);
            st.last_error = outcome.error;
            st.last_job = outcome.job;
        }
    }

    /// When `name` runs next: its first slot after its anchor (none while it runs).
    pub fn next_run(&self, name: &str) -> Option<u64> {
        let st = self.states.get(name)?;
        if st.running {
            return None;
        }
        self.specs.iter().find(|s| s.name == name)?.next_after(st.anchor_ms)
    }

    /// The earliest time a run may be due (none when nothing is left to run).
    pub fn next_wake(&self) -> Option<u64> {
        self.specs.iter().filter_map(|s| self.next_run(&s.name)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::schedule::clock::{Clock, fake::FakeClock};

    /// 2026-01-05 00:00:00 UTC (a Monday), in ms.
    const DAY0: u64 = 1_767_571_200_000;
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    fn spec(name: &str, cron: &str) -> Spec {
        Spec {
            name: name.into(),
            cron: crate::config::parse_cron(cron).unwrap(),
            zone: ScheduleZone::Utc,
        }
    }

    fn names(due: &[Due]) -> Vec<&str> {
        due.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn a_schedule_fires_at_its_time_and_not_before() {
        let clock = FakeClock::at(DAY0 + HOUR);
        let mut core =
            Core::new(vec![spec("nightly", "0 2 * * *")], BTreeMap::new(), clock.now_ms());
        assert!(core.take_due(clock.now_ms()).is_empty(), "nothing is due at 01:00");
        assert_eq!(core.next_wake(), Some(DAY0 + 2 * HOUR));
        clock.set(DAY0 + 2 * HOUR - 1);
        assert!(core.take_due(clock.now_ms()).is_empty(), "nothing is due a moment before 02:00");
        clock.set(DAY0 + 2 * HOUR);
        let due = core.take_due(clock.now_ms());
        assert_eq!(
            due,
            [Due { name: "nightly".into(), slot_ms: DAY0 + 2 * HOUR, slots: 1, caught_up: false }]
        );
        // Running: not due again, no next time until it ends.
        clock.set(DAY0 + 2 * HOUR + 5_000);
        assert!(core.take_due(clock.now_ms()).is_empty());
        assert_eq!(core.next_run("nightly"), None);
        core.finished("nightly", Outcome::ok(None), clock.now_ms());
        let st = core.state("nightly").unwrap();
        assert_eq!(st.last_result, Some(ScheduleResult::Ok));
        assert_eq!(st.last_success_ms, Some(DAY0 + 2 * HOUR + 5_000));
        assert_eq!(core.next_run("nightly"), Some(DAY0 + DAY + 2 * HOUR));
        assert!(core.take_due(clock.now_ms()).is_empty(), "the slot ran once");
    }

    #[test]
    fn a_new_schedule_does_not_run_for_slots_before_it_existed() {
        let mut core = Core::new(vec![spec("s", "0 * * * *")], BTreeMap::new(), DAY0 + 90 * 60_000);
        assert!(core.take_due(DAY0 + 90 * 60_000).is_empty());
        assert_eq!(core.next_wake(), Some(DAY0 + 2 * HOUR));
    }

    #[test]
    fn a_run_missed_while_the_node_was_down_catches_up_once_at_start() {
        let clock = FakeClock::at(DAY0 + HOUR);
        let mut first =
            Core::new(vec![spec("nightly", "0 2 * * *")], BTreeMap::new(), clock.now_ms());
        assert!(first.take_due(clock.now_ms()).is_empty());
        let kept = first.states().clone();
        // The node is down over 02:00 and comes back at 03:00.
        clock.set(DAY0 + 3 * HOUR);
        let mut core = Core::new(vec![spec("nightly", "0 2 * * *")], kept, clock.now_ms());
        let due = core.take_due(clock.now_ms());
        assert_eq!(
            due,
            [Due { name: "nightly".into(), slot_ms: DAY0 + 2 * HOUR, slots: 1, caught_up: true }]
        );
        core.finished("nightly", Outcome::ok(None), clock.now_ms());
        clock.set(DAY0 + 3 * HOUR + 1000);
        assert!(core.take_due(clock.now_ms()).is_empty(), "caught up once, not again");
        assert_eq!(core.next_wake(), Some(DAY0 + DAY + 2 * HOUR));
    }

    #[test]
    fn two_missed_slots_make_one_run() {
        let kept = BTreeMap::from([(
            "nightly".to_string(),
            RunState { anchor_ms: DAY0 + 2 * HOUR, ..RunState::default() },
        )]);
        // Down from just after the 5th's run to the 7th at 03:00: the 6th's and 7th's slots.
        let now = DAY0 + 2 * DAY + 3 * HOUR;
        let mut core = Core::new(vec![spec("nightly", "0 2 * * *")], kept, now);
        let due = core.take_due(now);
        assert_eq!(
            due,
            [Due {
                name: "nightly".into(),
                slot_ms: DAY0 + 2 * DAY + 2 * HOUR,
                slots: 2,
                caught_up: true
            }]
        );
        core.finished("nightly", Outcome::failed("disk full", None), now + 1);
        assert!(core.take_due(now + 2).is_empty(), "one run for both slots");
        let st = core.state("nightly").unwrap();
        assert_eq!(st.last_result, Some(ScheduleResult::Failed));
        assert_eq!(st.last_error.as_deref(), Some("disk full"));
        assert_eq!(st.last_success_ms, None);
    }

    #[test]
    fn slots_passed_during_a_long_run_make_one_run_after_it() {
        let mut core = Core::new(vec![spec("often", "*/10 * * * *")], BTreeMap::new(), DAY0 + 1);
        assert_eq!(names(&core.take_due(DAY0 + 10 * 60_000)), ["often"]);
        // The run takes 35 minutes: the 20, 30 and 40 slots pass meanwhile.
        assert!(core.take_due(DAY0 + 41 * 60_000).is_empty(), "one run at a time");
        core.finished("often", Outcome::ok(None), DAY0 + 45 * 60_000);
        let due = core.take_due(DAY0 + 45 * 60_000);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].slot_ms, due[0].slots, due[0].caught_up),
            (DAY0 + 40 * 60_000, 3, false)
        );
    }

    #[test]
    fn a_run_going_on_at_a_stop_is_interrupted_not_repeated() {
        let mut core = Core::new(vec![spec("s", "0 2 * * *")], BTreeMap::new(), DAY0);
        assert_eq!(names(&core.take_due(DAY0 + 2 * HOUR)), ["s"]);
        let kept = core.states().clone();
        let mut core = Core::new(vec![spec("s", "0 2 * * *")], kept, DAY0 + 3 * HOUR);
        assert_eq!(core.interrupted(), ["s"]);
        assert_eq!(core.state("s").unwrap().last_result, Some(ScheduleResult::Interrupted));
        assert!(core.take_due(DAY0 + 3 * HOUR).is_empty());
    }

    #[test]
    fn each_schedule_keeps_its_own_time_and_states_of_removed_ones_go() {
        let kept = BTreeMap::from([(
            "gone".to_string(),
            RunState { anchor_ms: DAY0, ..RunState::default() },
        )]);
        let mut core = Core::new(
            vec![spec("hourly", "0 * * * *"), spec("seconds", "30 0 2 * * *")],
            kept,
            DAY0 + 90 * 60_000,
        );
        assert!(core.state("gone").is_none());
        assert_eq!(core.next_wake(), Some(DAY0 + 2 * HOUR));
        assert_eq!(names(&core.take_due(DAY0 + 2 * HOUR)), ["hourly"]);
        assert_eq!(core.next_run("seconds"), Some(DAY0 + 2 * HOUR + 30_000));
        assert_eq!(names(&core.take_due(DAY0 + 2 * HOUR + 30_000)), ["seconds"]);
    }

    #[test]
    fn weekdays_are_posix() {
        // 1-5 is Monday to Friday: DAY0 is a Monday; Saturday and Sunday are skipped.
        let s = spec("weekdays", "0 2 * * 1-5");
        assert_eq!(s.next_after(DAY0 + 4 * DAY + 3 * HOUR), Some(DAY0 + 7 * DAY + 2 * HOUR));
    }
}
