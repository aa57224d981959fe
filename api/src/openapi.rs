//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations: [`routes`] registers each handler with the router *and* the document
//! in one step (utoipa-axum), so a route cannot exist undocumented. The document is
//! served at `/openapi.json`, with Swagger UI at `/docs` (its assets are vendored into
//! the binary at build time). `api/openapi.json` is the committed copy; the test
//! `openapi_document_is_committed` fails when it drifts (regenerate with
//! `UPDATE_EXPECT=1 cargo test -p api --test openapi`).

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    AppState, clients, machines, metrics, plans, pools, probes, queue, webhooks, whatif,
    worker_api, workers,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "capstan",
        description = "Operator API of capstan, a provisioner control plane for fleets of task workers. \
            Every /v1 route and /metrics take `Authorization: Bearer cap_<id>_<secret>` and check one scope \
            (`pools:read:<pool>`, `pools:write:<pool>`, `pools:delete:<pool>`, `workers:read:<pool>`, \
            `workers:drain:<pool>`, `queue:write:<pool>`, `clients:admin`, `metrics:read`, or `*`; a pool \
            pattern may end in `*`). Pool ids hold `/` and may be sent in paths as they are or as %2F.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "pools", description = "Pool specs, their errors and audit log"),
        (name = "queue", description = "The demand signal: queue samples pushed per pool"),
        (name = "plans", description = "What the reconcile loop decided for a pool, and its forecast"),
        (name = "workers", description = "The machines of pools"),
        (name = "machines", description = "Hardware of static pools"),
        (name = "worker agent", description = "Called by `capstan agent` on each worker: registration with a one-time token or a static machine's secret, then heartbeats and interruption notices with the worker's own credential"),
        (name = "clients", description = "API clients and their tokens"),
        (name = "webhooks", description = "Pushes from queue systems, authenticated by their signatures"),
        (name = "metrics", description = "Prometheus metrics (text format 0.0.4)"),
        (name = "probes", description = "Health and readiness, unauthenticated"),
    )
)]
struct ApiDoc;

/// Adds the bearer security scheme every `/v1` route names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("cap_<id>_<secret>".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        let mut worker = Http::new(HttpAuthScheme::Bearer);
        worker.bearer_format = Some("capw_<worker id>_<secret>".into());
        components.add_security_scheme("worker", SecurityScheme::Http(worker));
    }
}

/// Every documented route, with the document being built alongside.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz))
        .routes(routes!(pools::list_pools))
        .routes(routes!(
            pools::get_pool,
            pools::put_pool,
            pools::patch_pool,
            pools::delete_pool
        ))
        .routes(routes!(pools::pool_errors))
        .routes(routes!(pools::pool_audit))
        .routes(routes!(whatif::simulate_pool))
        .routes(routes!(queue::push_queue))
        .routes(routes!(plans::get_plan))
        .routes(routes!(plans::get_forecast))
        .routes(routes!(workers::list_workers))
        .routes(routes!(workers::get_worker))
        .routes(routes!(workers::drain_worker))
        .routes(routes!(worker_api::register))
        .routes(routes!(worker_api::heartbeat))
        .routes(routes!(worker_api::interruption))
        .routes(routes!(machines::register_machine, machines::list_machines))
        .routes(routes!(machines::remove_machine))
        .routes(routes!(clients::create_client, clients::list_clients))
        .routes(routes!(clients::revoke_client))
        .routes(routes!(metrics::metrics))
        .routes(routes!(webhooks::github_webhook))
}

/// The document alone (for the committed copy and its test).
pub fn document() -> Document {
    routes().split_for_parts().1
}

/// `/docs` (Swagger UI) and `/openapi.json`.
pub fn docs_ui(doc: Document) -> SwaggerUi {
    SwaggerUi::new("/docs").url("/openapi.json", doc)
}
