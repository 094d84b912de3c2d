//! The OAuth endpoints over HTTP (the flows are `openfactory_oauth`'s; the
//! consent page is the web console's):
//!
//! - `GET /.well-known/oauth-authorization-server` (and
//!   `/.well-known/openid-configuration`, which some clients try): RFC 8414;
//! - `GET /.well-known/oauth-protected-resource[/api/mcp…]`: RFC 9728, for
//!   the server as a whole and for each MCP endpoint;
//! - `POST /oauth/register` (RFC 7591), `POST /oauth/token`,
//!   `POST /oauth/revoke` (RFC 7009).
//!
//! None of them reads a cookie, so browsers may call them from any origin
//! (CORS `*`), as browser-based MCP clients do.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openfactory_oauth::{OAuthError, discovery};
use openfactory_service::App;
use openfactory_service::auth;
use serde_json::Value;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(server_metadata),
        )
        .route("/.well-known/openid-configuration", get(server_metadata))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(endpoint_metadata),
        )
        .route(openfactory_oauth::REGISTER_PATH, post(register))
        .route(openfactory_oauth::TOKEN_PATH, post(token))
        .route(openfactory_oauth::REVOKE_PATH, post(revoke))
        .with_state(app)
        .layer(axum::middleware::from_fn(cors))
}

/// Any origin may read these (they carry no cookies); preflights answer at once.
async fn cors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
    );
    response
}

fn json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    // Tokens and errors are never cached (RFC 6749 §5.1).
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json(status, e.to_json());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"OpenFactory\""),
        );
    }
    response
}

async fn server_metadata(State(app): State<Arc<App>>) -> Response {
    json(
        StatusCode::OK,
        discovery::authorization_server(app.oauth.issuer()),
    )
}

async fn resource_metadata(State(app): State<Arc<App>>) -> Response {
    let issuer = app.oauth.issuer();
    json(
        StatusCode::OK,
        discovery::protected_resource(issuer, issuer),
    )
}

async fn endpoint_metadata(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    let path = format!("/{}", path.trim_end_matches('/'));
    if !openfactory_mcp::RESOURCE_PATHS.contains(&path.as_str()) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found", "error_description": "no protected resource at this path; the MCP endpoints are /api/mcp, /api/mcp/sse, /api/mcp/account and /api/mcp/account/sse"}),
        );
    }
    let issuer = app.oauth.issuer();
    json(
        StatusCode::OK,
        discovery::protected_resource(issuer, &format!("{issuer}{path}")),
    )
}

fn is_content_type(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(wanted)
        })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn register(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_content_type(&headers, "application/json") {
        return error(&OAuthError::invalid_request(
            "Content-Type: send the client metadata as application/json",
        ));
    }
    match app.oauth.register(&body).await {
        Ok(registered) => json(
            StatusCode::CREATED,
            serde_json::to_value(registered).unwrap_or_default(),
        ),
        Err(e) => error(&e),
    }
}

fn form_expected(headers: &HeaderMap) -> Option<Response> {
    (!is_content_type(headers, "application/x-www-form-urlencoded")).then(|| {
        error(&OAuthError::invalid_request(
            "Content-Type: send the parameters as application/x-www-form-urlencoded",
        ))
    })
}

async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = form_expected(&headers) {
        return refused;
    }
    match auth::oauth_token(&app, &body, authorization(&headers)).await {
        Ok(tokens) => json(
            StatusCode::OK,
            serde_json::to_value(tokens).unwrap_or_default(),
        ),
        Err(e) => error(&e),
    }
}

async fn revoke(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = form_expected(&headers) {
        return refused;
    }
    match auth::oauth_revoke(&app, &body, authorization(&headers)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error(&e),
    }
}
