//! OpenFactory's MCP server.
//!
//! Only this crate knows JSON-RPC and MCP. It serves the operations of
//! `openfactory-service` as MCP tools over three transports: legacy HTTP+SSE
//! (`/api/mcp/sse` + `/api/mcp/messages`) and Streamable HTTP (`/api/mcp`),
//! each also under `/api/mcp/account` for signed-in callers only,
//! whose routes [`router`] gives to the HTTP server (`openfactory-server`,
//! which puts them behind its Host check, rate limits and API keys); and
//! stdio, which [`serve_stdio`] serves.

pub mod complete;
pub mod events;
pub mod http;
pub mod jsonrpc;
pub mod prompts;
pub mod resources;
pub mod sse;
pub mod tools;
pub mod watch;
pub mod wording;

use std::sync::Arc;

pub use http::{
    ACCOUNT_PATH, MAX_MESSAGE, RESOURCE_PATHS, rate_limited, refused, requires_account,
    resource_path, router,
};
use openfactory_service::{App, OwnerPolicy};
use openfactory_store::OwnerId;
use rmcp::ServiceExt;

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
