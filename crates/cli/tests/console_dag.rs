//! The web console's Overview of a real database availability group, in a real browser: etcd
//! and three `shadowcopy serve` processes (`common/dag.rs`), node a's console in headless
//! Chromium (`common/browser.rs`). The page shows the three members and the copies with their
//! queues, and suspends and resumes a copy through the API; a screenshot is written under
//! `target/tmp/console-screenshots/`.
//!
//! Without chromedriver the test skips, saying so; under CI (`CI=true`) it fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/dag.rs"]
mod dag;
#[path = "../../replication/tests/common/etcd.rs"]
mod etcd;

use browser::{
    browser, click_confirmed, screenshot, start_driver, text_of, wait_for, wait_for_text,
};
use common::logged_port;
use dag::Dag;
use fantoccini::Locator;

const TOKEN: &str = "console-dag-token-0123456789";

#[test]
fn the_console_shows_the_dag_and_suspends_and_resumes_a_copy() {
    let Some(driver) = start_driver() else { return };
    // Node a (SG1 active) serves the console on a loopback TCP port of its own choosing.
    let dag = Dag::start_edited(&["a", "b", "c"], |node, text| {
        if node == "a" {
            format!("{text}\n[api]\ntcp = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
        } else {
            text
        }
    });
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    dag.wait_status("b", "Healthy");
    dag.wait_status("c", "Healthy");
    let port = logged_port(&dag.home("a").join("node.log"));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = browser(&driver).await;
        c.goto(&format!("http://127.0.0.1:{port}/ui/")).await.unwrap();
        wait_for(&c, "#token", "the login form").await;
        c.find(Locator::Id("token")).await.unwrap().send_keys(TOKEN).await.unwrap();
        c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();

        // The three members, up; each copy with its status and queues.
        for n in ["a", "b", "c"] {
            wait_for(&c, &format!("#members tr[data-member='{n}'] td.ok"), "a member up").await;
        }
        wait_for(&c, "#live[data-live='yes']", "the live event stream").await;
        wait_for_text(&c, "#copies tr[data-copy='SG1@a']", "active").await;
        for n in ["b", "c"] {
            let row =
                wait_for_text(&c, &format!("#copies tr[data-copy='SG1@{n}']"), "Healthy").await;
            assert!(row.contains("passive"), "{row}");
        }
        let queues = text_of(&c, "#copies tr[data-copy='SG1@b'] td.num").await;
        assert!(queues.parse::<u32>().is_ok(), "the copy queue is a number: {queues}");
        screenshot(&c, "dag-overview").await;

        // Suspend b's copy from the page: confirmed, then the overview follows it live.
        click_confirmed(&c, "button[data-action='suspend'][data-node='b']").await;
        wait_for_text(&c, "#action-result[data-outcome='done']", "suspended").await;
        wait_for_text(&c, "#copies tr[data-copy='SG1@b']", "Suspended").await;
        assert_eq!(dag.row("b").unwrap()["status"], "Suspended", "the API agrees");
        screenshot(&c, "dag-suspended").await;

        // A switchover to the suspended copy is refused, with the API's reason.
        click_confirmed(&c, "button[data-action='activate'][data-node='b']").await;
        let refused = wait_for_text(&c, "#action-result[data-outcome='refused']", "Refused:").await;
        assert!(refused.contains("is suspended"), "the API's reason: {refused}");

        // Resume it: Healthy again.
        click_confirmed(&c, "button[data-action='resume'][data-node='b']").await;
        wait_for_text(&c, "#action-result[data-outcome='done']", "resumed").await;
        wait_for_text(&c, "#copies tr[data-copy='SG1@b']", "Healthy").await;
        screenshot(&c, "dag-resumed").await;

        c.close().await.unwrap();
    });
    drop(driver);
    dag.wait_status("b", "Healthy");
}
