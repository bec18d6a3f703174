//! `shadowcopy events --job ID` on a DAG member gathers the job's trail from every member
//! (a surrogate backup logs on the passive copy's node and on the active's): asked of any
//! member, the trail is the same; a member that cannot answer is named, and the others'
//! events still come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dag.rs"]
mod dag;
#[path = "../../replication/tests/common/etcd.rs"]
mod etcd;

use dag::{DEADLINE, Dag};
use serde_json::Value;

/// `GET /v1/events?job=JOB` asked of `node`'s API socket: the status and the answer.
fn events_api(dag: &Dag, node: &str, job: &str) -> (u16, Value) {
    let socket = std::os::unix::net::UnixStream::connect(&dag.node(node).socket).unwrap();
    let (code, body) = common::raw_http(socket, "GET", &format!("/v1/events?job={job}"), "");
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

#[test]
fn a_jobs_trail_comes_from_every_member_and_a_stopped_one_is_named() {
    let mut dag = Dag::start(&["a", "b"]);
    dag.load("a", 50);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");

    // Seeding b ran a coordinator session on the active, a: its job is in a's trail only
    // (the passive's seed events carry no job).
    let served = dag.events("a", &["--source", "replication", "--id", "4110"]);
    let job = served[0]["job"].as_str().unwrap_or_else(|| panic!("{served:?}")).to_string();
    let on_a = dag.events("a", &["--job", &job]);
    assert!(on_a.len() >= 2, "the seed's trail on a: {on_a:?}");
    assert!(on_a.iter().all(|e| e["node"] == "a" && e["job"] == job.as_str()), "{on_a:?}");

    // Asked of b, by a prefix b's own trail does not know: a resolves it and gives its events.
    let via_b = dag.events("b", &["--job", &job[..8]]);
    assert!(
        via_b.len() >= on_a.len() && via_b[..on_a.len()] == on_a[..],
        "b's answer is not a's trail:\nfrom b: {via_b:?}\nfrom a: {on_a:?}"
    );
    let (code, list) = events_api(&dag, "b", &job);
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["unreachable"], serde_json::json!([]), "{list}");
    // The text names each event's node, after its time.
    let text = dag.node("b").cli(&["events", "--job", &job]);
    assert!(text.lines().count() >= on_a.len(), "{text}");
    for line in text.lines() {
        assert_eq!(line.split_whitespace().nth(1), Some("a"), "no node column in {line:?}");
    }
    // Filters apply to the gathered trail.
    let one = dag.events("b", &["--job", &job, "--id", "4110"]);
    assert_eq!(one.len(), 1, "{one:?}");

    // b stopped: a still answers with its own events, and names b, first while b's
    // membership is alive (b does not answer), then once it lapsed (b has a copy, hence a
    // share of trails nobody else can give).
    dag.kill9("b");
    let (code, list) = events_api(&dag, "a", &job);
    assert_eq!(code, 200, "{list}");
    let events = list["events"].as_array().unwrap();
    assert!(events.len() >= on_a.len() && events[..on_a.len()] == on_a[..], "{list}");
    let unreachable = list["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1, "{list}");
    assert!(unreachable[0].as_str().unwrap().starts_with("b: "), "{list}");

    dag.wait_for(DEADLINE, "b's membership to lapse", || {
        let v = dag.node("a").json(&["dag", "status"]);
        let b_up = v["members"].as_array()?.iter().any(|m| m["node"] == "b" && m["up"] == true);
        (!b_up).then_some(())
    });
    let out = dag.node("a").cli_output(&["events", "--job", &job, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= on_a.len() && lines[..on_a.len()] == on_a[..], "{lines:?}");
    assert!(
        stderr.contains("warning") && stderr.contains("b: not a live member"),
        "no warning naming b: {stderr}"
    );
}
