//! What keeps a web page the operator happens to open from using the server: browsers send
//! requests to 127.0.0.1 on any page's behalf, and a page whose name is re-pointed at
//! 127.0.0.1 (DNS rebinding) even reads the answers.
//!
//! - Without a token, only a loopback `Host` (`localhost`, `127.x.x.x`, `[::1]`) is served, so
//!   a rebound name gets nothing.
//! - A request that changes something (any method but GET, HEAD, OPTIONS) is refused when a
//!   browser says it comes from elsewhere: an `Origin` that is neither this server (its
//!   `Host`) nor the configured public origin (`--public-origin`, for a reverse proxy that
//!   rewrites `Host`), or `Sec-Fetch-Site: cross-site` / `same-site`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::Shared;

/// Lets through what a browser could not have sent on another site's behalf.
pub async fn same_origin(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if app.token.is_none() && !host_is_loopback(headers) {
        return ApiError::status(
            StatusCode::FORBIDDEN,
            "this server answers only to a loopback Host (localhost, 127.0.0.1, [::1]) unless \
             CONVEYOR_TOKEN is set",
        )
        .into_response();
    }
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !reads && !from_here(headers, app.public_origin.as_deref()) {
        return ApiError::status(
            StatusCode::FORBIDDEN,
            "refused: a browser sent this request from another site",
        )
        .into_response();
    }
    next.run(request).await
}

/// The host name of the `Host` header, without its port.
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)?
        .to_str()
        .ok()?
        .trim()
        .to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().map(|h| format!("[{h}]"));
    }
    Some(match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host,
    })
}

/// True for a loopback `Host`, or none (browsers always send one).
fn host_is_loopback(headers: &HeaderMap) -> bool {
    match host_name(headers) {
        None => headers.get(header::HOST).is_none(),
        Some(name) => {
            name == "localhost"
                || name.ends_with(".localhost")
                || name == "[::1]"
                || name
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// False when a browser says the request comes from another site: neither this server (its
/// `Host`) nor `public_origin` (`scheme://host[:port]`, the address users reach it at).
pub fn from_here(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if matches!(text("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return false;
    }
    if let (Some(origin), Some(public)) = (text("origin"), public_origin) {
        if origin.eq_ignore_ascii_case(public) {
            return true;
        }
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn only_loopback_hosts_pass_without_a_token() {
        for host in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "127.1.2.3",
        ] {
            assert!(host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
        for host in [
            "evil.example:7070",
            "192.168.1.5",
            "[::2]:80",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
    }

    #[test]
    fn requests_from_other_sites_are_told_apart() {
        let here = |pairs| from_here(&headers(pairs), None);
        assert!(here(&[("host", "127.0.0.1:7070")]));
        assert!(here(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7070")
        ]));
        assert!(!here(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "https://evil.example")
        ]));
        assert!(!here(&[
            ("host", "127.0.0.1:7070"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!here(&[("origin", "null"), ("host", "x")]));
    }

    #[test]
    fn the_public_origin_passes_behind_a_proxy_that_rewrites_host() {
        let public = Some("https://jobs.example.com");
        let proxied = |origin| headers(&[("host", "127.0.0.1:7070"), ("origin", origin)]);
        assert!(from_here(&proxied("https://jobs.example.com"), public));
        assert!(from_here(&proxied("HTTPS://JOBS.EXAMPLE.COM"), public));
        assert!(!from_here(&proxied("https://jobs.example.com"), None));
        assert!(!from_here(&proxied("http://jobs.example.com"), public));
        assert!(!from_here(&proxied("https://evil.example"), public));
        let cross = headers(&[
            ("origin", "https://jobs.example.com"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!from_here(&cross, public));
    }
}
