//! Every endpoint of the API driven through the command's own typed client against a node
//! run by the real binary, and every example command of the README run against a node.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;

use api::Op;
use cli::client::{Endpoint, segment, with_query};
use common::{Served, config};

/// Records which endpoints a test drove.
struct Driven(HashSet<Op>);

impl Driven {
    fn op(&mut self, op: Op) -> &'static str {
        self.0.insert(op);
        api::ENDPOINTS.iter().find(|e| e.op == op).map(|e| e.path).unwrap()
    }
}

fn abs(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn every_endpoint_answers_through_the_typed_client() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let node = Endpoint::Unix(served.socket.clone());
    let mut d = Driven(HashSet::new());

    let doc: serde_json::Value = node.get(d.op(Op::OpenApi)).unwrap();
    assert_eq!(doc["info"]["title"], "Shadowcopy node API");
    let writers: api::WriterList = node.get(d.op(Op::ListWriters)).unwrap();
    assert!(!writers.writers.is_empty(), "{writers:?}");
    let providers: api::ProviderList = node.get(d.op(Op::ListProviders)).unwrap();
    let labels: Vec<&str> = providers.volumes.iter().map(|v| v.label.as_str()).collect();
    assert_eq!(labels.len(), 2, "{labels:?}");

    // Percentages of the volume that holds the storage, before any shadow of `db` exists.
    let add = api::AddShadowStorage {
        for_volume: "db".into(),
        on: Some("db".into()),
        max_size: api::MaxSize::Percent(20),
    };
    let storage: api::ShadowStorageList = node.post(d.op(Op::AddShadowStorage), &add).unwrap();
    let max_of = |l: &api::ShadowStorageList| {
        l.shadow_storage.iter().find(|s| s.for_label == "db").and_then(|s| s.max_bytes).unwrap()
    };
    let twenty = max_of(&storage);
    let resize =
        api::ResizeShadowStorage { for_volume: "db".into(), max_size: api::MaxSize::Percent(10) };
    let storage: api::ShadowStorageList =
        node.post(d.op(Op::ResizeShadowStorage), &resize).unwrap();
    let ten = max_of(&storage);
    assert!(ten > 0 && twenty == 2 * ten, "20% is {twenty} bytes, 10% {ten}");
    let listed: api::ShadowStorageList = node.get(d.op(Op::ListShadowStorage)).unwrap();
    assert_eq!(max_of(&listed), ten);

    let created: api::CreatedShadow =
        node.post(d.op(Op::CreateShadow), &api::CreateShadow { for_volume: "db".into() }).unwrap();
    let shadows: api::ShadowList = node.get(d.op(Op::ListShadows)).unwrap();
    assert_eq!(
        shadows.shadows.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![created.shadows[0].id]
    );
    // Exposed through FUSE and unexposed. Without FUSE (a developer's machine, not CI) the
    // node answers the contract's error instead; `expose.rs` tests the mount itself.
    let shadow = created.shadows[0].id;
    let mnt = dir.path().join("mnt");
    let _unmount = common::MountGuard(mnt.clone());
    let expose = api::ExposeShadow { shadow, at: abs(&mnt) };
    let unexpose = api::UnexposeShadow { shadow: Some(shadow), at: None };
    match node.post::<_, api::Exposures>(d.op(Op::ExposeShadow), &expose) {
        Ok(exposed) => {
            assert_eq!(exposed.exposures[0].shadow, shadow);
            let listed: api::ShadowList = node.get(d.op(Op::ListShadows)).unwrap();
            assert_eq!(listed.shadows[0].exposed_at.as_ref(), Some(&exposed.exposures[0].at));
            let gone: api::Exposures = node.post(d.op(Op::UnexposeShadow), &unexpose).unwrap();
            assert_eq!(gone.exposures, exposed.exposures);
        }
        Err(e) => {
            let e = e.downcast_ref::<cli::client::ApiError>().unwrap();
            assert_eq!((e.status, e.code.as_str()), (503, "fuse_unavailable"), "{e:?}");
            assert_ne!(std::env::var("CI").ok().as_deref(), Some("true"), "CI must have FUSE");
            let e =
                node.post::<_, api::Exposures>(d.op(Op::UnexposeShadow), &unexpose).unwrap_err();
            let e = e.downcast_ref::<cli::client::ApiError>().unwrap();
            assert_eq!((e.status, e.code.as_str()), (404, "not_exposed"), "{e:?}");
        }
    }
    let delete = api::DeleteShadows { shadow: Some(created.shadows[0].id), ..Default::default() };
    let deleted: api::DeletedShadows = node.post(d.op(Op::DeleteShadows), &delete).unwrap();
    assert_eq!(deleted.deleted, vec![created.shadows[0].id]);

    let sg2 = api::CreateStorageGroup {
        name: "SG2".into(),
        log_volume: "logs".into(),
        log_dir: None,
        system_dir: None,
        prefix: None,
        circular_logging: false,
        database: api::CreateDatabase { name: "DB1".into(), volume: "db".into(), path: None },
    };
    let made: api::CreatedStorageGroup = node.post(d.op(Op::CreateStorageGroup), &sg2).unwrap();
    assert!(made.mounted && made.storage_group.databases.len() == 1, "{made:?}");
    let db2 = api::CreateDatabase { name: "DB2".into(), volume: "db".into(), path: None };
    let path = d.op(Op::AddDatabase).replace("{sg}", &segment("SG2"));
    let added: api::CreatedDatabase = node.post(&path, &db2).unwrap();
    assert_eq!((added.storage_group.as_str(), added.database.name.as_str()), ("SG2", "DB2"));
    let path = d.op(Op::Dismount).replace("{sg}", "SG2");
    let m: api::Mounted = node.post(&path, &()).unwrap();
    assert!(!m.mounted);
    let path = d.op(Op::Mount).replace("{sg}", "SG2");
    let m: api::Mounted = node.post(&path, &()).unwrap();
    assert!(m.mounted);
    let schedules: api::ScheduleList = node.get(d.op(Op::ListSchedules)).unwrap();
    assert!(schedules.schedules.is_empty(), "this node's configuration names no schedule");
    let status: api::StoreStatus = node.get(d.op(Op::StoreStatus)).unwrap();
    let names: Vec<&str> = status.storage_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["SG1", "SG2"]);

    let load = api::MailLoad {
        sg: "SG1".into(),
        db: "DB1".into(),
        messages: Some(20),
        ..Default::default()
    };
    let loaded: api::MailLoaded = node.post(d.op(Op::MailLoad), &load).unwrap();
    assert_eq!(loaded.delivered, 20);
    let q = api::MailCountQuery { sg: "SG1".into(), db: "DB1".into(), path: None, copy: false };
    let live: api::MailCount = node.get(&with_query(d.op(Op::MailCount), &q).unwrap()).unwrap();
    assert_eq!(live.messages, 20);

    // An encrypted repository, created by the backup under the password it carries; every
    // later request carries it too.
    let repo = abs(&dir.path().join("repo"));
    let password = Some("api password".to_string());
    let backup = api::BackupRequest {
        backup_type: api::BackupType::Full,
        sg: "SG1".into(),
        repo: repo.clone(),
        databases: vec![],
        from: None,
        password: password.clone(),
    };
    let mut lines = 0;
    let report: api::BackupReport =
        node.post_streaming(d.op(Op::Backup), &backup, |_| lines += 1).unwrap();
    assert!(lines > 0, "the backup streamed no progress");
    assert_eq!(report.set.backup_type, "full");
    assert!(report.encrypted, "a backup with a password made a clear repository");
    let q = api::RepoQuery { repo: repo.clone() };
    let sets_path = with_query(d.op(Op::BackupSets), &q).unwrap();
    let sets: api::SetList = node.get_with_password(&sets_path, password.as_deref()).unwrap();
    assert_eq!(sets.sets, vec![report.set.clone()]);
    assert!(sets.encrypted);
    let refused = node.get::<api::SetList>(&sets_path).unwrap_err();
    assert!(format!("{refused:#}").contains("password is required"), "{refused:#}");
    let refused = node.get_with_password::<api::SetList>(&sets_path, Some("nope")).unwrap_err();
    assert!(format!("{refused:#}").contains("wrong password"), "{refused:#}");
    let verify = api::VerifyRequest {
        repo: repo.clone(),
        set: report.set.id.to_string(),
        password: password.clone(),
    };
    let verified: api::VerifyReport =
        node.post_streaming(d.op(Op::Verify), &verify, |_| {}).unwrap();
    assert!(verified.verified && verified.report.databases == 1, "{verified:?}");
    let to = abs(&dir.path().join("restored/SG1"));
    let restore = api::RestoreRequest {
        repo,
        set: report.set.id.to_string(),
        to: Some(to.clone()),
        password,
        ..Default::default()
    };
    let restored: api::RestoreReport =
        node.post_streaming(d.op(Op::Restore), &restore, |_| {}).unwrap();
    assert_eq!(restored.sets, vec![report.set.id]);
    let q = api::MailCountQuery { sg: "SG1".into(), db: "DB1".into(), path: Some(to), copy: false };
    let copy: api::MailCount = node.get(&with_query("/v1/mail/count", &q).unwrap()).unwrap();
    assert_eq!(copy.digest, live.digest, "the restored copy holds the same mail");

    let q = api::EventQuery { job: Some(report.job.to_string()), ..Default::default() };
    let events: api::EventList = node.get(&with_query(d.op(Op::Events), &q).unwrap()).unwrap();
    assert!(!events.events.is_empty() && events.events.iter().all(|e| e.job == Some(report.job)));
    // The same trail as server-sent events: since `since_ms`, the past first, then the live
    // ones (the stream stays open; the read stops at the first event).
    let q = api::EventQuery {
        job: Some(report.job.to_string()),
        since_ms: Some(0),
        ..Default::default()
    };
    let stream = with_query(d.op(Op::EventStream), &q).unwrap();
    assert_eq!(first_streamed_event(&served.socket, &stream), events.events[0]);
    let metrics = node.get_text(d.op(Op::Metrics)).unwrap();
    assert!(metrics.contains("shadowcopy_backups_completed_total 1"), "{metrics}");

    // The DAG's endpoints answer a node without a [dag] section with the contract's error
    // (they are driven against real DAG members in `dag.rs`).
    let not_member = |e: anyhow::Error| {
        let e = e.downcast_ref::<cli::client::ApiError>().unwrap();
        assert_eq!((e.status, e.code.as_str()), (409, "not_a_dag_member"), "{e:?}");
    };
    not_member(node.get::<api::DagStatus>(d.op(Op::DagStatus)).unwrap_err());
    let q = api::CopyQuery { sg: None };
    not_member(
        node.get::<api::CopyList>(&with_query(d.op(Op::ListCopies), &q).unwrap()).unwrap_err(),
    );
    let add = api::CopyAdd { sg: "SG1".into(), node: "b".into(), preference: None };
    not_member(node.post::<_, api::CopyList>(d.op(Op::AddCopy), &add).unwrap_err());
    let activate = api::CopyActivate { sg: "SG1".into(), node: "b".into(), skip_checks: false };
    not_member(node.post::<_, api::CopyActivated>(d.op(Op::ActivateCopy), &activate).unwrap_err());
    let settings = api::CopySettings {
        sg: "SG1".into(),
        mount_dial: Some("lossless".into()),
        sync_copies: None,
        sync_policy: None,
    };
    not_member(node.post::<_, api::CopyList>(d.op(Op::CopySettings), &settings).unwrap_err());
    let change = api::CopyChange { sg: "SG1".into(), node: "b".into(), reason: None };
    for op in [Op::RemoveCopy, Op::SuspendCopy, Op::ResumeCopy, Op::ReseedCopy] {
        not_member(node.post::<_, api::CopyList>(d.op(op), &change).unwrap_err());
    }

    // One message delivered durably, then checked with one that was never delivered.
    let deliver = api::MailDeliver {
        sg: "SG1".into(),
        db: "DB1".into(),
        mailbox: "api-e2e".into(),
        from: None,
        subject: "one".into(),
        body: "one body".into(),
    };
    let delivered: api::MailDelivered = node.post(d.op(Op::MailDeliver), &deliver).unwrap();
    let stored = api::MailRef {
        mailbox: delivered.mailbox.clone(),
        message_id: delivered.message_id,
        body_hash: delivered.body_hash.clone(),
    };
    let never = api::MailRef { message_id: delivered.message_id + 1000, ..stored.clone() };
    let check = api::MailCheck {
        sg: "SG1".into(),
        db: "DB1".into(),
        messages: vec![stored, never.clone()],
    };
    let checked: api::MailChecked = node.post(d.op(Op::MailCheck), &check).unwrap();
    assert_eq!((checked.checked, checked.missing), (2, vec![never]));

    // An error is the contract's error.
    let e = node.get::<api::StoreStatus>("/v1/nope").unwrap_err();
    let e = e.downcast_ref::<cli::client::ApiError>().unwrap();
    assert_eq!((e.status, e.code.as_str()), (404, "no_such_endpoint"));

    let missed: Vec<_> = api::ENDPOINTS.iter().filter(|e| !d.0.contains(&e.op)).collect();
    assert!(missed.is_empty(), "endpoints not driven: {missed:?}");
}

/// The first event of a server-sent event stream at `path` (each event's `data` is one
/// `api::Event`), read within a deadline.
fn first_streamed_event(socket: &Path, path: &str) -> api::Event {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut head = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.unwrap_or_else(|e| {
            panic!("no event streamed from {path} within 60 s ({e}); read: {head:?}")
        });
        if let Some(data) = line.strip_prefix("data:") {
            return serde_json::from_str(data.trim()).unwrap();
        }
        head.push(line);
    }
    panic!("the stream {path} ended without an event: {head:?}");
}

/// The `shadowcopy …` lines of the README's "Running a node" block.
fn readme_examples() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let start = readme.find("## Running a node").unwrap();
    let block = &readme[start..];
    let block = &block[block.find("```sh").unwrap() + 5..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim())
        .filter(|l| l.starts_with("shadowcopy "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_example_of_the_readme_runs_against_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let repo = abs(&dir.path().join("backups"));
    let restore_to = abs(&dir.path().join("restore/SG1"));
    let db_file = abs(&dir.path().join("db/SG1/DB1.edb"));
    let examples = readme_examples();
    assert!(examples.len() >= 15, "{examples:?}");
    let mut set = String::new();
    let mut job = String::new();
    for example in &examples {
        let line = example
            .replace("/srv/backups", &repo)
            .replace("/srv/restore/SG1", &restore_to)
            .replace("/srv/db/SG1/DB1.edb", &db_file)
            // Half a minute of load proves nothing more than two seconds.
            .replace("--seconds 30", "--seconds 2")
            .replace("3f2a", &set)
            .replace("JOB_ID", &job);
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = served.cli(&args);
        if line.starts_with("shadowcopy backup run --type full") {
            // The first set and job stand for the README's placeholders.
            let id = out.split_whitespace().nth(2).unwrap();
            set = id[..8].to_string();
            let j = out.lines().find_map(|l| l.trim().strip_prefix("Job:")).unwrap();
            job = j.trim().to_string();
        }
    }
    assert!(!set.is_empty() && !job.is_empty(), "the README runs a full backup");
}
