//! Who is calling: the client's IP address, or the address a trusted proxy
//! reports in `X-Forwarded-For`. Only configured proxies are believed.

use std::net::IpAddr;

use http::HeaderMap;
use openfactory_store::OwnerId;

#[derive(Debug, Clone, Default)]
pub struct OwnerPolicy {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Requests one caller (an API key, or an address) may make a minute; 0: no limit.
    pub requests_per_minute: u32,
    /// Whether a caller without a credential works as its address.
    pub anonymous: Anonymous,
}

/// What a caller that presents no credential is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Anonymous {
    /// Its IP session: everyone behind one address shares it (fine on one
    /// machine or a private network; wrong wherever a hosted client, a NAT
    /// or a proxy puts many people behind one address).
    #[default]
    Ip,
    /// Refused: sign in (an API key, or OAuth) first.
    Off,
}

impl OwnerPolicy {
    /// The client address: the peer, unless the peer is a trusted proxy, in
    /// which case the right-most untrusted address of `X-Forwarded-For`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> OwnerId {
        OwnerId::ip(self.client_ip(peer, headers))
    }
}

/// Note that `owner` was seen now (an address's things are kept while it
/// comes back). Every front end calls this once per caller it resolves.
///
/// The note is bookkeeping, so it never refuses the call it comes with: it is
/// written at most once a minute per owner (`App::seen`, a [`Throttle`](crate::throttle::Throttle): a
/// busy client does not turn every read into a write), and a database that
/// cannot take it now (a lock held elsewhere, a read-only standby) is logged
/// and the call goes on; reads are still served, and a call that writes says
/// so in its own words. Whatever an owner creates notes its row itself.
pub async fn touch(app: &crate::App, owner: &OwnerId) {
    if app.seen.check(owner).is_err() {
        return;
    }
    if let Err(e) = app.store.touch_owner(owner).await {
        tracing::warn!(owner = %owner, error = %e, "could not note that an owner was seen");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let policy = OwnerPolicy {
            trusted_proxies: vec![proxy],
            requests_per_minute: 0,
            anonymous: Anonymous::Ip,
        };
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // A direct client cannot spoof its address.
        assert_eq!(policy.client_ip(client, &headers("198.51.100.1")), client);
        // Through the proxy, the right-most untrusted hop is the client.
        assert_eq!(
            policy.client_ip(proxy, &headers("198.51.100.1, 203.0.113.7")),
            client
        );
        assert_eq!(
            policy.client_ip(proxy, &headers("203.0.113.7, 10.0.0.1")),
            client
        );
        // Garbage falls back to the peer.
        assert_eq!(policy.client_ip(proxy, &headers("not-an-ip")), proxy);
    }
}
