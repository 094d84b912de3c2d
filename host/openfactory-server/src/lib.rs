//! OpenFactory's HTTP server: one port for MCP (`openfactory_mcp::router`),
//! the web console (`openfactory_web::router`), the account and key API
//! (`api`), the worker API (`workers`), `/healthz` and `/metrics` (`status`).
//!
//! From the outside in, every request passes:
//!
//! 1. `headers`: the security headers, on every response whatever made it;
//! 2. `trace`: a span per request;
//! 3. `host`: the Host/Origin check (not for `/healthz`);
//! 4. the body limit;
//! 5. `limits`: the per-caller rate limits (not for `/healthz` and static
//!    files);
//! 6. on the MCP routes, `caller`: a credential (an API key, an OAuth access
//!    token) becomes its account, or 401 with the OAuth challenge.
//!
//! The OAuth endpoints (`oauth`: discovery documents, registration, token,
//! revocation) pass 1–5; their consent page is the web console's.
//!
//! The worker API (`workers`, for `openfactory worker` on
//! other machines) passes 1–3 only: workers authenticate every call with
//! their token, report several times a second, and upload whole ISOs.

mod api;
mod caller;
mod headers;
mod host;
mod limits;
mod oauth;
mod status;
mod trace;
mod workers;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use openfactory_service::{App, OwnerPolicy};
use openfactory_web::WebSettings;
use tokio_util::sync::CancellationToken;

pub use host::HostPolicy;

/// Largest request body: an MCP message (a 2 MiB recipe and its framing).
pub const MAX_BODY: usize = openfactory_mcp::MAX_MESSAGE;

/// Everything the server serves, behind every layer. With `metrics_token`,
/// `/metrics` answers only callers that send it as a bearer token.
pub fn router(
    app: Arc<App>,
    owners: Arc<OwnerPolicy>,
    hosts: HostPolicy,
    web: WebSettings,
    metrics_token: Option<&str>,
    shutdown: CancellationToken,
) -> Router {
    // rmcp checks Host on Streamable HTTP too; its list must not disagree.
    let mcp = openfactory_mcp::router(
        app.clone(),
        owners.clone(),
        hosts.allowed_hosts.clone(),
        shutdown,
    )
    .layer(middleware::from_fn_with_state(
        caller::Callers {
            app: app.clone(),
            owners: owners.clone(),
        },
        caller::resolve,
    ));

    let hosts = Arc::new(hosts);
    let workers = workers::router(app.clone())
        .layer(middleware::from_fn_with_state(hosts.clone(), host::check));

    let checked = Router::new()
        .merge(mcp)
        .merge(api::router(app.clone(), owners.clone()))
        .merge(oauth::router(app.clone()))
        .merge(status::metrics_router(app.clone(), metrics_token))
        .merge(openfactory_web::router(app.clone(), owners.clone(), web))
        .layer(middleware::from_fn_with_state(
            limits::Limits::new(owners),
            limits::check,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(hosts, host::check));

    Router::new()
        .merge(status::healthz_router(app))
        .merge(workers)
        .merge(checked)
        .layer(middleware::from_fn(trace::request))
        .layer(middleware::from_fn(headers::security))
}

/// Serve [`router`] on `listener` until `shutdown` is cancelled; then close
/// every stream and return once in-flight requests are done.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    owners: Arc<OwnerPolicy>,
    hosts: HostPolicy,
    web: WebSettings,
    metrics_token: Option<&str>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router(app, owners, hosts, web, metrics_token, shutdown.clone());
    use axum::serve::ListenerExt;
    // Small request/response exchanges: do not let Nagle and delayed ACKs add 40 ms.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
