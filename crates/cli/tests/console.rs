//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver) against a node run by the real binary. The assertions are on the DOM; a
//! screenshot of each page is written under `target/tmp/console-screenshots/` for a person.
//!
//! Without chromedriver the test skips, saying so; under CI (`CI=true`) it fails instead.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Served, config, logged_port, raw_http};
use fantoccini::{Client, ClientBuilder, Locator};

const TOKEN: &str = "console-token-0123456789";

/// How long any one wait of the browser may take.
const WAIT: Duration = Duration::from_secs(60);

/// chromedriver (and the Chromium it starts, in its process group), ended by its PID even
/// when the test fails.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        // The group is chromedriver's own (started with process_group(0)): the browser goes
        // with it.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// Starts chromedriver on a free loopback port, or says why the test cannot run.
fn start_driver() -> Option<Driver> {
    let Some(bin) = on_path("chromedriver") else {
        assert_ne!(
            std::env::var("CI").ok().as_deref(),
            Some("true"),
            "CI must have chromedriver (Debian's chromium-driver, in .ci/run's APT_PACKAGES)"
        );
        eprintln!("skipped: no chromedriver on PATH (apt-get install chromium chromium-driver)");
        return None;
    };
    let port = free_port();
    let mut command = Command::new(bin);
    command
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().unwrap();
    let driver = Driver { child, port, profile: tempfile::tempdir().unwrap() };
    let until = Instant::now() + WAIT;
    loop {
        if driver_ready(port) {
            return Some(driver);
        }
        assert!(
            Instant::now() < until,
            "chromedriver did not answer on port {port} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether chromedriver answers `/status` with ready. It keeps the connection open after its
/// answer (whatever `Connection` says), so the answer is read up to its JSON, within a
/// deadline, not to the end of the stream.
fn driver_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // chromedriver refuses a Host that is not local.
    if write!(s, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains("\"ready\":true") {
            return true;
        }
    }
    false
}

async fn browser(driver: &Driver) -> Client {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1400,1000".into(),
    ];
    args.push(format!("--user-data-dir={}", driver.profile.path().display()));
    let mut options = serde_json::json!({ "args": args });
    if let Some(chromium) = on_path("chromium") {
        options["binary"] = chromium.to_str().unwrap().into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap()
}

/// Waits for the element `css`, failing with what it waited for.
async fn wait_for(c: &Client, css: &str, what: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let page = c.source().await.unwrap_or_default();
            panic!("waited {WAIT:?} for {what} ({css}): {e}\npage:\n{page}")
        }
    }
}

/// Waits until the element `css` holds `text`.
async fn wait_for_text(c: &Client, css: &str, text: &str) -> String {
    let until = Instant::now() + WAIT;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && t.contains(text)
        {
            return t;
        }
        if Instant::now() > until {
            let page = c.source().await.unwrap_or_default();
            panic!("waited {WAIT:?} for {text:?} in {css}\npage:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

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

        c.close().await.unwrap();
    });
    drop(driver);
    assert!(node.terminate().success());
}
