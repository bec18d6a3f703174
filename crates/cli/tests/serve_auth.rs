//! The API's doors: the socket is owner-only, TCP needs the token.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Served, config, logged_port, raw_http};

const TOKEN: &str = "s3cret-token-0123456789";

#[test]
fn socket_is_owner_only_and_tcp_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0: the node binds a free port and logs which, so no other process can take it
    // between our choosing it and the node binding it.
    let extra = format!("\n[api]\ntcp = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    // A stale socket file from a previous run is replaced.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("data/api.sock")).unwrap());
    let log = dir.path().join("node.log");
    let node = Served::start_logged(dir.path(), &config(dir.path(), &extra), &log);
    let port = logged_port(&log);

    let mode = std::fs::metadata(&node.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    let tcp = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (code, body) = raw_http(tcp(), "GET", "/v1/writers", "");
    assert_eq!(code, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    assert!(!body.contains(TOKEN));
    let (code, _) =
        raw_http(tcp(), "GET", "/metrics", "Authorization: Bearer wrong-token-0123456789\r\n");
    assert_eq!(code, 401);
    let (code, _) =
        raw_http(tcp(), "GET", "/v1/writers", &format!("Authorization: Bearer {TOKEN}\r\n"));
    assert_eq!(code, 200);

    // The command over TCP, with the token from the environment.
    let out = std::process::Command::new(common::BIN)
        .args(["--node", &format!("http://127.0.0.1:{port}"), "store", "status"])
        .env("SHADOWCOPY_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Storage group SG1: mounted"));
    let out = std::process::Command::new(common::BIN)
        .args(["--node", &format!("http://127.0.0.1:{port}"), "store", "status"])
        .env_remove("SHADOWCOPY_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    // Nothing the node wrote, at its most verbose, shows the token: not at start-up, not for
    // the requests that carried it, not for those that were refused.
    assert!(node.terminate().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("(bearer token required)"), "the log was captured:\n{logged}");
    assert!(!logged.contains(TOKEN), "the token is in the node's log:\n{logged}");
}
