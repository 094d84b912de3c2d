//! OpenFactory's MCP server.
//!
//! Only this crate knows JSON-RPC and MCP. It exposes the planning core, the
//! catalog and the store as MCP tools over three transports: legacy HTTP+SSE
//! (`/api/mcp/sse` + `/api/mcp/messages`), Streamable HTTP (`/api/mcp`), and
//! stdio.

pub mod app;
pub mod http;
pub mod metrics;
pub mod owner;
pub mod recipes;
pub mod sse;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

pub use app::App;
pub use http::HostPolicy;
use openfactory_store::OwnerId;
pub use owner::OwnerPolicy;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

/// Serve MCP over HTTP until `shutdown` is cancelled; then close every
/// stream and return once in-flight requests are done.
pub async fn serve_http(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    owners: OwnerPolicy,
    hosts: HostPolicy,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = http::router(app, Arc::new(owners), hosts, shutdown.clone());
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Serve one MCP session on stdin/stdout, as the local user.
pub async fn serve_stdio(app: Arc<App>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = tools::OpenFactoryServer::new(
        app,
        Arc::new(OwnerPolicy::default()),
        Some(OwnerId::local()),
    );
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
