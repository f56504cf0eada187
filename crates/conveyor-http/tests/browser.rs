//! The dashboard in a real browser: Debian's headless chromium, driven through chromedriver's
//! WebDriver protocol (plain HTTP, no extra client). Each page is loaded with real data, a job
//! is found by typing its id into the search box, and a dead letter's Retry button is clicked:
//! the letter leaves the list. A screenshot of each page is saved under the test's output
//! (`target/tmp/dashboard/`).
//!
//! Needs `chromium` and `chromedriver` (`scripts/browser` installs them; `scripts/test` runs it
//! and then requires them). Without them, and without `CONVEYOR_REQUIRE_BROWSER`, the test says
//! SKIPPED.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conveyor::{Registry, WorkerConfig};
use serde_json::{json, Value};
use support::{Api, PATIENCE};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless chromium session in it.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session answer");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Browser {
            driver,
            base: format!("{base}/session/{session}"),
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver answer");
        if answer["value"]["error"].is_string() {
            panic!("webdriver {method} {path}: {answer}");
        }
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.call("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn source(&self) -> String {
        self.call("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (bounded) until the page's address ends with `end`; the source on failure.
    async fn until_at(&self, end: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.url().await.ends_with(end) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "never at {end}: at {}\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn url(&self) -> String {
        self.call("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the viewport as `name`.png under the test's output.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.call("GET", "/screenshot", None).await;
        let png = decode_base64(data.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

/// Standard base64 (WebDriver's screenshot encoding).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

fn browser_available() -> bool {
    let found = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let available = found("chromium") && found("chromedriver");
    if !available && std::env::var_os("CONVEYOR_REQUIRE_BROWSER").is_some() {
        panic!("chromium or chromedriver missing although scripts/browser installed them");
    }
    available
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    if !browser_available() {
        eprintln!("SKIPPED: chromium or chromedriver missing (scripts/browser installs them)");
        return;
    }
    let api = Api::start("sqlite", None).await;
    for (kind, queue) in [("noop", "mail"), ("noop", "mail"), ("echo", "reports")] {
        let job = json!({"kind": kind, "queue": queue, "in": "1h", "payload": {"to": "ada"}});
        api.call("POST", "/v1/jobs", Some(job)).await;
    }
    let (_, job) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"kind": "fail", "queue": "video", "max_attempts": 1})),
        )
        .await;
    let dead = job["id"].as_str().expect("id").to_string();
    let worker = api.conveyor.worker(
        Registry::with_builtins(),
        WorkerConfig {
            queues: vec!["video".into()],
            ..WorkerConfig::default()
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    api.until(&dead, |j| j["state"] == "dead").await;
    // Stopped, so the retried letter waits in its queue instead of dying again.
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
    api.call(
        "POST",
        "/v1/cron",
        Some(json!({"name": "nightly", "expr": "0 3 * * *", "kind": "noop"})),
    )
    .await;

    // A worker of a queue with no jobs, connected while the pages are read.
    let idle = WorkerConfig {
        queues: vec!["thumbnails".into()],
        ..WorkerConfig::default()
    };
    let idle_owner = idle.owner.clone();
    let (stop_idle, idle_stopped) = tokio::sync::oneshot::channel::<()>();
    let idle = tokio::spawn(
        api.conveyor
            .worker(Registry::with_builtins(), idle)
            .run(async move {
                let _ = idle_stopped.await;
            }),
    );

    let browser = Browser::start().await;
    browser.open(&format!("{}/", api.base)).await;
    let page = browser.source().await;
    for queue in ["mail", "reports", "video"] {
        assert!(
            page.contains(&format!("<td>{queue}</td>")),
            "{queue} missing:\n{page}"
        );
    }
    browser.screenshot("queues").await;

    browser.type_into("form.search input[name=id]", &dead).await;
    browser.click("form.search button").await;
    browser.until_at(&format!("/jobs/{dead}")).await;
    let page = browser.source().await;
    assert!(page.contains("always fails"), "{page}");
    browser.screenshot("job").await;

    browser.open(&format!("{}/dead-letter", api.base)).await;
    assert!(browser.source().await.contains(&dead));
    browser.screenshot("dead-letters").await;
    browser
        .click(&format!(
            "form[action=\"/dead-letter/{dead}/retry\"] button"
        ))
        .await;
    browser.until_at("/dead-letter?done=retried").await;
    let page = browser.source().await;
    assert!(page.contains("Put back in its queue"), "{page}");
    assert!(
        !page.contains(&dead),
        "the retried letter is still listed:\n{page}"
    );
    browser.screenshot("dead-letters-after-retry").await;
    let (_, job) = api.call("GET", &format!("/v1/jobs/{dead}"), None).await;
    assert_eq!(job["state"], "available", "{job}");

    browser.open(&format!("{}/cron", api.base)).await;
    assert!(browser.source().await.contains("nightly"));
    browser.screenshot("cron").await;

    browser
        .open(&format!("{}/jobs?state=scheduled&limit=2", api.base))
        .await;
    let page = browser.source().await;
    assert!(page.contains("<td>mail</td>"), "{page}");
    assert!(
        page.contains("id=\"next\""),
        "three scheduled, two a page:\n{page}"
    );
    browser.screenshot("jobs").await;
    browser.click("#next").await;
    let deadline = Instant::now() + PATIENCE;
    while !browser.source().await.contains("<td>reports</td>") {
        assert!(
            Instant::now() < deadline,
            "the next page never showed the third job:\n{}",
            browser.source().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.open(&format!("{}/workers", api.base)).await;
    let page = browser.source().await;
    assert!(page.contains(&idle_owner), "{page}");
    let shot = browser.screenshot("workers").await;
    let _ = stop_idle.send(());
    idle.await.expect("idle worker task").expect("idle worker");
    eprintln!(
        "screenshots in {}",
        shot.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    // Ends the session (chromium exits); chromedriver is killed on drop.
    let _ = browser.http.delete(browser.base.clone()).send().await;
}
