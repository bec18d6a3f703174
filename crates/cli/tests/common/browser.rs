//! A headless Chromium for the console's tests, driven through chromedriver (WebDriver):
//! started on a free loopback port, ended by its process group when dropped, and the waits
//! the tests share (each with a deadline, failing with what it waited for and the page).
//!
//! Without chromedriver a test skips, saying so; under CI (`CI=true`) it fails instead.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// How long any one wait of the browser may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// chromedriver (and the Chromium it starts, in its process group), ended by its PID even
/// when the test fails.
pub struct Driver {
    child: Child,
    pub port: u16,
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

pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// Starts chromedriver on a free loopback port, or says why the test cannot run.
pub fn start_driver() -> Option<Driver> {
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
pub fn driver_ready(port: u16) -> bool {
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

pub async fn browser(driver: &Driver) -> Client {
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
pub async fn wait_for(c: &Client, css: &str, what: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let page = c.source().await.unwrap_or_default();
            panic!("waited {WAIT:?} for {what} ({css}): {e}\npage:\n{page}")
        }
    }
}

/// Waits until the element `css` holds `text`.
pub async fn wait_for_text(c: &Client, css: &str, text: &str) -> String {
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

pub async fn screenshot(c: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The text of the element `css` names, which must be there now.
pub async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Clicks the button `css` names and accepts the confirmation it asks for.
pub async fn click_confirmed(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    c.accept_alert().await.unwrap();
}
