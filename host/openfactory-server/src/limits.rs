//! Request rate limits, kept in memory ([`Throttle`]: a burst, then a steady
//! rate). Static files are not counted.
//!
//! Who a request counts against:
//!
//! - A credential this server verified in the last [`VERIFIED_FOR`] (an
//!   API key, an OAuth access token, a session token): its own budget, so
//!   callers behind one address (a company's NAT) do not share one.
//! - Anything else, including a credential not verified yet: its client
//!   address (an IPv6 address by its /64, which one machine usually holds
//!   whole). Made-up credentials therefore share their sender's budget.
//!
//! A credential not verified yet also spends one of its address's
//! [`UNVERIFIED_BURST`] checks (then one every [`UNVERIFIED_PERIOD`]) before
//! it goes any further: a flood of random keys gets 429 without costing a
//! database lookup each, while a real client's key is checked once and then
//! remembered. Whatever verified a credential says so on its response
//! ([`Verified`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openfactory_service::owner::OwnerPolicy;
use openfactory_service::throttle::{self, Throttle};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a verified credential keeps its own budget without being seen again.
pub const VERIFIED_FOR: Duration = Duration::from_secs(10 * 60);
/// Credentials an address may present unverified at once…
pub const UNVERIFIED_BURST: u32 = 10;
/// …and then one more every this long.
pub const UNVERIFIED_PERIOD: Duration = Duration::from_secs(6);
/// Verified credentials remembered before the expired ones are dropped.
const VERIFIED_SWEEP_AT: usize = 4096;

/// Put on a response by whatever verified the request's credential.
#[derive(Clone, Copy, Debug)]
pub struct Verified;

/// What a request's budget is kept under.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Budget {
    Address(IpAddr),
    Credential([u8; 32]),
}

/// Paths of static files, which the rate limit does not count.
const STATIC_PREFIXES: [&str; 3] = ["/assets/", "/console/assets/", "/console/novnc/"];

/// The middleware's state: how callers are told apart, and their budgets.
#[derive(Clone)]
pub struct Limits(Option<Arc<Budgets>>);

struct Budgets {
    owners: Arc<OwnerPolicy>,
    per_minute: u32,
    requests: Throttle<Budget>,
    unverified: Throttle<IpAddr>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Limits {
    /// `owners.requests_per_minute` per caller; 0 turns every limit here off.
    pub fn new(owners: Arc<OwnerPolicy>) -> Self {
        let Some(per_minute) = NonZeroU32::new(owners.requests_per_minute) else {
            return Limits(None);
        };
        Limits(Some(Arc::new(Budgets {
            owners,
            per_minute: per_minute.get(),
            requests: Throttle::per_minute(per_minute),
            unverified: Throttle::new(
                NonZeroU32::new(UNVERIFIED_BURST).expect("above zero"),
                UNVERIFIED_PERIOD,
            ),
            verified: Mutex::new(HashMap::new()),
        })))
    }
}

/// The address a budget is kept for: an IPv4 address, or an IPv6 /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & (!0u128 << 64))),
        },
    }
}

fn credential(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get(header::AUTHORIZATION)
        .map(|value| Sha256::digest(value.as_bytes()).into())
}

impl Budgets {
    fn is_verified(&self, credential: &[u8; 32]) -> bool {
        let verified = self.verified.lock().expect("limits lock");
        verified
            .get(credential)
            .is_some_and(|seen| seen.elapsed() < VERIFIED_FOR)
    }

    fn remember(&self, credential: [u8; 32]) {
        let mut verified = self.verified.lock().expect("limits lock");
        if verified.len() >= VERIFIED_SWEEP_AT {
            verified.retain(|_, seen| seen.elapsed() < VERIFIED_FOR);
        }
        verified.insert(credential, Instant::now());
    }
}

/// The middleware: count the request against its budget; 429 with
/// `Retry-After` over it, or when its address sent too many credentials
/// that were not verified.
pub async fn check(
    State(Limits(budgets)): State<Limits>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    // Static files (stylesheets, scripts, noVNC) cost nothing and come with every page.
    let path = request.uri().path();
    let Some(budgets) = budgets.filter(|_| !STATIC_PREFIXES.iter().any(|p| path.starts_with(p)))
    else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let address = network(budgets.owners.client_ip(peer.ip(), headers));
    let credential = credential(headers);
    let verified = credential.filter(|c| budgets.is_verified(c));
    let (budget, what) = match verified {
        Some(c) => (Budget::Credential(c), "this credential"),
        None => (Budget::Address(address), "this address"),
    };
    if let Err(wait) = budgets.requests.check(&budget) {
        let message = format!(
            "rate limit: at most {} requests a minute from {what}; wait {} s and try again",
            budgets.per_minute,
            throttle::seconds(wait)
        );
        return refuse(request, message, throttle::seconds(wait)).await;
    }
    if credential.is_some() && verified.is_none() {
        if let Err(wait) = budgets.unverified.check(&address) {
            let message = format!(
                "rate limit: too many credentials this server could not verify came from this address \
                 (at most {UNVERIFIED_BURST}, then one every {} s); check the Authorization header, \
                 wait {} s and try again",
                UNVERIFIED_PERIOD.as_secs(),
                throttle::seconds(wait)
            );
            return refuse(request, message, throttle::seconds(wait)).await;
        }
    }
    let response = next.run(request).await;
    if let (Some(c), None) = (credential, verified)
        && response.extensions().get::<Verified>().is_some()
    {
        budgets.remember(c);
    }
    response
}

/// 429 with `Retry-After`; an MCP endpoint answers in JSON-RPC, to the request's id.
async fn refuse(request: Request, message: String, wait: u64) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_eq!(network(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(network(a), network(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(network(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(network(v4), v4);
    }
}
