//! The API in process: a node served on a temporary socket, spoken to in raw HTTP/1.1.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use node::{Config, Node};
use serde_json::{Value, json};

fn config(dir: &Path) -> Config {
    node::sample::Sample { shadow_max: None, ..Default::default() }.config(dir).unwrap()
}

/// A node and its API, served on a thread until dropped.
struct Api {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    node: Arc<Node>,
}

impl Api {
    fn start(dir: &Path) -> Api {
        let node = Arc::new(Node::start(config(dir)).unwrap());
        let socket = dir.join("api.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (n, s) = (node.clone(), socket.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(node::service::serve(n, &s, None, None, async {
                let _ = rx.await;
            }))
            .unwrap();
        });
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "waited 60 s for the API socket {} to answer",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Api { socket, stop: Some(tx), thread: Some(thread), node }
    }

    /// One request; the status, the content type and the (de-chunked) body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        accept: &str,
    ) -> (u16, String, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: {accept}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, mut rest) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let body = if header("transfer-encoding") == "chunked" {
            let mut out = String::new();
            loop {
                let (size, after) = rest.split_once("\r\n").unwrap();
                let n = usize::from_str_radix(size, 16).unwrap();
                if n == 0 {
                    break;
                }
                out.push_str(&after[..n]);
                rest = &after[n + 2..];
            }
            out
        } else {
            rest.to_string()
        };
        (status, header("content-type"), body)
    }

    fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let b = body.map(|b| b.to_string());
        let (status, ctype, text) = self.call(method, path, b.as_deref(), "application/json");
        assert!(ctype.starts_with("application/json"), "{status} {ctype}: {text}");
        (status, serde_json::from_str(&text).unwrap())
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
        assert!(self.node.shutdown().is_empty());
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[test]
fn errors_have_a_status_and_a_stable_code() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();

    let (s, v) = api.json("POST", "/v1/store/NOPE/mount", None);
    assert_eq!((s, code(&v)), (404, "no_such_storage_group"));
    let (s, v) = api.json("POST", "/v1/store/SG1/mount", None);
    assert_eq!((s, code(&v)), (409, "already_mounted"));
    let (s, v) = api.json(
        "POST",
        "/v1/backup",
        Some(json!({"type": "incremental", "sg": "SG1", "repo": repo})),
    );
    assert_eq!((s, code(&v)), (409, "no_base_backup"), "{v}");
    let (s, v) =
        api.json("POST", "/v1/backup", Some(json!({"type": "weekly", "sg": "SG1", "repo": repo})));
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let (s, v) =
        api.json("POST", "/v1/backup/verify", Some(json!({"repo": repo, "set": "abcdef"})));
    assert!(s == 404 || s == 400, "{s} {v}");
    let (s, v) = api.json(
        "POST",
        "/v1/backup",
        Some(json!({"type": "full", "sg": "SG1", "repo": "relative/repo"})),
    );
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let (s, v) = api.json("POST", "/v1/shadows", Some(json!({"for": "nosuchvolume"})));
    assert_eq!((s, code(&v)), (404, "no_such_volume"), "{v}");
    let (s, v) = api.json("POST", "/v1/shadows/delete", Some(json!({"all": true, "oldest": true})));
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let (s, v) = api.json("GET", "/v1/events?source=nobody", None);
    assert_eq!((s, code(&v)), (400, "bad_request"));
    // The framework's own rejections are JSON too.
    let (s, _, text) = api.call("POST", "/v1/backup", Some("{not json"), "application/json");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((s, code(&v)), (400, "bad_request"), "{text}");
    let (s, v) = api.json("DELETE", "/v1/writers", None);
    assert_eq!((s, code(&v)), (405, "method_not_allowed"));
    let (s, v) = api.json("GET", "/v1/mail/count?sg=SG1", None);
    assert_eq!((s, code(&v)), (400, "bad_request"));
}

#[test]
fn a_backup_streams_its_progress_then_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let (s, v) =
        api.json("POST", "/v1/mail/load", Some(json!({"sg": "SG1", "db": "DB1", "messages": 40})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["delivered"], 40);

    let body = json!({"type": "full", "sg": "SG1", "repo": repo}).to_string();
    let (s, ctype, text) = api.call("POST", "/v1/backup", Some(&body), "application/x-ndjson");
    assert_eq!((s, ctype.as_str()), (200, "application/x-ndjson"));
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["event"] == "step"), "{text}");
    // File counts run from 0 to every file of the set.
    let files: Vec<(u64, u64)> = lines
        .iter()
        .filter(|l| l["event"] == "files")
        .map(|l| (l["done"].as_u64().unwrap(), l["total"].as_u64().unwrap()))
        .collect();
    let last = lines.last().unwrap();
    let set_files = last["report"]["set"]["files"].as_u64().unwrap();
    assert_eq!(files.first(), Some(&(0, set_files)), "{text}");
    assert_eq!(files.last(), Some(&(set_files, set_files)), "{text}");
    assert!(files.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{files:?}");
    assert_eq!(last["event"], "done", "{text}");
    assert_eq!(last["report"]["set"]["type"], "full");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["event"] != "done" && l["event"] != "error"));

    // Verifying the set streams its two steps, then hash-checked bytes up to the set's.
    let set_id = last["report"]["set"]["id"].as_str().unwrap();
    let set_bytes = last["report"]["set"]["bytes"].as_u64().unwrap();
    let body = json!({"repo": repo, "set": set_id}).to_string();
    let (s, _, text) = api.call("POST", "/v1/backup/verify", Some(&body), "application/x-ndjson");
    assert_eq!(s, 200);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&str> =
        lines.iter().filter(|l| l["event"] == "step").filter_map(|l| l["what"].as_str()).collect();
    assert_eq!(
        steps,
        [
            "checking every chunk and file hash and every database page",
            "checking database headers and log records"
        ],
        "{text}"
    );
    let done: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "bytes")
        .map(|l| l["done"].as_u64().unwrap())
        .collect();
    assert_eq!(done.last(), Some(&set_bytes), "{text}");
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let end = lines.last().unwrap();
    assert_eq!(
        (&end["event"], &end["report"]["verified"]),
        (&json!("done"), &json!(true)),
        "{text}"
    );

    // A failing job streams its error as the last line.
    let body = json!({"type": "differential", "sg": "SG2", "repo": repo}).to_string();
    let (s, _, text) = api.call("POST", "/v1/backup", Some(&body), "application/x-ndjson");
    assert_eq!(s, 200);
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error", "{text}");
    assert_eq!(last["error"]["code"], "no_such_storage_group", "{text}");

    // The figures of the backup are in the metrics.
    let (s, ctype, metrics) = api.call("GET", "/metrics", None, "text/plain");
    assert_eq!(s, 200);
    assert!(ctype.starts_with("text/plain"));
    assert!(metrics.contains("shadowcopy_backup_bytes{"), "{metrics}");
    assert!(metrics.contains("shadowcopy_backups_failed_total 1"), "{metrics}");
}

#[test]
fn shadows_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let (s, v) = api.json("POST", "/v1/shadows", Some(json!({"for": "db"})));
    assert_eq!(s, 200, "{v}");
    let id = v["shadows"][0]["id"].as_str().unwrap().to_string();
    let (_, v) = api.json("GET", "/v1/shadows", None);
    assert_eq!(v["shadows"][0]["id"], id.as_str());
    assert_eq!(v["shadows"][0]["persistent"], true);
    let (s, v) = api.json("POST", "/v1/shadows/delete", Some(json!({"shadow": id})));
    assert_eq!(s, 200, "{v}");
    let (_, v) = api.json("GET", "/v1/shadows", None);
    assert_eq!(v["shadows"], json!([]));
    let (s, v) = api.json("POST", "/v1/shadows/delete", Some(json!({"shadow": id})));
    assert_eq!((s, code(&v)), (404, "no_such_shadow"), "{v}");
    let (s, v) = api.json(
        "POST",
        "/v1/shadowstorage",
        Some(json!({"for": "db", "on": "logs", "max_size": "64MiB"})),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.json(
        "POST",
        "/v1/shadowstorage/resize",
        Some(json!({"for": "db", "max_size": "lots"})),
    );
    assert_eq!((s, code(&v)), (400, "bad_request"));
}

/// The values of the series whose line starts with `prefix` (name and, if given, labels).
fn series(metrics: &str, prefix: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn metrics_count_backups_restores_commits_and_preserved_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let (s, v) =
        api.json("POST", "/v1/mail/load", Some(json!({"sg": "SG1", "db": "DB1", "messages": 60})));
    assert_eq!(s, 200, "{v}");
    let (s, backup) =
        api.json("POST", "/v1/backup", Some(json!({"type": "full", "sg": "SG1", "repo": repo})));
    assert_eq!(s, 200, "{backup}");
    let set = backup["set"]["id"].as_str().unwrap();
    let to = dir.path().join("restored");
    let (s, restore) = api.json(
        "POST",
        "/v1/restore",
        Some(json!({"repo": repo, "set": set, "to": to.to_str().unwrap()})),
    );
    assert_eq!(s, 200, "{restore}");
    let (s, v) =
        api.json("POST", "/v1/backup", Some(json!({"type": "full", "sg": "NOPE", "repo": repo})));
    assert_eq!(s, 404, "{v}");

    let (_, _, m) = api.call("GET", "/metrics", None, "text/plain");
    let one = |name: &str| {
        let v = series(&m, name);
        assert_eq!(v.len(), 1, "{name} once in\n{m}");
        v[0]
    };
    assert_eq!(one("shadowcopy_backups_completed_total "), 1.0);
    assert_eq!(one("shadowcopy_backups_failed_total "), 1.0);
    assert_eq!(one("shadowcopy_backup_bytes_total "), backup["bytes"].as_f64().unwrap());
    assert!(one("shadowcopy_backup_stored_bytes_total ") > 0.0, "{m}");
    assert_eq!(one("shadowcopy_restores_completed_total "), 1.0);
    assert_eq!(one("shadowcopy_restores_failed_total "), 0.0);
    assert_eq!(one("shadowcopy_restore_bytes_total "), restore["bytes"].as_f64().unwrap());
    assert!(one("shadowcopy_restore_bytes_total ") > 0.0, "{m}");
    // The backup's snapshot set: its commit took at least as long as it held writes.
    let commit = series(&m, "shadowcopy_snapshot_commit_seconds{");
    let hold = series(&m, "shadowcopy_snapshot_hold_seconds{");
    assert_eq!((commit.len(), hold.len()), (1, 1), "{m}");
    assert!(m.contains("origin=\"backup\""), "{m}");
    assert!(commit[0] > 0.0 && commit[0] >= hold[0], "{m}");
    // Both volumes are listed; the backup's header stamp (written while its snapshot still
    // existed) preserved at least one block of the database volume.
    assert_eq!(series(&m, "shadowcopy_blocks_preserved_total{volume=\"logs\"}").len(), 1, "{m}");
    assert!(one("shadowcopy_blocks_preserved_total{volume=\"db\"}") > 0.0, "{m}");
}

#[test]
fn storage_groups_and_databases_are_created_at_runtime_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let sg = |name: &str, extra: Value| {
        let mut body = json!({"name": name, "log_volume": "logs",
                              "database": {"name": "DB1", "volume": "db"}});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    {
        let api = Api::start(dir.path());
        // The defaults: the name as directory, the lowest free prefix, <sg>/<db>.edb.
        let (s, v) = api.json("POST", "/v1/store", Some(sg("SG2", json!({}))));
        assert_eq!(s, 200, "{v}");
        let created = &v["storage_group"];
        assert_eq!(created["prefix"], "E01", "SG1 has E00: {v}");
        assert_eq!((&created["log_dir"], &created["system_dir"]), (&json!("SG2"), &json!("SG2")));
        assert_eq!(created["database"][0]["path"], "SG2/DB1.edb");
        assert!(dir.path().join("db/SG2/DB1.edb").exists());

        // Refused, each with a code and a message naming what collides or is wrong.
        let refused = |body: Value, status: u16, code: &str, text: &str| {
            let (s, v) = api.json("POST", "/v1/store", Some(body));
            assert_eq!((s, self::code(&v)), (status, code), "{v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(text), "{text:?} not in {message:?}");
        };
        refused(sg("SG2", json!({})), 409, "already_exists", "SG2");
        refused(sg("SG1", json!({})), 409, "already_exists", "SG1");
        refused(sg("SG3", json!({"log_dir": "SG1", "prefix": "E00"})), 409, "collides", "SG1");
        refused(sg("SG3", json!({"system_dir": "SG2", "prefix": "e01"})), 409, "collides", "SG2");
        refused(
            sg("SG3", json!({"database": {"name": "X", "volume": "db", "path": "SG1/DB1.edb"}})),
            409,
            "collides",
            "database DB1 of storage group SG1",
        );
        refused(sg("SG3", json!({"log_volume": "nope"})), 400, "bad_request", "`log_volume`");
        refused(sg("bad name", json!({})), 400, "bad_request", "`name`");
        refused(sg("SG3", json!({"prefix": "X01"})), 400, "bad_request", "`prefix`");
        refused(sg("SG3", json!({"log_dir": "../etc"})), 400, "bad_request", "`log_dir`");
        refused(
            sg("SG3", json!({"database": {"name": "DB1", "volume": "db", "path": "/abs.edb"}})),
            400,
            "bad_request",
            "`database.path`",
        );
        std::fs::create_dir_all(dir.path().join("logs/old")).unwrap();
        std::fs::write(dir.path().join("logs/old/E07.chk"), b"left over").unwrap();
        refused(
            sg("SG3", json!({"log_dir": "old", "prefix": "E07"})),
            409,
            "collides",
            "E07.chk already exists",
        );
        let (_, v) = api.json("GET", "/v1/store", None);
        assert_eq!(v["storage_groups"].as_array().unwrap().len(), 2, "nothing refused was kept");

        // Databases, in a storage group of the configuration and in a created one.
        let (s, v) = api.json(
            "POST",
            "/v1/store/SG1/databases",
            Some(json!({"name": "DB2", "volume": "db"})),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["database"]["path"], "SG1/DB2.edb");
        let (s, v) = api.json(
            "POST",
            "/v1/store/SG1/databases",
            Some(json!({"name": "DB2", "volume": "db", "path": "SG1/other.edb"})),
        );
        assert_eq!((s, code(&v)), (409, "already_exists"), "{v}");
        let (s, v) = api.json(
            "POST",
            "/v1/store/NOPE/databases",
            Some(json!({"name": "DB2", "volume": "db"})),
        );
        assert_eq!((s, code(&v)), (404, "no_such_storage_group"), "{v}");
        api.json("POST", "/v1/store/SG2/dismount", None);
        let (s, v) = api.json(
            "POST",
            "/v1/store/SG2/databases",
            Some(json!({"name": "DB2", "volume": "db"})),
        );
        assert_eq!((s, code(&v)), (409, "not_mounted"), "{v}");
        api.json("POST", "/v1/store/SG2/mount", None);
        let (s, v) = api.json(
            "POST",
            "/v1/store/SG2/databases",
            Some(json!({"name": "DB2", "volume": "db"})),
        );
        assert_eq!(s, 200, "{v}");

        for (g, d) in [("SG1", "DB2"), ("SG2", "DB1"), ("SG2", "DB2")] {
            let (s, v) =
                api.json("POST", "/v1/mail/load", Some(json!({"sg": g, "db": d, "messages": 10})));
            assert_eq!(s, 200, "{g}/{d}: {v}");
        }
        let (s, v) = api.json(
            "POST",
            "/v1/backup",
            Some(json!({"type": "full", "sg": "SG2", "repo": repo})),
        );
        assert_eq!(s, 200, "a created storage group backs up: {v}");
    }

    // After a restart everything created is mounted again, with its mail.
    let api = Api::start(dir.path());
    let (_, v) = api.json("GET", "/v1/store", None);
    let groups: Vec<(String, bool, Vec<String>)> = v["storage_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let dbs = g["databases"].as_array().unwrap();
            (
                g["name"].as_str().unwrap().to_string(),
                g["mounted"] == true,
                dbs.iter().map(|d| d["name"].as_str().unwrap().to_string()).collect(),
            )
        })
        .collect();
    let db12 = vec!["DB1".to_string(), "DB2".to_string()];
    assert_eq!(groups, [("SG1".into(), true, db12.clone()), ("SG2".into(), true, db12)]);
    for (g, d) in [("SG1", "DB2"), ("SG2", "DB1"), ("SG2", "DB2")] {
        let (s, v) = api.json("GET", &format!("/v1/mail/count?sg={g}&db={d}"), None);
        assert_eq!((s, v["messages"].as_u64()), (200, Some(10)), "{g}/{d}: {v}");
    }
    let (s, v) = api.json("POST", "/v1/store", Some(sg("SG2", json!({}))));
    assert_eq!((s, code(&v)), (409, "already_exists"), "{v}");
}

/// The router and the OpenAPI document come from one table: every route of the table is
/// answered by the router (with its method), every path and method of the document is in the
/// table, and the reverse.
#[test]
fn every_route_is_in_the_openapi_document_and_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let (s, doc) = api.json("GET", "/v1/openapi.json", None);
    assert_eq!(s, 200, "{doc}");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut table: Vec<(String, String)> = api::ENDPOINTS
        .iter()
        .map(|e| (e.method.as_str().to_string(), e.path.to_string()))
        .collect();
    table.sort();
    assert_eq!(documented, table);
    for (method, path) in &table {
        // A storage group that does not exist: the route answers, and changes nothing.
        let path = path.replace("{sg}", "NOPE");
        // The event stream stays open while the node runs: not read to its end here (the
        // CLI's api_e2e reads its first event).
        if path != "/v1/events/stream" {
            let (status, _, body) = api.call(method, &path, Some(""), "application/json");
            assert!(
                !body.contains("no_such_endpoint") && !body.contains("method_not_allowed"),
                "{method} {path}: {status} {body}"
            );
        }
        let other = if method == "GET" { "POST" } else { "GET" };
        if !table.iter().any(|(m, p)| m == other && p.replace("{sg}", "NOPE") == path) {
            let (status, _, body) = api.call(other, &path, Some(""), "application/json");
            assert_eq!(status, 405, "{other} {path}: {body}");
        }
    }
}

/// The event trail of one job, by id or prefix.
fn trail(api: &Api, job: &str) -> (u16, Value) {
    api.json("GET", &format!("/v1/events?job={job}"), None)
}

fn ids(v: &Value) -> Vec<u64> {
    v["events"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

#[test]
fn a_restore_is_a_job_of_its_own_and_jobs_are_found_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let (s, v) =
        api.json("POST", "/v1/mail/load", Some(json!({"sg": "SG1", "db": "DB1", "messages": 10})));
    assert_eq!(s, 200, "{v}");
    let (s, backup) =
        api.json("POST", "/v1/backup", Some(json!({"type": "full", "sg": "SG1", "repo": repo})));
    assert_eq!(s, 200, "{backup}");
    let backup_job = backup["job"].as_str().unwrap().to_string();
    let to = dir.path().join("restored").join("SG1");
    let to = to.to_str().unwrap();
    let (s, restore) = api.json(
        "POST",
        "/v1/restore",
        Some(json!({"repo": repo, "set": backup["set"]["id"], "to": to})),
    );
    assert_eq!(s, 200, "{restore}");
    let restore_job = restore["job"].as_str().unwrap().to_string();
    assert_ne!(restore_job, backup_job);

    // The restore's events are under its own job, not the backup's.
    let (s, v) = trail(&api, &backup_job);
    assert_eq!(s, 200, "{v}");
    for id in [8204, 8205, 9626] {
        assert!(!ids(&v).contains(&id), "{id} in the backup's trail: {v}");
    }
    // Found by a prefix, as set ids are; the start names the whole target path.
    let (s, v) = trail(&api, &restore_job[..8]);
    assert_eq!(s, 200, "{v}");
    for id in [8204, 8205, 9626] {
        assert!(ids(&v).contains(&id), "{id} not in the restore's trail: {v}");
    }
    let start = v["events"].as_array().unwrap().iter().find(|e| e["id"] == 8204).unwrap();
    assert!(start["message"].as_str().unwrap().contains(to), "{start}");
    // Generations in the message in hex as in the log file names; the field stays a number.
    let done = v["events"].as_array().unwrap().iter().find(|e| e["id"] == 8205).unwrap();
    assert!(done["message"].as_str().unwrap().contains("generations 0x"), "{done}");
    assert!(done["fields"]["first"].is_u64(), "{done}");

    // Two jobs sharing a prefix: it is refused, naming both.
    use events::EventSink;
    let twins = ["abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002"];
    for j in twins {
        api.node.events().emit(
            &events::catalog::STORE_RESTORE_FAILED,
            Some(j.parse().unwrap()),
            json!({"storage_group": "SG1", "error": "test"}),
        );
    }
    let (s, v) = trail(&api, "abcdef01");
    assert_eq!((s, code(&v)), (400, "ambiguous_job_id"), "{v}");
    for j in twins {
        assert!(v["error"]["message"].as_str().unwrap().contains(j), "{v}");
    }
    let (s, v) = trail(&api, "abcdef01-0000-4000-8000-000000000002");
    assert_eq!((s, ids(&v)), (200, vec![9627]), "{v}");
    // No such job; not a prefix at all.
    let (s, v) = trail(&api, "ffffffffffff");
    assert_eq!((s, code(&v)), (404, "no_such_job"), "{v}");
    let (s, v) = trail(&api, "xyz");
    assert_eq!((s, code(&v)), (400, "bad_job_id"), "{v}");
}

#[test]
fn the_callers_mistakes_are_4xx_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let backup = |kind: &str, sg: &str, repo: &str| {
        api.json("POST", "/v1/backup", Some(json!({"type": kind, "sg": sg, "repo": repo})))
    };
    let is_4xx = |s: u16, v: &Value| {
        assert!((400..500).contains(&s), "{s}: {v}");
        assert!(!["internal", "coordinator_error"].contains(&code(v)), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 20, "{v}");
    };
    let (s, v) = backup("incremental", "SG1", repo);
    eprintln!("incremental without full: {s} {v}");
    is_4xx(s, &v);
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (s, v) = backup("full", "SG1", file.to_str().unwrap());
    eprintln!("repo is a file: {s} {v}");
    is_4xx(s, &v);
    let (s, v) = backup("full", "NOPE", repo);
    eprintln!("unknown sg: {s} {v}");
    is_4xx(s, &v);
    let (s, v) = api.json("POST", "/v1/store/SG1/dismount", None);
    assert_eq!(s, 200, "{v}");
    let (s, v) = backup("full", "SG1", repo);
    eprintln!("dismounted: {s} {v}");
    is_4xx(s, &v);
}
