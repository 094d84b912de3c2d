//! The Host and Origin check: the server answers only for the names it is
//! told (DNS rebinding), and browsers may post to it only from them.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
        if self.allows_any() {
            return true;
        }
        let host = strip_port(authority);
        self.allowed_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(authority) || allowed.eq_ignore_ascii_case(host)
        })
    }

    /// `*`: the check is left to a proxy in front.
    pub fn allows_any(&self) -> bool {
        self.allowed_hosts.iter().any(|h| h == "*")
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

/// The middleware: 403 for a Host, or a browser Origin, that is not allowed.
pub async fn check(
    State(policy): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // An MCP client reads JSON-RPC; everyone else, a line of text.
    let refuse = |status: StatusCode, message: &str| {
        if openfactory_mcp::resource_path(request.uri().path()).is_some() {
            openfactory_mcp::refusal(status, message)
        } else {
            (status, format!("{message}\n")).into_response()
        }
    };
    if headers.get_all(header::HOST).iter().count() > 1 {
        // Which one a proxy and this server each believe is anyone's guess (RFC 9112 §3.2: 400).
        return refuse(
            StatusCode::BAD_REQUEST,
            "a request has one Host header; send exactly one",
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !policy.allows(host) {
        tracing::warn!(
            host = openfactory_core::rules::truncate(host, 100),
            "refused a request for a host that is not allowed"
        );
        return refuse(
            StatusCode::FORBIDDEN,
            "this server does not answer for that Host; operators add it with --allowed-host",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin);
        if origin != "null" && !policy.allows(authority) {
            return refuse(
                StatusCode::FORBIDDEN,
                "cross-origin requests from that Origin are not allowed",
            );
        }
    }
    next.run(request).await
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
