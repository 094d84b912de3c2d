//! What operators and their monitors read: `/healthz` and `/metrics`.
//!
//! `/healthz` answers for any Host and is never rate limited, so that a probe
//! that addresses the server by its pod address gets through; it says only
//! that the server is up. `/metrics` (counts of sessions, builds, failures)
//! is served like the API: behind the Host check and the rate limits, and,
//! when the operator sets a metrics token, only to `Authorization: Bearer
//! <token>` (checked in constant time).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openfactory_service::App;
use serde_json::json;

pub fn healthz_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// `/metrics`; with `token`, only for a caller that sends it.
pub fn metrics_router(app: Arc<App>, token: Option<&str>) -> Router {
    // What is kept is the signer's tag of the token, which the check compares in constant time.
    let expected = token.map(|t| app.signer.tag(PURPOSE, t));
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Metrics { app, expected }))
}

const PURPOSE: &str = "metrics-token";

struct Metrics {
    app: Arc<App>,
    expected: Option<String>,
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

async fn metrics(State(m): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &m.expected {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !sent.is_some_and(|t| m.app.signer.check_tag(PURPOSE, t, expected)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs the metrics token: send Authorization: Bearer <token> \
                 (the server's --metrics-token)\n",
            )
                .into_response();
        }
    }
    let mut response = (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.app.metrics.render(),
    )
        .into_response();
    if m.expected.is_some() {
        response.extensions_mut().insert(crate::limits::Verified);
    }
    response
}
