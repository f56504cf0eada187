//! What the HTTP tests share: a server over a fresh backend of either engine, and a client.

#![allow(dead_code)] // each test file uses a subset

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conveyor::Conveyor;
use conveyor_http::{router, HttpConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// Longest a polling loop waits: a bound, not a speed claim. A Kafka worker's first job waits
/// for its consumer groups to form, which took over 30 s once while 15 tests started theirs
/// at the same time on one broker.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub fn broker() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        if let Ok(address) = std::env::var("CONVEYOR_TEST_KAFKA") {
            return address;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/dev-broker");
        let out = Command::new(script)
            .args(["start", "--memory"])
            .output()
            .expect("run scripts/dev-broker");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("address")
            .trim()
            .to_string()
    })
}

/// A server over a fresh backend of `engine`, and a client for it.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub conveyor: Conveyor,
    pub token: Option<String>,
    _dir: tempfile::TempDir,
}

pub fn tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_string()
}

impl Api {
    pub async fn start(engine: &str, token: Option<&str>) -> Api {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match engine {
            "sqlite" => format!("sqlite://{}", dir.path().join("api.db").display()),
            // A group of its own too: tests sharing the broker and one group rebalanced each
            // other's workers, and one waited over 120 s for its partition.
            _ => {
                let tag = tag();
                format!(
                    "kafka://{}?prefix=api{tag}.&group=api{tag}&partitions=2&session_timeout=6s",
                    broker()
                )
            }
        };
        let conveyor = Conveyor::connect(&url).await.expect("open backend");
        let config = HttpConfig {
            token: token.map(str::to_string),
            body_limit: 64 * 1024,
            sample_every: Duration::from_millis(100),
            ..HttpConfig::default()
        };
        let app = router(conveyor.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(conveyor_http::serve(listener, app, std::future::pending()));
        Api {
            base,
            client: reqwest::Client::new(),
            conveyor,
            token: token.map(str::to_string),
            _dir: dir,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls a job until `done` holds.
    pub async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, job) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
            if status == StatusCode::OK && done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id}: {status} {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
