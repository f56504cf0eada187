//! The OpenAPI document served at `/v1/openapi.json` describes exactly the routes the server
//! registers: a route added without its documentation (or documented and gone) fails here.

use std::collections::BTreeSet;

use conveyor_http::{OPENAPI, ROUTES};

#[test]
fn the_document_lists_exactly_the_served_routes() {
    let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/") && *path != "/v1/openapi.json")
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), format!("/v1{path}")))
        .collect();
    assert_eq!(
        documented, served,
        "assets/openapi.json and the router disagree"
    );
    for open in ["/healthz", "/v1/openapi.json"] {
        assert!(paths.contains_key(open), "{open} undocumented");
    }
}
