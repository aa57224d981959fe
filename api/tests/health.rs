//! The probe routes, driven in-process through the router.

use api::{AppState, Clock, Readiness, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use store::Store;
use tower::ServiceExt;

/// The app's state over `store`, on a fixed clock.
fn state(store: Store) -> AppState {
    AppState::new(
        store,
        Readiness::default(),
        Clock::new(|| capstan_core::Timestamp::from_unix_secs(1_800_000_000)),
    )
}

async fn get(state: &AppState, path: &str) -> (StatusCode, serde_json::Value) {
    let response = router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn healthz_follows_the_store_and_readyz_the_lifecycle() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let state = state(store.clone());

    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(
        code,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before start-up ends"
    );
    assert_eq!(body["reason"], "starting or shutting down");

    state.readiness.set(true);
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    store.close().await;
    let (code, body) = get(&state, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "store not answering");
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_document_and_swagger_ui_are_served_without_a_token() {
    let state = state(Store::connect("sqlite::memory:").await.unwrap());
    let (code, doc) = get(&state, "/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/pools/{pool_id}"]["put"].is_object());
    let response = router(state.clone())
        .oneshot(Request::get("/docs/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("swagger-ui"), "{html}");
    // The page's assets come from the binary, not from the internet.
    assert!(!html.contains("https://"), "{html}");
}
