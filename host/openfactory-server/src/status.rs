//! What operators and their monitors read: `/healthz` and `/metrics`. They
//! answer for any Host and are never rate limited, so that a probe or a
//! scraper that addresses the server by its pod address gets through.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openfactory_service::App;
use serde_json::json;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let body = json!({
        "status": "ok",
        "features": app.planner.plugins.stats().plugins,
        "templates": app.planner.catalog.templates.len(),
        "sse_sessions": app.metrics.sse_sessions.get(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
