//! Who an MCP request comes from, when it says so: the one place an API key
//! (`Authorization: Bearer of_mcp_…`) becomes its account, for both HTTP
//! transports.
//!
//! - A valid key: the request carries the service's [`KeyCaller`] in its
//!   extensions (the MCP crate reads it), and whatever streams back (an SSE
//!   session, a Streamable HTTP stream) ends the moment the key is revoked.
//! - A wrong or revoked key: 401, and the request goes no further; it never
//!   falls back to the IP session.
//! - No `Authorization` header: nothing here; the MCP crate takes the
//!   caller's address as its IP session.

use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use openfactory_service::App;
use openfactory_service::auth::{self, KeyCaller};

/// The middleware, on the MCP routes.
pub async fn resolve(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let caller: KeyCaller = match auth::key_caller(&app, request.headers()).await {
        Err(e) => return openfactory_mcp::refused(&e),
        Ok(None) => return next.run(request).await,
        Ok(Some(caller)) => caller,
    };
    let ends = app.auth.key_token(&caller.key_id);
    request.extensions_mut().insert(caller);
    let (parts, body) = next.run(request).await.into_parts();
    // A body of known length is already whole: only streams stay open.
    if body.size_hint().exact().is_some() {
        return Response::from_parts(parts, body);
    }
    let stream = body.into_data_stream().take_until(ends.cancelled_owned());
    Response::from_parts(parts, Body::from_stream(stream))
}
