//! The legacy HTTP+SSE transport (MCP 2024-11-05), bridged onto rmcp.
//!
//! rmcp no longer ships this transport, so it is kept here, small:
//! `GET /api/mcp/sse` opens a session and streams server messages, starting
//! with an `endpoint` event; the client posts JSON-RPC to
//! `/api/mcp/messages?sessionId=…`. Each session is a pair of channels feeding
//! one rmcp service. The session belongs to the client address that opened
//! it; it ends when the stream drops or the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use openfactory_store::OwnerId;
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, PollSender};

use crate::jsonrpc;
use crate::tools::OpenFactoryServer;

pub const SSE_PATH: &str = "/api/mcp/sse";
pub const MESSAGES_PATH: &str = "/api/mcp/messages";
/// The twins that always require a signed-in caller.
pub const ACCOUNT_SSE_PATH: &str = "/api/mcp/account/sse";
pub const ACCOUNT_MESSAGES_PATH: &str = "/api/mcp/account/messages";
const CHANNEL: usize = 64;

struct Session {
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
    owner: OwnerId,
}

/// Open legacy SSE sessions.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.inner.lock().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, id: String, session: Session) {
        self.inner
            .lock()
            .expect("sessions lock")
            .insert(id, session);
    }

    fn remove(&self, id: &str) -> bool {
        self.inner
            .lock()
            .expect("sessions lock")
            .remove(id)
            .is_some()
    }

    fn sender(&self, id: &str, owner: &OwnerId) -> Option<mpsc::Sender<ClientJsonRpcMessage>> {
        let sessions = self.inner.lock().expect("sessions lock");
        sessions
            .get(id)
            .filter(|s| &s.owner == owner)
            .map(|s| s.to_server.clone())
    }
}

/// What the SSE handlers need.
#[derive(Clone)]
pub struct SseState {
    pub sessions: Sessions,
    pub shutdown: CancellationToken,
    pub new_server: Arc<dyn Fn(OwnerId) -> OpenFactoryServer + Send + Sync>,
    pub on_open: Arc<dyn Fn() + Send + Sync>,
    pub on_close: Arc<dyn Fn() + Send + Sync>,
}

/// Removes the session and stops its service when the stream is dropped.
struct Guard {
    id: String,
    state: SseState,
    session: CancellationToken,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.session.cancel();
        if self.state.sessions.remove(&self.id) {
            (self.state.on_close)();
            tracing::info!(session = %self.id, "SSE session closed");
        }
    }
}

/// `GET /api/mcp/sse` (or its account twin, whose `endpoint` event names
/// `messages_path`). The session ends with its stream: when the client
/// goes, the server shuts down, or whoever serves the stream ends it (the
/// server does when the stream's API key is revoked).
pub fn open(
    state: SseState,
    owner: OwnerId,
    messages_path: &'static str,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (client_tx, client_rx) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL);
    let (server_tx, server_rx) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL);
    let session = state.shutdown.child_token();
    state.sessions.insert(
        id.clone(),
        Session {
            to_server: client_tx,
            owner: owner.clone(),
        },
    );
    (state.on_open)();
    tracing::info!(session = %id, %owner, "SSE session opened");

    let server = (state.new_server)(owner);
    let sink = PollSender::new(server_tx).sink_map_err(|e| std::io::Error::other(e.to_string()));
    let transport = (sink, ReceiverStream::new(client_rx));
    let service_token = session.clone();
    let session_id = id.clone();
    tokio::spawn(async move {
        // `serve` waits for `initialize`, which arrives by POST: never await it in the GET handler.
        match server.serve_with_ct(transport, service_token).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "SSE session ended before initialisation")
            }
        }
    });

    let guard = Guard {
        id: id.clone(),
        state,
        session: session.clone(),
    };
    let endpoint = futures::stream::once(async move {
        Ok(Event::default()
            .event("endpoint")
            .data(format!("{messages_path}?sessionId={id}")))
    });
    let messages = ReceiverStream::new(server_rx).map(move |message| {
        let _ = &guard; // the guard lives as long as the stream
        let data = serde_json::to_string(&message).unwrap_or_else(|e| {
            jsonrpc::error(
                Value::Null,
                -32603,
                &format!("could not encode a message: {e}"),
            )
            .to_string()
        });
        Ok(Event::default().event("message").data(data))
    });
    let stream = endpoint
        .chain(messages)
        .take_until(session.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
pub struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /api/mcp/messages?sessionId=…`
pub async fn post(
    State(state): State<SseState>,
    owner: OwnerId,
    Query(query): Query<MessageQuery>,
    body: Bytes,
) -> Response {
    let Some(id) = query.session_id else {
        return reply(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                Value::Null,
                -32600,
                "missing `sessionId` query parameter; use the URL from the `endpoint` event",
            ),
        );
    };
    // Another client's session is answered exactly like an unknown one.
    let Some(sender) = state.sessions.sender(&id, &owner) else {
        return reply(
            StatusCode::NOT_FOUND,
            jsonrpc::error(
                Value::Null,
                -32001,
                "session not found: it ended or never existed; open a new one with GET /api/mcp/sse",
            ),
        );
    };
    let message = match jsonrpc::parse(&body) {
        Ok(m) => m,
        Err(error) => return reply(StatusCode::BAD_REQUEST, error),
    };
    match sender.send(message).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(_) => reply(
            StatusCode::NOT_FOUND,
            jsonrpc::error(
                Value::Null,
                -32001,
                "session ended; open a new one with GET /api/mcp/sse",
            ),
        ),
    }
}
