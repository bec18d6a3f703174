//! The driver with a fake clock and a stand-in runner: runs start when the clock reaches
//! their time, one at a time, and a missed run catches up once.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::clock::fake::FakeClock;
use super::core::RunState;
use super::*;

/// 2026-01-05 00:00:00 UTC, in ms.
const DAY0: u64 = 1_767_571_200_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// How long a test waits for the driver to do what it should (it is immediate when right).
const DEADLINE: Duration = Duration::from_secs(20);

/// A run the driver started: its schedule, its due, and the way to end it.
type Started = (ScheduleConfig, Due, oneshot::Sender<Outcome>);

/// Hands each run to the test, which ends it.
struct Relay(mpsc::UnboundedSender<Started>);

impl Runner for Relay {
    fn run(
        &self,
        schedule: ScheduleConfig,
        due: Due,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send((schedule, due, tx));
        Box::pin(async move { rx.await.unwrap_or_else(|_| Outcome::failed("dropped", None)) })
    }
}

fn nightly() -> ScheduleConfig {
    ScheduleConfig {
        name: "nightly".into(),
        cron: "0 2 * * *".into(),
        timezone: ScheduleZone::Utc,
        action: api::ScheduleAction::Backup,
        sg: Some("SG1".into()),
        backup_type: Some(api::BackupType::Full),
        from: None,
        repo: "/srv/backups".into(),
        password_file: None,
        retention: None,
    }
}

async fn next_run(rx: &mut mpsc::UnboundedReceiver<Started>, what: &str) -> Started {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no run started within {DEADLINE:?}: waited for {what}"))
        .expect("the driver is gone")
}

/// Waits until the driver has recorded the end of the run (yielding to it in between).
async fn ended(s: &Schedules, what: &str) -> api::ScheduleInfo {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let info = s.list().schedules.remove(0);
        if !info.running && info.last_result.is_some() {
            return info;
        }
        assert!(tokio::time::Instant::now() < until, "the run's end was never recorded: {what}");
        tokio::task::yield_now().await;
    }
}

fn start(
    kept: BTreeMap<String, RunState>,
    now: u64,
) -> (Arc<FakeClock>, Arc<Schedules>, mpsc::UnboundedReceiver<Started>, watch::Sender<bool>) {
    let clock = Arc::new(FakeClock::at(now));
    let schedules = Arc::new(Schedules::new(&[nightly()], None, kept, clock.clone()));
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(drive(schedules.clone(), Arc::new(Relay(tx)), stop_rx));
    (clock, schedules, rx, stop_tx)
}

#[tokio::test]
async fn the_driver_starts_a_run_when_the_clock_reaches_its_time() {
    let (clock, schedules, mut runs, _stop) = start(BTreeMap::new(), DAY0 + HOUR);
    assert_eq!(schedules.list().schedules[0].next_run.as_deref(), Some("2026-01-05T02:00:00Z"));
    clock.set(DAY0 + 2 * HOUR);
    let (cfg, due, end) = next_run(&mut runs, "the 02:00 run").await;
    assert_eq!(
        (cfg.name.as_str(), due.slot_ms, due.caught_up),
        ("nightly", DAY0 + 2 * HOUR, false)
    );
    assert!(schedules.list().schedules[0].running);
    end.send(Outcome::failed("repository full", None)).unwrap();
    let info = ended(&schedules, "the failed 02:00 run").await;
    assert_eq!(info.last_result, Some(api::ScheduleResult::Failed));
    assert_eq!(info.last_error.as_deref(), Some("repository full"));
    assert_eq!(info.next_run_unix_ms, Some(DAY0 + DAY + 2 * HOUR));
    // A failed run does not stop the schedule: the next night runs.
    clock.set(DAY0 + DAY + 2 * HOUR);
    let (_, due, end) = next_run(&mut runs, "the next night's run").await;
    assert_eq!(due.slot_ms, DAY0 + DAY + 2 * HOUR);
    end.send(Outcome::ok(None)).unwrap();
    assert_eq!(
        ended(&schedules, "the second run").await.last_result,
        Some(api::ScheduleResult::Ok)
    );
}

#[tokio::test]
async fn the_driver_catches_up_two_missed_runs_once_at_start() {
    let kept = BTreeMap::from([(
        "nightly".to_string(),
        RunState { anchor_ms: DAY0 + 2 * HOUR, ..RunState::default() },
    )]);
    // Started on the 7th at 03:00: the 6th's and the 7th's runs were missed.
    let (clock, schedules, mut runs, _stop) = start(kept, DAY0 + 2 * DAY + 3 * HOUR);
    let (_, due, end) = next_run(&mut runs, "the catch-up run at start").await;
    assert_eq!((due.slot_ms, due.slots, due.caught_up), (DAY0 + 2 * DAY + 2 * HOUR, 2, true));
    end.send(Outcome::ok(None)).unwrap();
    ended(&schedules, "the catch-up run").await;
    // The next run is the next night's: had the missed slots made more runs, they would
    // come first.
    clock.set(DAY0 + 3 * DAY + 2 * HOUR);
    let (_, due, end) = next_run(&mut runs, "the next night's run").await;
    assert_eq!((due.slot_ms, due.slots, due.caught_up), (DAY0 + 3 * DAY + 2 * HOUR, 1, false));
    end.send(Outcome::ok(None)).unwrap();
}
