//! The committed OpenAPI document (`api/openapi.json`) is the one the code generates.
//! Regenerate it after changing a route: `CAPSTAN_BLESS=1 cargo test -p api --test openapi`.

#[test]
fn openapi_document_is_committed() {
    let generated = api::openapi::document()
        .to_pretty_json()
        .expect("the document serializes")
        + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var("CAPSTAN_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "api/openapi.json differs from the document the code generates; \
         regenerate it with CAPSTAN_BLESS=1 cargo test -p api --test openapi and commit it"
    );
}

#[test]
fn every_route_but_the_probes_requires_a_bearer_token_in_the_document() {
    let doc = serde_json::to_value(api::openapi::document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let open = ["/healthz", "/readyz"].contains(&path.as_str());
            assert_eq!(secured, !open, "{method} {path}");
            assert!(
                open || path.starts_with("/v1/") || path == "/metrics",
                "{path}"
            );
        }
    }
    assert!(operations >= 22, "{operations}");
}
