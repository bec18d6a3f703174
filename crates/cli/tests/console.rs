//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver) against a node run by the real binary. The assertions are on the DOM; a
//! screenshot of each page is written under `target/tmp/console-screenshots/` for a person.
//!
//! Without chromedriver the test skips, saying so; under CI (`CI=true`) it fails instead.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use browser::{
    browser, click_confirmed, screenshot, start_driver, text_of, wait_for, wait_for_text,
};
use common::{Served, config, logged_port, raw_http};
use fantoccini::Locator;

const TOKEN: &str = "console-token-0123456789";

/// One form POST over plain TCP; the status and the whole answer (headers and body).
fn post_form(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    (text.split_whitespace().nth(1).unwrap().parse().unwrap(), text)
}

/// What the console answers without a browser: no page without a session, the login's
/// cookie, and the API accepting that cookie in place of the token.
fn check_http(port: u16) {
    let tcp = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    for path in ["/ui/", "/ui/app.js", "/ui/style.css"] {
        let mut s = tcp();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 303"), "{path} without a session: {text}");
        assert!(text.to_ascii_lowercase().contains("location: /ui/login"), "{text}");
    }
    let (code, text) = post_form(port, "/ui/login", "token=wrong-token-0123456789");
    assert_eq!(code, 401, "{text}");
    assert!(
        text.contains("not this node&#39;s API token")
            || text.contains("not this node's API token"),
        "{text}"
    );
    assert!(!text.to_ascii_lowercase().contains("set-cookie"), "{text}");
    let (code, text) = post_form(port, "/ui/login", &format!("token={TOKEN}"));
    assert_eq!(code, 303, "{text}");
    let cookie = text
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .unwrap_or_else(|| panic!("no session cookie: {text}"))
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains(TOKEN), "the cookie holds the token: {cookie}");
    let session = cookie.split(';').next().unwrap();
    let (code, body) = raw_http(tcp(), "GET", "/v1/store", &format!("Cookie: {session}\r\n"));
    assert_eq!(code, 200, "the API refused the session cookie: {body}");
    let (code, _) = raw_http(tcp(), "GET", "/v1/store", "Cookie: shadowcopy_session=forged\r\n");
    assert_eq!(code, 401, "the API took a forged session");
    let (code, _) = raw_http(tcp(), "GET", "/ui/", &format!("Cookie: {session}\r\n"));
    assert_eq!(code, 200);
}

#[test]
fn the_console_logs_in_shows_the_node_and_draws_a_backups_timeline() {
    let Some(driver) = start_driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("\n[api]\ntcp = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    let log = dir.path().join("node.log");
    let node = Served::start_logged(dir.path(), &config(dir.path(), &extra), &log);
    let port = logged_port(&log);
    check_http(port);
    let repo = dir.path().join("repo");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = browser(&driver).await;
        let base = format!("http://127.0.0.1:{port}");

        // No cookie: the page sends the browser to the login.
        c.goto(&format!("{base}/ui/")).await.unwrap();
        wait_for(&c, "#token", "the login form").await;
        assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
        screenshot(&c, "login").await;

        // A wrong token: the login again, with the error.
        c.find(Locator::Id("token")).await.unwrap().send_keys("not-the-token-0000").await.unwrap();
        c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
        wait_for_text(&c, "#login-error", "not this node's API token").await;

        // The right one: the overview, with the storage group and the shadow storage.
        c.find(Locator::Id("token")).await.unwrap().send_keys(TOKEN).await.unwrap();
        c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
        let sg = wait_for(&c, "#storage-groups tr[data-sg='SG1']", "storage group SG1").await;
        assert!(sg.text().await.unwrap().contains("mounted"));
        wait_for(&c, "#shadow-storage tr[data-volume]", "a volume's shadow storage").await;
        wait_for(&c, "#live[data-live='yes']", "the live event stream").await;
        screenshot(&c, "overview").await;

        // Jobs: a refused backup shows the API's error text; a real one runs from the page.
        c.goto(&format!("{base}/ui/#/jobs")).await.unwrap();
        wait_for(&c, "#backup-form", "the backup form").await;
        c.find(Locator::Id("backup-sg")).await.unwrap().send_keys("NOPE").await.unwrap();
        c.find(Locator::Id("backup-repo"))
            .await
            .unwrap()
            .send_keys(repo.to_str().unwrap())
            .await
            .unwrap();
        c.find(Locator::Id("backup-run")).await.unwrap().click().await.unwrap();
        c.accept_alert().await.unwrap();
        let refused = wait_for_text(&c, "#action-result", "Refused:").await;
        assert!(refused.contains("NOPE"), "the API's error names the storage group: {refused}");
        let sg_input = c.find(Locator::Id("backup-sg")).await.unwrap();
        sg_input.clear().await.unwrap();
        sg_input.send_keys("SG1").await.unwrap();
        c.find(Locator::Id("backup-run")).await.unwrap().click().await.unwrap();
        c.accept_alert().await.unwrap();
        let link = wait_for(&c, "#backup-job", "the backup's report").await;
        let row =
            wait_for(&c, "#jobs tr[data-job] td[data-state='succeeded']", "the job listed").await;
        assert_eq!(row.text().await.unwrap(), "succeeded");
        screenshot(&c, "jobs").await;

        // Its timeline: lanes per component, the event IDs on the marks, the freeze as a span.
        link.click().await.unwrap();
        wait_for(&c, "#timeline .mark[data-event-id='2006']", "the backup's last engine step")
            .await;
        for id in [8000, 9606, 2005, 9811, 9608, 2001, 2003, 8007, 2006] {
            wait_for(&c, &format!("#timeline .mark[data-event-id='{id}']"), &format!("event {id}"))
                .await;
        }
        for lane in ["coordinator", "store", "engine", "requester"] {
            wait_for(&c, &format!(".lane[data-lane$='/{lane}']"), &format!("the {lane} lane"))
                .await;
        }
        wait_for(&c, "[data-span='2001-2003']", "the freeze window").await;
        wait_for(&c, "[data-span='hold']", "the hold").await;
        assert_eq!(
            c.find(Locator::Id("job-state")).await.unwrap().text().await.unwrap(),
            "succeeded"
        );
        screenshot(&c, "timeline").await;

        // Repository: the page opens on the repository of the backup run from the Jobs page,
        // lists its set (a full, its own chain) with the repository's figures, and verifies
        // it from the page.
        c.goto(&format!("{base}/ui/#/repository")).await.unwrap();
        let set = wait_for(&c, "#sets tr[data-set]", "the backup's set").await;
        let set_id = set.attr("data-set").await.unwrap().unwrap();
        wait_for(&c, &format!("#sets tr[data-set='{set_id}'] td[data-type='full']"), "a full")
            .await;
        wait_for(
            &c,
            &format!("#sets tr[data-set='{set_id}'] td[data-chain='{set_id}']"),
            "the full heading its own chain",
        )
        .await;
        wait_for(&c, "#repo-figures #dedup-ratio", "the deduplication figures").await;
        wait_for(&c, "td[data-verify='never']", "the set not verified yet").await;
        click_confirmed(&c, &format!("button[data-verify-set='{set_id}']")).await;
        let verified = wait_for_text(&c, "#action-result", "verified").await;
        assert!(verified.starts_with(&format!("Set {}", &set_id[..8])), "{verified}");
        wait_for(
            &c,
            &format!("#sets tr[data-set='{set_id}'] td[data-verify='ok']"),
            "the set's verify state",
        )
        .await;
        screenshot(&c, "repository").await;

        // Logs: SG1's generation and checkpoint, and what its backup's truncation did (224)
        // or why it did nothing (225).
        c.goto(&format!("{base}/ui/#/logs")).await.unwrap();
        let generation =
            wait_for_text(&c, "tr[data-logs='SG1/active'] td[data-generation]", "0x").await;
        assert!(generation.starts_with("0x"), "{generation}");
        let checkpoint = text_of(&c, "tr[data-logs='SG1/active'] td[data-checkpoint]").await;
        assert!(checkpoint.starts_with("0x"), "{checkpoint}");
        let attempt = wait_for(
            &c,
            "tr[data-logs='SG1/active'] td[data-attempt='224'], \
             tr[data-logs='SG1/active'] td[data-attempt='225']",
            "the backup's truncation attempt",
        )
        .await;
        if attempt.attr("data-attempt").await.unwrap().as_deref() == Some("225") {
            wait_for(&c, "tr[data-logs='SG1/active'] [data-limit]", "why nothing was truncated")
                .await;
        }
        screenshot(&c, "logs").await;

        c.close().await.unwrap();
    });
    drop(driver);
    assert!(node.terminate().success());
}
