//! Request rate limits per caller (an API key, or a client address): a fixed
//! one-minute window each, kept in memory. Static files are not counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openfactory_service::owner::OwnerPolicy;
use serde_json::json;

const WINDOW: Duration = Duration::from_secs(60);
/// Windows kept before old ones are swept.
const SWEEP_AT: usize = 10_000;

pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// `per_minute` 0 means no limit.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Count a request by `who`; when over the limit, the seconds until the
    /// window turns.
    pub fn check(&self, who: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("limiter lock");
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry(who.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }
}

/// Paths of static files, which the rate limit does not count.
const STATIC_PREFIXES: [&str; 3] = ["/assets/", "/console/assets/", "/console/novnc/"];

/// The middleware's state: how callers are told apart, and their windows.
#[derive(Clone)]
pub struct Limits {
    owners: Arc<OwnerPolicy>,
    limiter: Arc<RateLimiter>,
}

impl Limits {
    /// `owners.requests_per_minute` per caller.
    pub fn new(owners: Arc<OwnerPolicy>) -> Self {
        let limiter = Arc::new(RateLimiter::new(owners.requests_per_minute));
        Limits { owners, limiter }
    }
}

/// The middleware: count the request against its caller's limit, the
/// credential it carries (whatever it is: a bad key is counted too), or its
/// address; 429 with `Retry-After` over it.
pub async fn check(
    State(limits): State<Limits>,
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
    let (who, what) = match headers.get(header::AUTHORIZATION) {
        Some(value) => (
            format!(
                "auth:{}",
                openfactory_service::auth::key_hash(&String::from_utf8_lossy(value.as_bytes()))
            ),
            "this credential",
        ),
        None => (
            format!("ip:{}", limits.owners.client_ip(peer.ip(), headers)),
            "this address",
        ),
    };
    match limits.limiter.check(&who) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let message = format!(
                "rate limit: at most {} requests a minute from {what}; wait {wait} s and try again",
                limits.limiter.per_minute()
            );
            // An MCP endpoint answers in JSON-RPC, to the request's id.
            if openfactory_mcp::resource_path(request.uri().path()).is_some() {
                let body = axum::body::to_bytes(request.into_body(), crate::MAX_BODY)
                    .await
                    .unwrap_or_default();
                return openfactory_mcp::rate_limited(&body, &message, wait);
            }
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({ "error": message })),
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                wait.to_string().parse().expect("a number"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_limited_apart() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(limiter.check("b").is_ok());
        let unlimited = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(unlimited.check("a").is_ok());
        }
    }
}
