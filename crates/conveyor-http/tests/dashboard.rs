//! The dashboard's pages and forms over HTTP, on both engines: real data on each page, job data
//! escaped, security headers, search by id, CSRF-checked actions, sign-in with a token.

mod support;

use std::time::{Duration, Instant};

use conveyor::{Registry, WorkerConfig};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use support::{tag, Api, PATIENCE};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// GET `path`: status, the `Set-Cookie` values, and the body.
async fn get(api: &Api, path: &str, cookie: &str) -> (StatusCode, Vec<String>, String) {
    let response = client()
        .get(format!("{}{path}", api.base))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("get");
    let status = response.status();
    if status == StatusCode::OK {
        let csp = response.headers().get(CONTENT_SECURITY_POLICY);
        let csp = csp.and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp:?}");
    }
    let cookies = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    (status, cookies, response.text().await.expect("body"))
}

/// POSTs a form; the status and where it redirects.
async fn post(api: &Api, path: &str, cookie: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
    let response = client()
        .post(format!("{}{path}", api.base))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    let to = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status(), to)
}

/// `name=value` of a `Set-Cookie` value.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

async fn pages_show_real_data_and_actions_are_csrf_checked(engine: &str) {
    let api = Api::start(engine, None).await;
    let queue = format!("d{}", tag());
    let hostile = json!({"kind": "noop", "queue": queue, "in": "1h",
                         "payload": {"note": "<script>alert(1)</script>"}});
    let (_, job) = api.call("POST", "/v1/jobs", Some(hostile)).await;
    let waiting = job["id"].as_str().expect("id").to_string();
    let doomed = json!({"kind": "fail", "queue": queue, "max_attempts": 1});
    let (_, job) = api.call("POST", "/v1/jobs", Some(doomed)).await;
    let dead = job["id"].as_str().expect("id").to_string();
    let config = WorkerConfig {
        queues: vec![queue.clone()],
        ..WorkerConfig::default()
    };
    let worker = api.conveyor.worker(Registry::with_builtins(), config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    api.until(&dead, |j| j["state"] == "dead").await;
    api.until(&waiting, |j| j["state"] == "scheduled").await;

    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, _, body) = get(&api, "/", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The queue's row, and its chart once the sampler (every 100 ms here) saw it twice.
        if body.contains(&format!("<td>{queue}</td>"))
            && body.contains(&format!("id=\"chart-{queue}\""))
        {
            assert!(body.contains("<polyline class=\"depth\""), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue or chart never shown:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, _, body) = get(&api, &format!("/jobs/{waiting}"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{body}"
    );
    assert!(
        !body.contains("<script>alert"),
        "job data must be escaped:\n{body}"
    );

    let found = client()
        .get(format!("{}/jobs?id={waiting}", api.base))
        .send()
        .await
        .expect("search");
    assert_eq!(found.status(), StatusCode::SEE_OTHER);
    let (status, _, _) = get(&api, "/jobs?id=%3Cb%3Enope", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, cookies, body) = get(&api, "/dead-letter", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&dead), "{body}");
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("conveyor_csrf="))
        .expect("a CSRF cookie");
    assert!(csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("HttpOnly"));
    let cookie = pair(csrf_cookie);
    let token = cookie.trim_start_matches("conveyor_csrf=").to_string();
    assert!(
        body.contains(&format!("value=\"{token}\"")),
        "forms carry the token"
    );

    let (status, _, body) = get(&api, &format!("/jobs?state=dead&queue={queue}"), "").await;
    if engine == "kafka" {
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
        assert!(body.contains("job lists by state"), "{body}");
    } else {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(&format!("href=\"/jobs/{dead}\"")), "{body}");
        assert!(body.contains("always fails"), "{body}");
    }
    let (status, _, _) = get(&api, "/jobs?state=%3Cb%3E", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = get(&api, "/workers", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<h1>Workers</h1>"), "{body}");

    let retry = format!("/dead-letter/{dead}/retry");
    let (status, _) = post(&api, &retry, "", &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no cookie: refused");
    let (status, _) = post(
        &api,
        &retry,
        &cookie,
        &[("csrf", "0123456789abcdef0123456789abcdef")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong token: refused");
    let foreign = client()
        .post(format!("{}{retry}", api.base))
        .header(COOKIE, &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", &token)])
        .send()
        .await
        .expect("post");
    assert_eq!(
        foreign.status(),
        StatusCode::FORBIDDEN,
        "another site's page: refused"
    );
    let (status, to) = post(&api, &retry, &cookie, &[("csrf", &token)]).await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/dead-letter?done=retried")
    );
    api.until(&dead, |j| j["attempt"] == 2).await;

    api.call(
        "POST",
        "/v1/cron",
        Some(json!({"name": "nightly", "expr": "0 3 * * *", "kind": "noop"})),
    )
    .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, _, body) = get(&api, "/cron", "").await;
        assert_eq!(status, StatusCode::OK);
        if body.contains("nightly") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, to) = post(
        &api,
        &format!("/jobs/{waiting}/cancel"),
        &cookie,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{to}");
    api.until(&waiting, |j| j["state"] == "cancelled").await;
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
}

async fn a_token_asks_for_sign_in(engine: &str) {
    let api = Api::start(engine, Some("s3cret")).await;
    let (status, _, _) = get(&api, "/", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = post(&api, "/login", "", &[("token", "wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = client()
        .post(format!("{}/login", api.base))
        .form(&[("token", "s3cret")])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("sign-in cookie")
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let (status, _, body) = get(&api, "/", &pair(&set)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

macro_rules! dashboard_suite {
    ($engine:ident) => {
        mod $engine {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pages_show_real_data_and_actions_are_csrf_checked() {
                super::pages_show_real_data_and_actions_are_csrf_checked(stringify!($engine)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_token_asks_for_sign_in() {
                super::a_token_asks_for_sign_in(stringify!($engine)).await;
            }
        }
    };
}

dashboard_suite!(sqlite);
dashboard_suite!(kafka);
