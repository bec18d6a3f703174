//! The DAG's shared state against a real etcd (started per test on loopback ports).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/etcd.rs"]
mod etcd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd::Etcd;
use replication::cluster::{
    ActiveRecord, CAMPAIGN_WAIT, Cluster, ClusterError, CopyRecord, CopyState, CopyStatus, Member,
    MountDial, PrimaryHandle, SgSettings, SyncPolicy,
};

/// How long a test waits for something etcd does on its own (lease expiry, reconnection).
const WAIT: Duration = Duration::from_secs(20);

async fn connect(etcd: &Etcd, dag: &str) -> Cluster {
    Cluster::connect(std::slice::from_ref(&etcd.endpoint), dag).await.unwrap()
}

fn member(node: &str) -> Member {
    Member { node: node.into(), replication: format!("127.0.0.1:1{node}"), since_ms: 7 }
}

fn copy(sg: &str, node: &str, preference: u32) -> CopyRecord {
    CopyRecord {
        sg: sg.into(),
        node: node.into(),
        preference,
        seed_serial: 1,
        suspended: None,
        resumes: 0,
    }
}

fn state(sg: &str, node: &str, replayed: u32) -> CopyState {
    CopyState {
        sg: sg.into(),
        node: node.into(),
        status: CopyStatus::Healthy,
        last_inspected_generation: replayed + 1,
        last_replayed_generation: replayed,
        checkpoint_generation: replayed.saturating_sub(2),
        last_error: None,
        updated_ms: 42,
        shipping: None,
    }
}

fn nodes(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.node.as_str()).collect()
}

/// Polls `members()` until `pred` holds on the node names, or fails after [`WAIT`] saying `what`.
async fn wait_members(cluster: &Cluster, what: &str, pred: impl Fn(&[&str]) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut last: String;
    loop {
        match cluster.members().await {
            Ok(m) if pred(&nodes(&m)) => return,
            Ok(m) => last = format!("{:?}", nodes(&m)),
            Err(e) => last = e.to_string(),
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}; last members: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn members_are_listed_while_their_lease_lives() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    cluster.ping().await.unwrap();
    assert!(cluster.members().await.unwrap().is_empty());

    let a = cluster.register_member(&member("a"), 2).await.unwrap();
    let b = cluster.register_member(&member("b"), 2).await.unwrap();
    assert_eq!(cluster.members().await.unwrap(), vec![member("a"), member("b")]);

    // The lease is renewed: the member is still listed well after its TTL.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            nodes(&cluster.members().await.unwrap()),
            ["a", "b"],
            "a renewed member vanished"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A lease lost behind the node's back (as if it expired during an outage): the task grants a
    // new one and puts the member key again.
    let lost = a.lease_id();
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.unwrap();
    raw.lease_revoke(lost).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while a.lease_id() == lost {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for a new lease after losing {lost}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_members(&cluster, "a to be listed again on its new lease", |n| n == ["a", "b"]).await;

    // Revoked: gone at once.
    a.revoke().await;
    assert_eq!(nodes(&cluster.members().await.unwrap()), ["b"]);

    // Dropped: the task revokes on its way out (or the lease expires).
    drop(b);
    wait_members(&cluster, "b's key to go after its lease was dropped", |n| n.is_empty()).await;

    // Another DAG on the same etcd sees none of it.
    let other = connect(&etcd, "DAG2").await;
    let _c = other.register_member(&member("c"), 2).await.unwrap();
    assert!(cluster.members().await.unwrap().is_empty());
    assert_eq!(nodes(&other.members().await.unwrap()), ["c"]);
}

#[tokio::test]
async fn copies_states_and_produced() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;

    // Key order ("a-b/" < "a/") is not (sg, node) order: the list is sorted by (sg, node).
    for c in [copy("a-b", "x", 1), copy("a", "c", 3), copy("a", "b", 2), copy("b", "a", 1)] {
        cluster.put_copy(&c).await.unwrap();
    }
    let all = cluster.copies(None).await.unwrap();
    let keys: Vec<(&str, &str)> = all.iter().map(|c| (c.sg.as_str(), c.node.as_str())).collect();
    assert_eq!(keys, [("a", "b"), ("a", "c"), ("a-b", "x"), ("b", "a")]);
    assert_eq!(
        cluster.copies(Some("a")).await.unwrap(),
        vec![copy("a", "b", 2), copy("a", "c", 3)]
    );
    assert!(cluster.copies(Some("zz")).await.unwrap().is_empty());

    // Replacing a record (suspend) keeps one record.
    let mut suspended = copy("a", "b", 2);
    suspended.suspended = Some("disk swap".into());
    cluster.put_copy(&suspended).await.unwrap();
    assert_eq!(cluster.copies(Some("a")).await.unwrap(), vec![suspended, copy("a", "c", 3)]);

    assert!(cluster.remove_copy("a", "b").await.unwrap());
    assert!(!cluster.remove_copy("a", "b").await.unwrap(), "a second remove finds nothing");
    assert_eq!(cluster.copies(Some("a")).await.unwrap(), vec![copy("a", "c", 3)]);

    // States.
    assert!(cluster.states(None).await.unwrap().is_empty());
    cluster.put_state(&state("sg2", "b", 9)).await.unwrap();
    cluster.put_state(&state("sg1", "c", 5)).await.unwrap();
    cluster.put_state(&state("sg1", "b", 4)).await.unwrap();
    cluster.put_state(&state("sg1", "b", 6)).await.unwrap();
    assert_eq!(
        cluster.states(None).await.unwrap(),
        vec![state("sg1", "b", 6), state("sg1", "c", 5), state("sg2", "b", 9)]
    );
    assert_eq!(cluster.states(Some("sg2")).await.unwrap(), vec![state("sg2", "b", 9)]);
    cluster.remove_state("sg1", "b").await.unwrap();
    cluster.remove_state("sg1", "b").await.unwrap();
    assert_eq!(cluster.states(Some("sg1")).await.unwrap(), vec![state("sg1", "c", 5)]);

    // Produced.
    assert_eq!(cluster.produced("sg1").await.unwrap(), None);
    cluster.put_produced("sg1", 0x3A).await.unwrap();
    cluster.put_produced("sg1", 0x3B).await.unwrap();
    assert_eq!(cluster.produced("sg1").await.unwrap(), Some(0x3B));
    assert_eq!(cluster.produced("sg2").await.unwrap(), None);

    // A name that cannot be a key segment is refused, not mis-filed.
    let err = cluster.copies(Some("a/b")).await.unwrap_err();
    assert!(matches!(err, ClusterError::Name { .. }), "{err}");
    let err = cluster.put_copy(&copy("sg1", "", 1)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Name { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_active_if_is_a_compare_and_swap() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    let r1 = ActiveRecord { node: "a".into(), epoch: 1, previous: None, since_generation: 0 };
    let r2 = ActiveRecord { node: "b".into(), epoch: 2, previous: None, since_generation: 0 };

    assert_eq!(cluster.active("sg1").await.unwrap(), None);
    assert!(cluster.set_active_if("sg1", None, &r1).await.unwrap(), "first write with None");
    assert!(!cluster.set_active_if("sg1", None, &r2).await.unwrap(), "second write with None");
    assert_eq!(cluster.active("sg1").await.unwrap(), Some(r1.clone()));

    assert!(cluster.set_active_if("sg1", Some(&r1), &r2).await.unwrap(), "right expected");
    assert_eq!(cluster.active("sg1").await.unwrap(), Some(r2.clone()));
    let r3 = ActiveRecord { node: "c".into(), epoch: 2, previous: None, since_generation: 0 };
    assert!(!cluster.set_active_if("sg1", Some(&r1), &r3).await.unwrap(), "stale expected");
    assert!(!cluster.set_active_if("sg2", Some(&r1), &r3).await.unwrap(), "expected on no record");
    assert_eq!(cluster.active("sg1").await.unwrap(), Some(r2.clone()));

    // Two writers racing from the same expected record: exactly one wins.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for node in ["x", "y"] {
        let (cluster, barrier, expected) = (cluster.clone(), barrier.clone(), r2.clone());
        tasks.push(tokio::spawn(async move {
            let new = ActiveRecord {
                node: node.into(),
                epoch: expected.epoch + 1,
                previous: None,
                since_generation: 0,
            };
            barrier.wait().await;
            let won = cluster.set_active_if("sg1", Some(&expected), &new).await.unwrap();
            (won, new)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, new) = t.await.unwrap();
        if won {
            winners.push(new);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer wins: {winners:?}");
    assert_eq!(cluster.active("sg1").await.unwrap(), winners.pop());

    // The same race from no record at all.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for node in ["x", "y"] {
        let (cluster, barrier) = (cluster.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let new =
                ActiveRecord { node: node.into(), epoch: 1, previous: None, since_generation: 0 };
            barrier.wait().await;
            cluster.set_active_if("sg3", None, &new).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one racer creates the record");

    let actives = cluster.actives().await.unwrap();
    let sgs: Vec<&str> = actives.iter().map(|(sg, _)| sg.as_str()).collect();
    assert_eq!(sgs, ["sg1", "sg3"]);
}

#[tokio::test]
async fn a_malformed_value_is_an_error_naming_its_key() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    cluster.put_copy(&copy("sg1", "a", 1)).await.unwrap();
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.unwrap();

    let key = format!("{}copies/sg1/b", cluster.prefix());
    assert_eq!(key, "/shadowcopy/DAG1/copies/sg1/b");
    raw.put(key.as_str(), "{not json", None).await.unwrap();
    for err in
        [cluster.copies(None).await.unwrap_err(), cluster.copies(Some("sg1")).await.unwrap_err()]
    {
        match err {
            ClusterError::Malformed { key: k, .. } => assert_eq!(k, key),
            other => panic!("expected Malformed naming {key}, got {other}"),
        }
    }

    let key = format!("{}active/sg1", cluster.prefix());
    raw.put(key.as_str(), r#"{"node":"a"}"#, None).await.unwrap();
    let err = cluster.active("sg1").await.unwrap_err();
    assert!(matches!(&err, ClusterError::Malformed { key: k, .. } if *k == key), "{err}");
    let expected = ActiveRecord { node: "a".into(), epoch: 1, previous: None, since_generation: 0 };
    let err = cluster.set_active_if("sg1", Some(&expected), &expected).await.unwrap_err();
    assert!(matches!(&err, ClusterError::Malformed { key: k, .. } if *k == key), "{err}");
    assert!(err.to_string().contains(&key), "{err}");

    let key = format!("{}produced/sg1", cluster.prefix());
    raw.put(key.as_str(), "-3", None).await.unwrap();
    let err = cluster.produced("sg1").await.unwrap_err();
    assert!(matches!(&err, ClusterError::Malformed { key: k, .. } if *k == key), "{err}");
    // Written by hand as a decimal, it is read.
    raw.put(key.as_str(), "58", None).await.unwrap();
    assert_eq!(cluster.produced("sg1").await.unwrap(), Some(58));

    let key = format!("{}state/sg1/a", cluster.prefix());
    raw.put(key.as_str(), r#"{"sg":"sg1"}"#, None).await.unwrap();
    let err = cluster.states(None).await.unwrap_err();
    assert!(matches!(&err, ClusterError::Malformed { key: k, .. } if *k == key), "{err}");
}

#[tokio::test]
async fn an_etcd_outage_is_an_error_and_the_cluster_works_again_after() {
    let mut etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    cluster.put_copy(&copy("sg1", "b", 1)).await.unwrap();
    let _lease = cluster.register_member(&member("a"), 2).await.unwrap();
    assert_eq!(nodes(&cluster.members().await.unwrap()), ["a"]);

    etcd.stop();
    // The request timeout makes the call fail; the outer deadline only keeps a hang from hanging
    // the test.
    let result = tokio::time::timeout(WAIT, cluster.copies(None))
        .await
        .expect("a call to a stopped etcd returns (an error) instead of hanging");
    let err = result.expect_err("a call to a stopped etcd fails");
    assert!(matches!(err, ClusterError::Etcd { .. }), "{err}");
    assert!(err.to_string().contains(&etcd.endpoint), "the error names the endpoint: {err}");
    // Connecting while etcd is down succeeds (nothing is contacted); a ping fails.
    let late = connect(&etcd, "DAG1").await;
    assert!(tokio::time::timeout(WAIT, late.ping()).await.expect("ping returns").is_err());

    etcd.restart();
    let deadline = Instant::now() + WAIT;
    let copies = loop {
        match cluster.copies(None).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the cluster never worked again after restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(copies, vec![copy("sg1", "b", 1)], "state is kept across the outage");
    late.ping().await.unwrap();
    // The member is listed again (its lease renewed, or re-granted and the key put again).
    wait_members(&cluster, "member a to be listed after the outage", |n| n == ["a"]).await;
    // And it stays listed: renewals resumed (a restarted etcd extends leases only once).
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(nodes(&cluster.members().await.unwrap()), ["a"], "a vanished after the outage");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn settings_default_roundtrip_and_if_absent() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    let defaults = SgSettings {
        mount_dial: MountDial::Best,
        sync_copies: 0,
        sync_policy: SyncPolicy::Available,
    };
    assert_eq!(SgSettings::default(), defaults);
    assert_eq!(cluster.settings("sg1").await.unwrap(), defaults, "absent means the defaults");
    assert!(cluster.all_settings().await.unwrap().is_empty());

    let strict = SgSettings {
        mount_dial: MountDial::Lossless,
        sync_copies: 2,
        sync_policy: SyncPolicy::Strict,
    };
    assert!(cluster.put_settings_if_absent("sg1", &strict).await.unwrap(), "first if-absent");
    assert_eq!(cluster.settings("sg1").await.unwrap(), strict);
    let other = SgSettings { mount_dial: MountDial::Good, ..SgSettings::default() };
    assert!(!cluster.put_settings_if_absent("sg1", &other).await.unwrap(), "second if-absent");
    assert_eq!(cluster.settings("sg1").await.unwrap(), strict, "if-absent did not overwrite");

    cluster.put_settings("sg1", &other).await.unwrap();
    assert_eq!(cluster.settings("sg1").await.unwrap(), other, "put overwrites");
    let effort = SgSettings { mount_dial: MountDial::BestEffort, ..SgSettings::default() };
    cluster.put_settings("sg0", &effort).await.unwrap();
    assert_eq!(
        cluster.all_settings().await.unwrap(),
        vec![("sg0".to_string(), effort), ("sg1".to_string(), other)]
    );

    // Stored in lowercase, as typed on the command line.
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.unwrap();
    let key = format!("{}settings/sg0", cluster.prefix());
    let resp = raw.get(key.as_str(), None).await.unwrap();
    let text = String::from_utf8_lossy(resp.kvs()[0].value()).into_owned();
    assert!(text.contains(r#""mount_dial":"besteffort""#), "{text}");
    assert!(text.contains(r#""sync_policy":"available""#), "{text}");
    assert!(matches!(cluster.settings("a/b").await.unwrap_err(), ClusterError::Name { .. }));
}

#[test]
fn mount_dial_and_sync_policy_spellings_and_limits() {
    for (dial, text, max) in [
        (MountDial::Lossless, "lossless", Some(0)),
        (MountDial::Good, "good", Some(6)),
        (MountDial::Best, "best", Some(12)),
        (MountDial::BestEffort, "besteffort", None),
    ] {
        assert_eq!(dial.to_string(), text);
        assert_eq!(text.parse::<MountDial>().unwrap(), dial);
        assert_eq!(dial.max_missing(), max);
        assert_eq!(serde_json::to_string(&dial).unwrap(), format!("\"{text}\""));
    }
    assert!(MountDial::Lossless.allows(0));
    assert!(!MountDial::Lossless.allows(1));
    assert!(MountDial::Good.allows(6));
    assert!(!MountDial::Good.allows(7));
    assert!(MountDial::Best.allows(12));
    assert!(!MountDial::Best.allows(13));
    assert!(MountDial::BestEffort.allows(u32::MAX));
    assert_eq!(MountDial::default(), MountDial::Best);
    assert!("Best".parse::<MountDial>().is_err());
    assert!("".parse::<MountDial>().is_err());

    for (policy, text) in [(SyncPolicy::Strict, "strict"), (SyncPolicy::Available, "available")] {
        assert_eq!(policy.to_string(), text);
        assert_eq!(text.parse::<SyncPolicy>().unwrap(), policy);
    }
    assert_eq!(SyncPolicy::default(), SyncPolicy::Available);
    let err = "lax".parse::<SyncPolicy>().unwrap_err();
    assert!(err.to_string().contains("lax"), "{err}");
}

#[tokio::test]
async fn active_record_epochs_and_since_generation() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    let first = ActiveRecord::first("a");
    assert_eq!(
        first,
        ActiveRecord { node: "a".into(), epoch: 1, previous: None, since_generation: 0 }
    );
    assert!(cluster.set_active_if("sg1", None, &first).await.unwrap());
    assert!(cluster.update_active_since("sg1", &first, 5).await.unwrap(), "since set");
    let a5 = cluster.active("sg1").await.unwrap().unwrap();
    assert_eq!(a5, ActiveRecord { since_generation: 5, ..first.clone() });
    assert!(!cluster.update_active_since("sg1", &first, 6).await.unwrap(), "stale expected");
    assert_eq!(
        cluster.active("sg1").await.unwrap().unwrap(),
        a5,
        "the refused update wrote nothing"
    );

    let b = a5.next("b");
    assert_eq!(
        b,
        ActiveRecord {
            node: "b".into(),
            epoch: 2,
            previous: Some("a".into()),
            since_generation: 0
        }
    );
    assert!(!cluster.set_active_if("sg1", Some(&first), &b).await.unwrap(), "stale expected");
    assert!(cluster.set_active_if("sg1", Some(&a5), &b).await.unwrap());
    assert!(!cluster.update_active_since("sg1", &a5, 9).await.unwrap(), "an older epoch");
    assert!(cluster.update_active_since("sg1", &b, 9).await.unwrap());
    assert_eq!(
        cluster.active("sg1").await.unwrap().unwrap(),
        ActiveRecord {
            node: "b".into(),
            epoch: 2,
            previous: Some("a".into()),
            since_generation: 9
        }
    );
    assert!(!cluster.update_active_since("sg2", &b, 1).await.unwrap(), "no record at all");

    // A record written before `previous` and `since_generation` existed still parses, and can be
    // compared-and-swapped from.
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.unwrap();
    let key = format!("{}active/sg3", cluster.prefix());
    raw.put(key.as_str(), r#"{"node":"a","epoch":3}"#, None).await.unwrap();
    let old = cluster.active("sg3").await.unwrap().unwrap();
    assert_eq!(
        old,
        ActiveRecord { node: "a".into(), epoch: 3, previous: None, since_generation: 0 }
    );
    assert!(cluster.set_active_if("sg3", Some(&old), &old.next("c")).await.unwrap());
    assert_eq!(cluster.active("sg3").await.unwrap().unwrap().epoch, 4);
}

/// Campaigns until elected, failing after [`WAIT`] saying `what`; every "not yet" is reported on
/// `not_yet` (if given) so a test can order itself after the first wait ran out.
async fn campaign_until_elected(
    cluster: &Cluster,
    node: &str,
    lease: i64,
    what: &str,
    not_yet: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> PrimaryHandle {
    let deadline = Instant::now() + WAIT + CAMPAIGN_WAIT;
    loop {
        match cluster.campaign_primary(node, lease).await.unwrap() {
            Some(h) => return h,
            None => {
                if let Some(tx) = &not_yet {
                    let _ = tx.send(());
                }
            }
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
    }
}

/// Polls `primary()` until it names `node`, or fails after [`WAIT`] saying `what`.
async fn wait_primary(cluster: &Cluster, node: Option<&str>, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = cluster.primary().await.unwrap();
        if p.as_deref() == node {
            return;
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}; primary is {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_and_the_next_takes_over_when_its_lease_goes() {
    let etcd = Etcd::start();
    let ca = connect(&etcd, "DAG1").await;
    let cb = connect(&etcd, "DAG1").await;
    assert_eq!(ca.primary().await.unwrap(), None, "nobody before anyone campaigns");
    let la = ca.register_member(&member("a"), 2).await.unwrap();
    let lb = cb.register_member(&member("b"), 2).await.unwrap();

    let ha = ca.campaign_primary("a", la.lease_id()).await.unwrap().expect("a is elected at once");
    assert_eq!(ha.node(), "a");
    assert_eq!(ha.lease(), la.lease_id());
    assert_eq!(cb.primary().await.unwrap().as_deref(), Some("a"));
    assert!(ca.still_primary(&ha).await.unwrap());
    // Campaigning again with the same lease keeps the same election key: still primary, at once.
    let ha2 = ca.campaign_primary("a", la.lease_id()).await.unwrap().expect("a again, at once");
    assert!(ca.still_primary(&ha2).await.unwrap());
    assert!(ca.still_primary(&ha).await.unwrap(), "the same key and revision");

    // b waits: its campaign runs out without being elected, and a stays the only primary.
    assert!(cb.campaign_primary("b", lb.lease_id()).await.unwrap().is_none(), "b is not elected");
    assert_eq!(ca.primary().await.unwrap().as_deref(), Some("a"));
    assert!(ca.still_primary(&ha).await.unwrap());

    // a's lease goes (as when a dies): b, campaigning in a loop, becomes primary.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let b_task = {
        let (cb, lease) = (cb.clone(), lb.lease_id());
        tokio::spawn(async move {
            campaign_until_elected(&cb, "b", lease, "b to be elected after a's lease", Some(tx))
                .await
        })
    };
    // Once b has waited through a whole campaign at least once, a's lease goes.
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("b's campaign to run out once while a is primary")
        .expect("b's campaign loop to be running");
    la.revoke().await;
    let hb = tokio::time::timeout(WAIT + CAMPAIGN_WAIT, b_task)
        .await
        .expect("b to be elected once a's lease was revoked")
        .unwrap();
    assert_eq!(hb.node(), "b");
    assert!(!ca.still_primary(&ha).await.unwrap(), "a is no longer primary");
    assert!(cb.still_primary(&hb).await.unwrap());
    assert_eq!(ca.primary().await.unwrap().as_deref(), Some("b"));
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_loop_outlasts_the_request_timeout_until_the_primary_resigns() {
    let etcd = Etcd::start();
    let ca = connect(&etcd, "DAG1").await;
    let cb = connect(&etcd, "DAG1").await;
    let la = ca.register_member(&member("a"), 10).await.unwrap();
    let lb = cb.register_member(&member("b"), 10).await.unwrap();
    let ha = ca.campaign_primary("a", la.lease_id()).await.unwrap().expect("a is elected at once");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let b_task = {
        let (cb, lease) = (cb.clone(), lb.lease_id());
        tokio::spawn(async move {
            campaign_until_elected(&cb, "b", lease, "b to be elected after a resigned", Some(tx))
                .await
        })
    };
    // Two "not yet"s: b's loop has gone past the 3 s request timeout and keeps campaigning.
    for n in 1..=2 {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("b's campaign to run out (#{n}) while a is primary"))
            .expect("b's campaign loop to be running");
    }
    assert_eq!(ca.primary().await.unwrap().as_deref(), Some("a"), "a is still primary");
    assert!(ca.still_primary(&ha).await.unwrap());

    ca.resign_primary(ha.clone()).await.unwrap();
    assert!(!ca.still_primary(&ha).await.unwrap(), "resigned");
    let hb = tokio::time::timeout(WAIT + CAMPAIGN_WAIT, b_task)
        .await
        .expect("b to be elected once a resigned")
        .unwrap();
    assert!(cb.still_primary(&hb).await.unwrap());
    wait_primary(&ca, Some("b"), "primary() to name b").await;
    cb.resign_primary(hb).await.unwrap();
    wait_primary(&ca, None, "nobody to be primary once b resigned too").await;
    drop((la, lb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_renewed_advances_with_etcd_and_stops_without_it() {
    let mut etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    let lease = cluster.register_member(&member("a"), 2).await.unwrap();
    assert_eq!(lease.ttl(), Duration::from_secs(2));
    let granted = lease.last_renewed();
    assert!(granted.elapsed() < lease.ttl(), "fresh at registration");

    // Renewals advance it (every third of the TTL).
    let deadline = Instant::now() + WAIT;
    while lease.last_renewed() <= granted {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for last_renewed to advance");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without etcd it stops advancing: its age grows past the TTL (what makes an active fence).
    etcd.stop();
    let deadline = Instant::now() + WAIT;
    while lease.last_renewed().elapsed() <= lease.ttl() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for last_renewed to age past the TTL with etcd stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = lease.last_renewed();

    // Back with etcd, it advances again (renewed, or re-granted).
    etcd.restart();
    let deadline = Instant::now() + WAIT;
    while lease.last_renewed() <= stale {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for last_renewed to advance after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lease.last_renewed().elapsed() < lease.ttl());
}

#[tokio::test]
async fn a_failover_is_refused_while_the_old_actives_member_key_lives() {
    let etcd = Etcd::start();
    let cluster = connect(&etcd, "DAG1").await;
    let a = cluster.register_member(&member("a"), 5).await.unwrap();
    let first = ActiveRecord::first("a");
    assert!(cluster.set_active_if("sg1", None, &first).await.unwrap());
    let to_b = first.next("b");
    // a's lease is alive (it came back, or never left): it may be taking commits.
    assert!(!cluster.fail_over_if("sg1", &first, &to_b).await.unwrap(), "a is still a member");
    assert_eq!(cluster.active("sg1").await.unwrap().unwrap(), first, "nothing moved");
    a.revoke().await;
    assert!(cluster.fail_over_if("sg1", &first, &to_b).await.unwrap(), "a's lease is gone");
    assert_eq!(cluster.active("sg1").await.unwrap().unwrap(), to_b);
}
