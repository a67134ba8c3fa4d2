//! The status page in a real browser: Debian's headless Chromium, driven over WebDriver
//! by Debian's chromedriver, against a running node. The page must list the queries
//! and its stop button must stop one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::live::{LiveNode, http, push_query_without_idle, tempdir, write_query};
use crate::s3_server::{free_port, wait_until};

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn which(program: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = which("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not installed: run the tests with ./tests/run.sh, which installs Debian's chromium and chromium-driver")
        });
        assert!(
            which("chromium").is_some(),
            "chromium is not installed: run the tests with ./tests/run.sh, which installs Debian's chromium and chromium-driver"
        );
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver: {e}"));
        let driver = Driver { child, port };
        wait_until("chromedriver is ready", Duration::from_secs(30), || {
            driver.call("GET", "/status", None)["value"]["ready"] == true
        });
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (_, _, reply) = http(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        serde_json::from_slice(&reply).unwrap_or(Value::Null)
    }
}

/// A browser session, ended on drop.
struct Browser<'d> {
    driver: &'d Driver,
    session: String,
}

impl<'d> Browser<'d> {
    fn open(driver: &'d Driver) -> Browser<'d> {
        let chromium = which("chromium").unwrap_or_default();
        let created = driver.call(
            "POST",
            "/session",
            Some(json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,800"]
                }
            } } })),
        );
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Browser { driver, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Element ids matching a CSS selector.
    fn find(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )["value"]
            .as_array()
            .map(|found| {
                found
                    .iter()
                    .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn text(&self, css: &str) -> String {
        self.find(css)
            .first()
            .map(|id| {
                self.call("GET", &format!("/element/{id}/text"), None)["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default()
    }

    fn click(&self, css: &str) {
        let id = self
            .find(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("nothing matches {css}"));
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        if let Some(data) = self.call("GET", "/screenshot", None)["value"].as_str()
            && let Ok(png) = base64::engine::general_purpose::STANDARD.decode(data)
        {
            std::fs::write(path, png).ok();
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        self.call("DELETE", "", None);
    }
}

#[test]
fn the_status_page_lists_the_queries_and_its_stop_button_stops_one() {
    let dir = tempdir();
    let sql = push_query_without_idle();
    let first = write_query(dir.path(), "traffic", &sql);
    let second = write_query(
        dir.path(),
        "peaks",
        &sql.replace("COUNT(*) AS n", "MAX(bytes_in) AS n"),
    );
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            first.to_str().unwrap_or_default(),
            second.to_str().unwrap_or_default(),
            "--no-sync",
        ],
        // At info the node logs each stop with the windows choice it was given.
        &[("EDGEFLOW_LOG", "info")],
    );
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&format!("http://127.0.0.1:{}/", node.port));
    wait_until(
        "the page lists both queries",
        Duration::from_secs(30),
        || browser.find("tr[data-query]").len() == 2,
    );
    wait_until(
        "the page shows both running",
        Duration::from_secs(30),
        || {
            browser.text("tr[data-query='traffic'] .state") == "running"
                && browser.text("tr[data-query='peaks'] .state") == "running"
        },
    );
    wait_until(
        "the page shows the node ready",
        Duration::from_secs(30),
        || browser.text("#ready") == "ready",
    );
    // Choose what becomes of the open windows, then stop.
    browser.click("tr[data-query='peaks'] select option[value='close']");
    browser.screenshot(&dir.path().join("before.png"));

    browser.click("tr[data-query='peaks'] button.stop");
    let state = |name: &str| {
        let (_, _, body) = http(
            node.port,
            "GET",
            &format!("/api/v1/queries/{name}"),
            &[],
            b"",
        );
        serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    wait_until(
        "the stop button stops the query",
        Duration::from_secs(30),
        || state("peaks") == "stopped",
    );
    wait_until("the page shows it stopped", Duration::from_secs(30), || {
        browser.text("tr[data-query='peaks'] .state") == "stopped"
    });
    assert_eq!(state("traffic"), "running", "the other query runs on");
    assert_eq!(browser.text("tr[data-query='peaks'] button"), "Start");
    let stopped_with = node.stderr();
    assert!(
        stopped_with.contains("windows=Close"),
        "the stop used the chosen windows=close: {stopped_with}"
    );
    browser.screenshot(&dir.path().join("after.png"));
    if let Ok(keep) = std::env::var("EDGEFLOW_KEEP_SCREENSHOTS") {
        for name in ["before.png", "after.png"] {
            std::fs::copy(
                dir.path().join(name),
                std::path::Path::new(&keep).join(name),
            )
            .ok();
        }
    }
    drop(browser);
    assert_eq!(node.stop().0, Some(0));
}
