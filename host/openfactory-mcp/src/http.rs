//! The MCP routes over HTTP: legacy SSE (`/api/mcp/sse` + `/api/mcp/messages`)
//! and Streamable HTTP (`/api/mcp`), and their twins under `/api/mcp/account`
//! that always require a signed-in caller, for the HTTP server to serve
//! behind its own checks (Host, rate limits, credentials).
//!
//! The server resolves a credential (an API key, an OAuth access token)
//! before a request gets here and leaves its account in the request as an
//! [`AccountCaller`]; a request without one is its address's IP session,
//! where the policy allows anonymous callers and the endpoint is not an
//! account endpoint. A request that still carries an `Authorization` header
//! nobody checked is refused, never taken for the IP session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::sse::{self, Sessions, SseState};
use crate::tools::OpenFactoryServer;
use openfactory_service::App;
use openfactory_service::auth::AccountCaller;
use openfactory_service::metrics::TransportLabels;
use openfactory_service::owner::{Anonymous, OwnerPolicy};
use openfactory_store::OwnerId;

pub const STREAMABLE_PATH: &str = "/api/mcp";
/// Streamable HTTP for signed-in callers only: what a hosted client is
/// configured with, so that it is sent through OAuth.
pub const ACCOUNT_PATH: &str = "/api/mcp/account";

/// The MCP endpoints, each a protected resource of its own (RFC 9728): the
/// two transports, anonymous-capable and account-only.
pub const RESOURCE_PATHS: [&str; 4] = [
    STREAMABLE_PATH,
    ACCOUNT_PATH,
    sse::SSE_PATH,
    sse::ACCOUNT_SSE_PATH,
];

/// The resource a request path belongs to (a messages path to its SSE
/// endpoint), if it is an MCP path.
pub fn resource_path(path: &str) -> Option<&'static str> {
    match path {
        STREAMABLE_PATH => Some(STREAMABLE_PATH),
        ACCOUNT_PATH => Some(ACCOUNT_PATH),
        sse::SSE_PATH | sse::MESSAGES_PATH => Some(sse::SSE_PATH),
        sse::ACCOUNT_SSE_PATH | sse::ACCOUNT_MESSAGES_PATH => Some(sse::ACCOUNT_SSE_PATH),
        _ => None,
    }
}

/// Whether the endpoint at `path` refuses callers without a credential.
pub fn requires_account(path: &str) -> bool {
    matches!(
        resource_path(path),
        Some(ACCOUNT_PATH | sse::ACCOUNT_SSE_PATH)
    )
}
/// Largest MCP message: a recipe may be 2 MiB, plus JSON-RPC framing.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    owners: Arc<OwnerPolicy>,
    sse: SseState,
}

/// The MCP routes of both HTTP transports. `allowed_hosts` is rmcp's own
/// Host check on Streamable HTTP, which must agree with the server's (`*`:
/// any). Every stream ends when `shutdown` is cancelled.
pub fn router(
    app: Arc<App>,
    owners: Arc<OwnerPolicy>,
    allowed_hosts: Vec<String>,
    shutdown: CancellationToken,
) -> Router {
    let new_server = {
        let (app, owners) = (app.clone(), owners.clone());
        Arc::new(move |owner| OpenFactoryServer::new(app.clone(), owners.clone(), Some(owner)))
            as Arc<dyn Fn(_) -> _ + Send + Sync>
    };
    let (opened, closed) = (app.clone(), app.clone());
    let sse_state = SseState {
        sessions: Sessions::default(),
        shutdown: shutdown.clone(),
        new_server,
        on_open: Arc::new(move || {
            opened.metrics.sse_sessions.inc();
            opened
                .metrics
                .sessions_opened
                .get_or_create(&TransportLabels { transport: "sse" })
                .inc();
        }),
        on_close: Arc::new(move || {
            closed.metrics.sse_sessions.dec();
        }),
    };
    let shared = Shared {
        app: app.clone(),
        owners: owners.clone(),
        sse: sse_state,
    };

    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(MAX_MESSAGE);
    let config = if allowed_hosts.iter().any(|h| h == "*") {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(allowed_hosts)
    };
    // One store of recent events for both endpoints: a client that
    // reconnects with `Last-Event-ID` gets what it missed.
    let events = Arc::new(crate::events::RecentEvents::default());
    let streamable = |config| {
        let (app, owners) = (app.clone(), owners.clone());
        StreamableHttpService::new(
            move || Ok(OpenFactoryServer::new(app.clone(), owners.clone(), None)),
            LocalSessionManager::default()
                .with_event_store(events.clone())
                .into(),
            config,
        )
    };

    Router::new()
        .route(sse::SSE_PATH, get(open_sse))
        .route(sse::MESSAGES_PATH, post(post_message))
        .route(sse::ACCOUNT_SSE_PATH, get(open_sse))
        .route(sse::ACCOUNT_MESSAGES_PATH, post(post_message))
        .with_state(shared)
        .merge(
            Router::new()
                .route_service(STREAMABLE_PATH, streamable(config.clone()))
                .route_service(ACCOUNT_PATH, streamable(config))
                .layer(axum::middleware::from_fn(in_json_rpc)),
        )
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
}

/// Streamable HTTP in this server's words: a posted message is read and
/// checked here first ([`crate::jsonrpc::parse`]: a bad one gets its field
/// named, never rmcp's deserializer message), and a refusal rmcp words in
/// plain text (a wrong `Accept` or `Content-Type`, an unknown session) is
/// answered as a JSON-RPC error, so that a client always gets JSON.
async fn in_json_rpc(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = request.into_parts();
    let mut id = serde_json::Value::Null;
    let request = if parts.method == http::Method::POST {
        if let Some(bad) = unreadable_session_id(&parts.headers) {
            return in_json(StatusCode::BAD_REQUEST, bad);
        }
        let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE).await else {
            return too_large();
        };
        let message = match crate::jsonrpc::parse(&bytes) {
            Ok(message) => message,
            Err(error) => return in_json(StatusCode::BAD_REQUEST, error),
        };
        id = crate::jsonrpc::request_id(&bytes);
        // rmcp reads the message that was checked, not the bytes: JSON that
        // repeats a key means what it meant to the check (the last one).
        let checked = serde_json::to_vec(&message).expect("a parsed message serializes");
        axum::extract::Request::from_parts(parts, axum::body::Body::from(checked))
    } else {
        axum::extract::Request::from_parts(parts, body)
    };
    let response = next.run(request).await;
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t.as_bytes().starts_with(b"text/plain"));
    if !response.status().is_client_error() {
        return response;
    }
    if !plain {
        return with_id(response, id).await;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 1 << 16)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = match text.trim() {
        "" => format!("refused: HTTP {}", parts.status),
        // rmcp may quote what the client sent (a header's value): a bounded echo.
        text => openfactory_core::rules::truncate(text, 300),
    };
    let error = crate::jsonrpc::error(id, crate::jsonrpc::INVALID_REQUEST, &text);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(error.to_string()))
}

fn in_json(status: StatusCode, error: serde_json::Value) -> Response {
    (status, axum::Json(error)).into_response()
}

/// A refusal of an MCP request before any of it was read (by the server's
/// Host check): a JSON-RPC error, as MCP clients read one.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    in_json(
        status,
        crate::jsonrpc::error(
            serde_json::Value::Null,
            crate::jsonrpc::INVALID_REQUEST,
            message,
        ),
    )
}

/// A body over [`MAX_MESSAGE`]: a JSON-RPC error, and the connection closed
/// (the rest of the body is not read, so the connection cannot be reused).
fn too_large() -> Response {
    let mut response = in_json(
        StatusCode::PAYLOAD_TOO_LARGE,
        crate::jsonrpc::error(
            serde_json::Value::Null,
            crate::jsonrpc::INVALID_REQUEST,
            &format!(
                "message too large or cut off: a message is at most {} MiB; send smaller ones",
                MAX_MESSAGE >> 20
            ),
        ),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An `Mcp-Session-Id` that no session can have (not visible ASCII), named.
fn unreadable_session_id(headers: &HeaderMap) -> Option<serde_json::Value> {
    let id = headers.get("mcp-session-id")?;
    let readable = !id.is_empty() && id.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b));
    (!readable).then(|| {
        crate::jsonrpc::error(
            serde_json::Value::Null,
            crate::jsonrpc::INVALID_REQUEST,
            "header `Mcp-Session-Id` must be visible ASCII (the id this server gave at initialize); send it back as given, or leave it out to start a session",
        )
    })
}

/// rmcp's own JSON refusals may leave out `id`, which JSON-RPC requires
/// (null when unknown): add the request's.
async fn with_id(response: Response, id: serde_json::Value) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 16).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut error = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(error)) if error.contains_key("error") => error,
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    error.entry("id").or_insert(id);
    let body = serde_json::Value::Object(error).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Who is calling: the account of the credential the server checked, else
/// the address's IP session. An `Authorization` header without a checked
/// credential means this router is served without the server's credential
/// layer: refused, so that a credential never falls back to the IP session;
/// and so is an anonymous caller where none is allowed (the server answers
/// those with its OAuth challenge before they get here).
pub(crate) fn caller(
    owners: &OwnerPolicy,
    path: &str,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Result<OwnerId, &'static str> {
    if let Some(signed_in) = extensions.get::<AccountCaller>() {
        return Ok(signed_in.owner.clone());
    }
    if headers.contains_key(header::AUTHORIZATION) {
        tracing::error!("a request with an Authorization header reached MCP unchecked");
        return Err("the server did not check the credential; try again later");
    }
    if owners.anonymous == Anonymous::Off || requires_account(path) {
        return Err("sign in first: this endpoint needs an API key or an OAuth access token");
    }
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .ok_or("the server could not determine your address")?
        .0
        .ip();
    Ok(owners.resolve(peer, headers))
}

/// A caller refused, as MCP clients expect it: 401 (503 when the
/// credential could not be checked), the server's `WWW-Authenticate`
/// challenge, and the reason as a JSON-RPC error.
pub fn refused(unavailable: bool, message: &str, challenge: HeaderValue) -> Response {
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut response = (
        status,
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32001, "message": message },
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}

/// A request over its caller's rate limit, as MCP clients expect it: 429
/// with `Retry-After`, and a JSON-RPC error that answers the request's id
/// (read from `body`; null when it is no single request).
pub fn rate_limited(body: &[u8], message: &str, retry_after_seconds: u64) -> Response {
    let mut error = crate::jsonrpc::error(
        crate::jsonrpc::request_id(body),
        crate::jsonrpc::RATE_LIMITED,
        message,
    );
    error["error"]["data"] = json!({ "retry_after_seconds": retry_after_seconds });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(error)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    response
}

/// A caller that could not be told: a JSON-RPC error with the reason.
fn unidentified(why: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(crate::jsonrpc::error(serde_json::Value::Null, -32603, why)),
    )
        .into_response()
}

async fn open_sse(State(shared): State<Shared>, parts: Parts) -> Response {
    let owner = match caller(
        &shared.owners,
        parts.uri.path(),
        &parts.extensions,
        &parts.headers,
    ) {
        Ok(owner) => owner,
        Err(why) => return unidentified(why),
    };
    openfactory_service::owner::touch(&shared.app, &owner).await;
    let messages = if requires_account(parts.uri.path()) {
        sse::ACCOUNT_MESSAGES_PATH
    } else {
        sse::MESSAGES_PATH
    };
    sse::open(shared.sse.clone(), owner, messages).into_response()
}

async fn post_message(
    State(shared): State<Shared>,
    parts: Parts,
    query: Query<sse::MessageQuery>,
    body: axum::body::Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_MESSAGE).await else {
        return too_large();
    };
    let owner = match caller(
        &shared.owners,
        parts.uri.path(),
        &parts.extensions,
        &parts.headers,
    ) {
        Ok(owner) => owner,
        Err(why) => return unidentified(why),
    };
    sse::post(State(shared.sse.clone()), owner, query, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rate_limited_request_is_answered_in_json_rpc_with_its_id() {
        let response = rate_limited(
            br#"{"jsonrpc":"2.0","id":"r-9","method":"tools/list"}"#,
            "rate limit: wait 12 s",
            12,
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "12");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "jsonrpc": "2.0",
                "id": "r-9",
                "error": {
                    "code": crate::jsonrpc::RATE_LIMITED,
                    "message": "rate limit: wait 12 s",
                    "data": { "retry_after_seconds": 12 },
                },
            })
        );
    }
}
