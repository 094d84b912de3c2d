//! Who an MCP request comes from, when it says so: the one place a
//! credential (`Authorization: Bearer of_mcp_…`, an API key, or `Bearer
//! of_oat_…`, an OAuth access token) becomes its account, for both HTTP
//! transports.
//!
//! - A valid credential: the request carries the service's
//!   [`AccountCaller`] in its extensions (the MCP crate reads it), and
//!   whatever streams back (an SSE session, a Streamable HTTP stream) ends
//!   the moment the key or the connected client is revoked.
//! - A wrong, expired or revoked credential: 401 with the OAuth challenge
//!   (`WWW-Authenticate: Bearer error="invalid_token", resource_metadata=…`),
//!   and the request goes no further; it never falls back to the IP session.
//! - No `Authorization` header: on an account endpoint (`/api/mcp/account…`)
//!   or when anonymous callers are off, 401 with the challenge, which sends a
//!   hosted client through OAuth; otherwise nothing here, and the MCP crate
//!   takes the caller's address as its IP session.

use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use openfactory_service::auth::{self, AccountCaller};
use openfactory_service::{Anonymous, App, OwnerPolicy};

/// What the middleware needs.
#[derive(Clone)]
pub struct Callers {
    pub app: Arc<App>,
    pub owners: Arc<OwnerPolicy>,
}

/// The challenge a refused caller gets: where to learn how to sign in
/// (RFC 9728 §5.1), the scope to ask for, and for a bad token why.
pub fn challenge(issuer: &str, path: &str, error: Option<&str>) -> HeaderValue {
    let resource = openfactory_mcp::resource_path(path).unwrap_or(openfactory_mcp::ACCOUNT_PATH);
    let mut value = format!(
        "Bearer resource_metadata=\"{issuer}/.well-known/oauth-protected-resource{resource}\", scope=\"{}\"",
        openfactory_oauth::SCOPE
    );
    if let Some(description) = error {
        // The description is ours, never the caller's; a header value is
        // visible ASCII, without the quotes that would end the parameter.
        let ascii: String = description
            .replace('…', "...")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .map(|c| if c == '"' { '\'' } else { c })
            .collect();
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{ascii}\""
        ));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Refuse `request`: its body is read first (up to 64 KiB), so that the
/// client's connection stays usable for its next request (a server that
/// answers before reading a body must close the connection, which a client
/// reusing it sees as a disconnect).
async fn refuse(request: Request, answer: Response) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), 64 * 1024).await;
    answer
}

/// The middleware, on the MCP routes.
pub async fn resolve(State(callers): State<Callers>, mut request: Request, next: Next) -> Response {
    let app = &callers.app;
    let path = request.uri().path().to_owned();
    let caller: AccountCaller = match auth::account_caller(app, request.headers()).await {
        Err(e) => {
            let answer = openfactory_mcp::refused(
                e.is_unavailable(),
                e.message(),
                challenge(app.oauth.issuer(), &path, Some(e.message())),
            );
            return refuse(request, answer).await;
        }
        Ok(None)
            if callers.owners.anonymous == Anonymous::Off
                || openfactory_mcp::requires_account(&path) =>
        {
            let answer = openfactory_mcp::refused(
                false,
                "sign in first: this endpoint needs an account. Clients that support OAuth are sent \
                 to sign in; others send Authorization: Bearer of_mcp_… (an API key from the console's Settings)",
                challenge(app.oauth.issuer(), &path, None),
            );
            return refuse(request, answer).await;
        }
        Ok(None) => return next.run(request).await,
        Ok(Some(caller)) => caller,
    };
    let ends = app.auth.streams_of(&caller.credential);
    request.extensions_mut().insert(caller);
    let (mut parts, body) = next.run(request).await.into_parts();
    // The credential has its own rate-limit budget from now on.
    parts.extensions.insert(crate::limits::Verified);
    // A body of known length is already whole: only streams stay open.
    if body.size_hint().exact().is_some() {
        return Response::from_parts(parts, body);
    }
    let stream = body.into_data_stream().take_until(ends.cancelled_owned());
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_endpoints_resource_metadata() {
        let c = challenge("https://f.example", "/api/mcp/account/messages", None);
        assert_eq!(
            c.to_str().unwrap(),
            "Bearer resource_metadata=\"https://f.example/.well-known/oauth-protected-resource/api/mcp/account/sse\", scope=\"mcp\""
        );
        let c = challenge(
            "https://f.example",
            "/api/mcp",
            Some("the access token has expired"),
        );
        assert!(c.to_str().unwrap().ends_with(
            "error=\"invalid_token\", error_description=\"the access token has expired\""
        ));
        // Every refusal's words fit a header: the key messages have "…" and quotes.
        let c = challenge(
            "https://f.example",
            "/api/mcp/sse",
            Some("check it (Bearer of_mcp_…), \"x\""),
        );
        assert!(
            c.to_str()
                .unwrap()
                .ends_with("error_description=\"check it (Bearer of_mcp_...), 'x'\""),
            "{c:?}"
        );
    }
}
