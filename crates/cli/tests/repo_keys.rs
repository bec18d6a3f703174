//! `shadowcopy backup init` and `backup key add|list|remove`, through the binary: a new
//! repository is encrypted under the password given, a key added opens it, a key removed no
//! longer does, and the key in use and the last key are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shadowcopy");

/// Runs `shadowcopy backup <args>` with no password in the environment (unless `env` gives
/// one) and no terminal.
fn backup(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("backup")
        .args(args)
        .env_remove("SHADOWCOPY_PASSWORD")
        .env_remove("SHADOWCOPY_PASSWORD_FILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keys_are_added_listed_and_removed_through_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let (first, second) = (dir.path().join("first.pass"), dir.path().join("second.pass"));
    // A trailing newline, as an editor leaves it, is not part of the password.
    std::fs::write(&first, "first password\n").unwrap();
    std::fs::write(&second, "second password").unwrap();

    // Without a password, and no terminal to ask on, nothing is created.
    let err = fails(backup(&["init", "--repo", s(&repo)], &[]));
    assert!(err.contains("no password of the new repository given"), "{err}");
    assert!(!repo.join("repository.json").exists());

    let out =
        ok(backup(&["init", "--repo", s(&repo), "--password-file", s(&first), "--json"], &[]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["encryption"], "xchacha20-poly1305", "{out}");
    let first_key = v["key"].as_str().unwrap().to_string();

    // The password from the environment opens it, without the newline.
    let list = |pass: &[(&str, &str)]| backup(&["key", "list", "--repo", s(&repo), "--json"], pass);
    let keys: serde_json::Value =
        serde_json::from_str(&ok(list(&[("SHADOWCOPY_PASSWORD", "first password")]))).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");

    let out = ok(backup(
        &[
            "key",
            "add",
            "--repo",
            s(&repo),
            "--password-file",
            s(&first),
            "--new-password-file",
            s(&second),
        ],
        &[],
    ));
    assert!(out.starts_with("Added key "), "{out}");

    let keys: serde_json::Value =
        serde_json::from_str(&ok(list(&[("SHADOWCOPY_PASSWORD_FILE", s(&second))]))).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let current: Vec<bool> = keys.iter().map(|k| k["current"].as_bool().unwrap()).collect();
    assert_eq!(current, [false, true], "the second password opens the second key: {keys:?}");

    // The key in use cannot be removed.
    let remove = |pass: &Path| {
        backup(&["key", "remove", "--repo", s(&repo), "--password-file", s(pass), &first_key], &[])
    };
    let err = fails(remove(&first));
    assert!(err.contains("cannot be removed"), "{err}");
    let out = ok(remove(&second));
    assert!(out.contains(&first_key), "{out}");

    // The old password no longer opens the repository; the new one does.
    let err = fails(list(&[("SHADOWCOPY_PASSWORD_FILE", s(&first))]));
    assert!(err.contains("wrong password or no key matches"), "{err}");
    ok(list(&[("SHADOWCOPY_PASSWORD_FILE", s(&second))]));
    // No password at all, and no terminal: said so, with where a password can come from.
    let err = fails(list(&[]));
    assert!(err.contains("encrypted") && err.contains("--password-file"), "{err}");
}

#[test]
fn init_can_opt_out_of_encryption_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("clear");
    let out = ok(backup(&["init", "--repo", s(&repo), "--insecure-no-encryption"], &[]));
    assert!(out.contains("UNENCRYPTED"), "{out}");
    let config = std::fs::read_to_string(repo.join("repository.json")).unwrap();
    assert!(config.contains("\"encryption\": \"none\""), "{config}");
    // A clear repository has no keys to manage.
    let err = fails(backup(&["key", "list", "--repo", s(&repo)], &[]));
    assert!(err.contains("not encrypted"), "{err}");
    // And a second init in the same place is refused.
    let err = fails(backup(&["init", "--repo", s(&repo), "--insecure-no-encryption"], &[]));
    assert!(err.contains("already holds a repository"), "{err}");
}

#[test]
fn init_takes_a_compression_setting_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("lz4");
    let out = ok(backup(
        &["init", "--repo", s(&repo), "--insecure-no-encryption", "--compression", "lz4", "--json"],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["compression"], "lz4", "{out}");
    let config = std::fs::read_to_string(repo.join("repository.json")).unwrap();
    assert!(config.contains("\"compression\": \"lz4\""), "{config}");
    // Without the option: the default, said in the report.
    let other = dir.path().join("default");
    let out = ok(backup(&["init", "--repo", s(&other), "--insecure-no-encryption", "--json"], &[]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let default = backup::repo::Compression::default().to_string();
    assert_eq!(v["compression"].as_str(), Some(default.as_str()), "{out}");
    // An unknown setting is refused before anything is created, naming the choices.
    let bad = dir.path().join("bad");
    let err = fails(backup(
        &["init", "--repo", s(&bad), "--insecure-no-encryption", "--compression", "gzip"],
        &[],
    ));
    assert!(err.contains("gzip") && err.contains("zstd[:LEVEL]"), "{err}");
    assert!(!bad.join("repository.json").exists());
}
