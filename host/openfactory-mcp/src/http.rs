//! The HTTP surface: MCP over legacy SSE and Streamable HTTP, the key API,
//! `/healthz`, `/metrics` and the pages it is given, behind a Host/Origin
//! check and per-caller rate limits.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::limits::RateLimiter;
use crate::sse::{self, Sessions, SseState};
use crate::tools::OpenFactoryServer;
use openfactory_service::App;
use openfactory_service::metrics::TransportLabels;
use openfactory_service::owner::OwnerPolicy;

pub const STREAMABLE_PATH: &str = "/api/mcp";
/// Largest request body: a recipe may be 2 MiB, plus JSON-RPC framing.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Which `Host` (and browser `Origin`) values are served.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Host names, or `host:port` authorities. `*` allows any (behind a proxy that checks).
    pub allowed_hosts: Vec<String>,
}

impl Default for HostPolicy {
    fn default() -> Self {
        HostPolicy {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

impl HostPolicy {
    fn allows(&self, authority: &str) -> bool {
        if self.allowed_hosts.iter().any(|h| h == "*") {
            return true;
        }
        let host = strip_port(authority);
        self.allowed_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(authority) || allowed.eq_ignore_ascii_case(host)
        })
    }
}

/// `example.org:8080` → `example.org`; `[::1]:8080` → `::1`.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.contains(':') => {
            host
        }
        _ => authority,
    }
}

async fn check_host(
    State(policy): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !policy.allows(host) {
        tracing::warn!(host, "refused a request for a host that is not allowed");
        return (
            StatusCode::FORBIDDEN,
            "this server does not answer for that Host; operators add it with --allowed-host\n",
        )
            .into_response();
    }
    if let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin);
        if origin != "null" && !policy.allows(authority) {
            return (
                StatusCode::FORBIDDEN,
                "cross-origin requests from that Origin are not allowed\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Paths of static files, which the rate limit does not count.
const STATIC_PREFIXES: [&str; 3] = ["/assets/", "/console/assets/", "/console/novnc/"];

/// Count the request against its caller's limit: the API key it carries, or
/// its address.
async fn rate_limit(
    State((owners, limiter)): State<(Arc<OwnerPolicy>, Arc<RateLimiter>)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    // Static files (stylesheets, scripts, noVNC) cost nothing and come with every page.
    let path = request.uri().path();
    if STATIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let (who, what) = match headers.get(http::header::AUTHORIZATION) {
        Some(value) => (
            format!(
                "auth:{}",
                openfactory_service::auth::key_hash(&String::from_utf8_lossy(value.as_bytes()))
            ),
            "this credential",
        ),
        None => (
            format!("ip:{}", owners.client_ip(peer.ip(), headers)),
            "this address",
        ),
    };
    match limiter.check(&who) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({
                    "error": format!(
                        "rate limit: at most {} requests a minute from {what}; wait {wait} s and try again",
                        limiter.per_minute()
                    )
                })),
            )
                .into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                wait.to_string().parse().expect("a number"),
            );
            response
        }
    }
}

/// One span per HTTP request; the outcome is logged at debug level.
async fn trace_request(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span =
        tracing::info_span!("request", method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request"
        )
    });
    response
}

#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    owners: Arc<OwnerPolicy>,
    sse: SseState,
}

/// Everything the HTTP server serves: MCP, the key API, `/healthz`,
/// `/metrics`, and `pages` (the web console), all behind the Host check and
/// the rate limits.
pub fn router(
    app: Arc<App>,
    owners: Arc<OwnerPolicy>,
    hosts: HostPolicy,
    pages: Router,
    shutdown: CancellationToken,
) -> Router {
    let sessions = Sessions::default();
    let new_server = {
        let (app, owners) = (app.clone(), owners.clone());
        Arc::new(move |owner| OpenFactoryServer::new(app.clone(), owners.clone(), Some(owner)))
            as Arc<dyn Fn(_) -> _ + Send + Sync>
    };
    let (opened, closed) = (app.clone(), app.clone());
    let sse_state = SseState {
        sessions,
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
        .with_max_request_body_bytes(MAX_BODY);
    // The Host check below covers this transport too; rmcp's own list must not disagree.
    let config = if hosts.allowed_hosts.iter().any(|h| h == "*") {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(hosts.allowed_hosts.clone())
    };
    let streamable = {
        let (app, owners) = (app.clone(), owners.clone());
        StreamableHttpService::new(
            move || Ok(OpenFactoryServer::new(app.clone(), owners.clone(), None)),
            LocalSessionManager::default().into(),
            config,
        )
    };

    let mcp = Router::new()
        .route(sse::SSE_PATH, get(open_sse))
        .route(sse::MESSAGES_PATH, post(post_message))
        .with_state(shared.clone())
        .merge(
            Router::new()
                .route_service(STREAMABLE_PATH, streamable)
                .route_layer(middleware::from_fn_with_state(
                    app.clone(),
                    crate::auth_http::streamable,
                )),
        )
        .merge(crate::auth_http::router(app.clone(), owners.clone()))
        .merge(pages)
        .layer(middleware::from_fn_with_state(
            (
                owners.clone(),
                Arc::new(RateLimiter::new(owners.requests_per_minute)),
            ),
            rate_limit,
        ))
        .layer(middleware::from_fn_with_state(Arc::new(hosts), check_host))
        .layer(DefaultBodyLimit::max(MAX_BODY));

    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(mcp)
        .layer(middleware::from_fn(trace_request))
}

async fn open_sse(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (owner, ends) = match openfactory_service::auth::key_caller(&shared.app, &headers).await {
        Err(e) => return crate::auth_http::refused(&e),
        Ok(Some(caller)) => {
            let ends = shared.app.auth.key_token(&caller.key_id);
            (caller.owner, Some(ends))
        }
        Ok(None) => (shared.owners.resolve(peer.ip(), &headers), None),
    };
    if let Err(e) = shared.app.store.touch_owner(&owner).await {
        tracing::error!(error = %e, "could not record the caller");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server could not reach its database\n",
        )
            .into_response();
    }
    sse::open(shared.sse.clone(), owner, ends).into_response()
}

async fn post_message(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Query<sse::MessageQuery>,
    body: Bytes,
) -> Response {
    let owner = match openfactory_service::auth::key_caller(&shared.app, &headers).await {
        Err(e) => return crate::auth_http::refused(&e),
        Ok(Some(caller)) => caller.owner,
        Ok(None) => shared.owners.resolve(peer.ip(), &headers),
    };
    sse::post(State(shared.sse.clone()), owner, query, body).await
}

async fn healthz(State(shared): State<Shared>) -> Response {
    let body = json!({
        "status": "ok",
        "features": shared.app.planner.plugins.stats().plugins,
        "templates": shared.app.planner.catalog.templates.len(),
        "sse_sessions": shared.sse.sessions.len(),
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.app.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_and_without_ports() {
        let p = HostPolicy::default();
        assert!(p.allows("localhost:8080"));
        assert!(p.allows("127.0.0.1"));
        assert!(p.allows("[::1]:8080"));
        assert!(!p.allows("evil.example"));
        assert!(!p.allows("localhost.evil.example:80"));
        assert!(!p.allows(""));
        let any = HostPolicy {
            allowed_hosts: vec!["*".into()],
        };
        assert!(any.allows("anything:1"));
    }
}
