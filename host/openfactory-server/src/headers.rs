//! The headers every response gets, whoever made it (a page, a file, the
//! API, MCP, a refusal of the Host check, a 404): applied once, outermost.
//!
//! A route that needs stricter values sets them itself and keeps them (the
//! VM screen's CSP and `no-referrer`); one that may be cached says so
//! (hashed assets, noVNC, downloads' `private, no-store`). Nothing here
//! touches the body, so SSE streams and ranged downloads pass as they are.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// What no page may do: run scripts or styles from elsewhere (or inline),
/// be framed, post forms off-site, or leak its URL.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub const PERMISSIONS_POLICY: &str = "camera=(), microphone=(), geolocation=(), interest-cohort=()";

/// The headers, and whether a route's own value is kept: every header but
/// Permissions-Policy may be set stricter by a route.
pub const HEADERS: [(&str, &str, bool); 6] = [
    ("content-security-policy", CSP, true),
    ("x-content-type-options", "nosniff", true),
    ("x-frame-options", "DENY", true),
    ("referrer-policy", "same-origin", true),
    ("permissions-policy", PERMISSIONS_POLICY, false),
    // Responses show an owner's things: never cache them where another could read them.
    ("cache-control", "no-store", true),
];

/// The middleware.
pub async fn security(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value, route_may_set) in HEADERS {
        let value = HeaderValue::from_static(value);
        if route_may_set {
            headers.entry(name).or_insert(value);
        } else {
            headers.insert(name, value);
        }
    }
    response
}
