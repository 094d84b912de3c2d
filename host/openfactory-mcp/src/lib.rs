//! OpenFactory's MCP server, and the HTTP server it shares.
//!
//! Only this crate knows JSON-RPC and MCP. It serves the operations of
//! `openfactory-service` as MCP tools over three transports: legacy HTTP+SSE
//! (`/api/mcp/sse` + `/api/mcp/messages`), Streamable HTTP (`/api/mcp`), and
//! stdio; and the account and key API (`/api/auth/*`, `/api/mcp-keys`). The
//! HTTP server puts the pages it is given (the web console) behind the same
//! Host check and rate limits.

pub mod auth_http;
pub mod http;
pub mod jsonrpc;
pub mod limits;
pub mod sse;
pub mod tools;
pub mod wording;

use std::net::SocketAddr;
use std::sync::Arc;

pub use http::HostPolicy;
use openfactory_service::{App, OwnerPolicy};
use openfactory_store::OwnerId;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

/// Serve MCP, the key API and `pages` over HTTP until `shutdown` is
/// cancelled; then close every stream and return once in-flight requests are
/// done.
pub async fn serve_http(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    owners: Arc<OwnerPolicy>,
    hosts: HostPolicy,
    pages: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = http::router(app, owners, hosts, pages, shutdown.clone());
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

/// Serve one MCP session on stdin/stdout (newline-delimited JSON-RPC), as
/// the local user. A malformed line is answered with a JSON-RPC error; the
/// session ends when stdin closes.
pub async fn serve_stdio(app: Arc<App>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{FramedRead, LinesCodec};

    const MAX_LINE: usize = 4 * 1024 * 1024;
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines_rx.recv().await {
            if stdout
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });

    let (to_server, from_client) = tokio::sync::mpsc::channel(64);
    let errors = lines_tx.clone();
    tokio::spawn(async move {
        let mut input = FramedRead::new(
            tokio::io::stdin(),
            LinesCodec::new_with_max_length(MAX_LINE),
        );
        while let Some(line) = input.next().await {
            let reply = match line {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => match jsonrpc::parse(line.as_bytes()) {
                    Ok(message) => {
                        if to_server.send(message).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Err(error) => error,
                },
                Err(e) => jsonrpc::error(
                    serde_json::Value::Null,
                    jsonrpc::PARSE_ERROR,
                    &format!("parse error: {e}"),
                ),
            };
            if errors.send(reply.to_string()).await.is_err() {
                break;
            }
        }
        // stdin closed: dropping `to_server` ends the session.
    });

    let sink = tokio_util::sync::PollSender::new(lines_tx)
        .sink_map_err(|e| std::io::Error::other(e.to_string()))
        .with(|message: rmcp::model::ServerJsonRpcMessage| async move {
            serde_json::to_string(&message).map_err(std::io::Error::other)
        });
    let server = tools::OpenFactoryServer::new(
        app,
        Arc::new(OwnerPolicy::default()),
        Some(OwnerId::local()),
    );
    let running = server
        .serve((
            Box::pin(sink),
            tokio_stream::wrappers::ReceiverStream::new(from_client),
        ))
        .await?;
    running.waiting().await?;
    writer.abort();
    Ok(())
}
