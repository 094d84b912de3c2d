//! Client ID metadata documents: a client whose id is an HTTPS URL serves
//! its own metadata there. Fetching a URL a stranger names is a classic way
//! into a server's network, so the fetch is fenced:
//!
//! - `https` only, a path, no credentials, no fragment, no dot segments;
//! - the host must resolve to public addresses only (loopback, private,
//!   link-local, CGNAT, multicast and documentation ranges are refused, and
//!   the resolved address is the one connected to, so DNS cannot change its
//!   answer in between);
//! - no redirects, 5 s in all, at most 64 KiB, JSON only;
//! - the document's `client_id` must be the URL itself.
//!
//! Good documents are cached for 5 minutes, at most 1,000 of them (the
//! oldest go first); failures are not cached.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use url::Url;

use crate::clients::{Client, ClientAuth, ClientKind, read_metadata};
use crate::error::OAuthError;
use crate::error::shown;

pub const MAX_DOCUMENT: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
const CACHE_FOR: Duration = Duration::from_secs(300);
const CACHE_ENTRIES: usize = 1000;

/// Which fetches are allowed beyond the fence. Both are for tests and
/// private deployments; the defaults are what the internet needs.
#[derive(Debug, Clone, Default)]
pub struct FetchPolicy {
    /// Fetch from loopback and private addresses too (and over http there).
    pub allow_private_addresses: bool,
    /// PEM certificates to trust besides the system's.
    pub extra_roots_pem: Option<Vec<u8>>,
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // CGNAT
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64
        }
    }
}

/// Whether `client_id` is a metadata document URL we may fetch.
pub fn document_url(client_id: &str, policy: &FetchPolicy) -> Result<Url, OAuthError> {
    let bad = |why: &str| {
        OAuthError::invalid_client(format!("client_id: `{}` {why}", shown(client_id, 100)))
    };
    if client_id.len() > 2000 {
        return Err(bad("is longer than 2000 characters"));
    }
    let url = Url::parse(client_id).map_err(|_| bad("is not a URL"))?;
    let scheme_ok =
        url.scheme() == "https" || (policy.allow_private_addresses && url.scheme() == "http");
    if !scheme_ok {
        return Err(bad("must be an https URL of a client metadata document"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(bad(
            "must have a path (the document's location, e.g. /oauth/client.json)",
        ));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(bad("may not carry a fragment or credentials"));
    }
    // `Url` removes `.` and `..` segments: a URL that changed was not canonical.
    if url.as_str() != client_id {
        return Err(bad(
            "is not in canonical form (no dot segments, lower-case scheme and host)",
        ));
    }
    Ok(url)
}

/// Resolves names to public addresses only (unless allowed).
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() || allowed.len() != found.len() {
                return Err(format!("{host} resolves to a private address").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The document's JSON, checked, as a client.
pub fn read_document(url: &Url, body: &[u8]) -> Result<Client, OAuthError> {
    let bad = |why: String| {
        OAuthError::invalid_client(format!("the client metadata document at {url} {why}"))
    };
    let doc = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(doc)) => doc,
        _ => return Err(bad("is not a JSON object".into())),
    };
    match doc.get("client_id").and_then(Value::as_str) {
        Some(id) if id == url.as_str() => {}
        Some(id) => {
            return Err(bad(format!(
                "names another client_id (`{}`); it must be the document's own URL",
                shown(id, 100)
            )));
        }
        None => {
            return Err(bad(
                "has no client_id; it must be the document's own URL".into()
            ));
        }
    }
    let metadata =
        read_metadata(&doc).map_err(|e| bad(format!("is invalid: {}", e.description)))?;
    if metadata.auth_method != "none" && doc.contains_key("token_endpoint_auth_method") {
        return Err(bad(format!(
            "asks for token_endpoint_auth_method `{}`; only `none` (PKCE) is supported for metadata documents",
            shown(&metadata.auth_method, 40)
        )));
    }
    Ok(Client {
        client_id: url.to_string(),
        name: metadata
            .name
            .unwrap_or_else(|| url.host_str().unwrap_or("a client").to_owned()),
        redirect_uris: metadata.redirect_uris,
        auth: ClientAuth::None,
        kind: ClientKind::MetadataDocument,
        client_uri: metadata.client_uri,
    })
}

/// Fetches and caches client metadata documents.
pub struct MetadataDocuments {
    http: reqwest::Client,
    policy: FetchPolicy,
    cache: Mutex<HashMap<String, (Instant, Client)>>,
}

impl MetadataDocuments {
    pub fn new(policy: FetchPolicy) -> Result<MetadataDocuments, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .no_proxy()
            .user_agent(concat!(
                "OpenFactory/",
                env!("CARGO_PKG_VERSION"),
                " (client metadata)"
            ))
            .dns_resolver(Arc::new(PublicOnly {
                allow_private: policy.allow_private_addresses,
            }));
        if let Some(pem) = &policy.extra_roots_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the extra certificates could not be read: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("the HTTP client could not start: {e}"))?;
        Ok(MetadataDocuments {
            http,
            policy,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The client `client_id` (a document URL) describes.
    pub async fn client(&self, client_id: &str) -> Result<Client, OAuthError> {
        if let Some((at, client)) = self.cache.lock().expect("cache lock").get(client_id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(client.clone());
        }
        let url = document_url(client_id, &self.policy)?;
        // An address literal never reaches the resolver: check it here.
        if let Some(ip) = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        } && !self.policy.allow_private_addresses
            && !is_public(ip)
        {
            return Err(OAuthError::invalid_client(format!(
                "client_id: {url} points at a private address; a client metadata document must be on the public internet"
            )));
        }
        let client = self.fetch(&url).await?;
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if cache.len() >= CACHE_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(client_id.to_owned(), (Instant::now(), client.clone()));
        Ok(client)
    }

    async fn fetch(&self, url: &Url) -> Result<Client, OAuthError> {
        let failed = |why: String| {
            tracing::info!(%url, %why, "a client metadata document was refused");
            OAuthError::invalid_client(format!(
                "client_id: the client metadata document at {url} {why}"
            ))
        };
        let mut response = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    failed("did not answer within 5 s".into())
                } else if is_private_refusal(&e) {
                    failed("is on a private address; it must be on the public internet".into())
                } else {
                    failed("could not be fetched".into())
                }
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(failed(format!(
                "answered with a redirect ({status}); serve the document at its own URL"
            )));
        }
        if !status.is_success() {
            return Err(failed(format!("answered {status}")));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT as u64)
        {
            return Err(failed(format!(
                "is larger than {} KiB",
                MAX_DOCUMENT / 1024
            )));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_DOCUMENT {
                        return Err(failed(format!(
                            "is larger than {} KiB",
                            MAX_DOCUMENT / 1024
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(failed("did not arrive within 5 s".into())),
                Err(_) => return Err(failed("broke off while being read".into())),
            }
        }
        read_document(url, &body)
    }
}

fn is_private_refusal(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("resolves to a private address") {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "192.0.2.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "160.79.104.10", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn document_urls_are_https_with_a_path() {
        let strict = FetchPolicy::default();
        assert!(document_url("https://app.example/oauth/client.json", &strict).is_ok());
        for (bad, says) in [
            ("http://app.example/client.json", "https"),
            ("https://app.example/", "path"),
            ("https://app.example", "path"),
            ("https://u:p@app.example/c.json", "credentials"),
            ("https://app.example/c.json#x", "fragment"),
            ("https://app.example/a/../c.json", "canonical"),
            ("https://APP.example/c.json", "canonical"),
            ("not a url", "not a URL"),
        ] {
            let e = document_url(bad, &strict).unwrap_err();
            assert!(e.description.contains(says), "{bad}: {e}");
        }
        let tests = FetchPolicy {
            allow_private_addresses: true,
            extra_roots_pem: None,
        };
        assert!(document_url("http://127.0.0.1:9/client.json", &tests).is_ok());
    }

    #[test]
    fn a_document_must_name_itself() {
        let url = Url::parse("https://app.example/client.json").unwrap();
        let good = br#"{"client_id":"https://app.example/client.json","client_name":"App","redirect_uris":["http://127.0.0.1:3000/cb"]}"#;
        let client = read_document(&url, good).unwrap();
        assert_eq!(client.name, "App");
        assert_eq!(client.kind, ClientKind::MetadataDocument);
        assert_eq!(client.auth, ClientAuth::None);
        for (bad, says) in [
            (&br#"{"client_id":"https://evil.example/client.json","redirect_uris":["http://127.0.0.1/cb"]}"#[..], "names another client_id"),
            (br#"{"redirect_uris":["http://127.0.0.1/cb"]}"#, "has no client_id"),
            (br#"{"client_id":"https://app.example/client.json"}"#, "redirect_uris: required"),
            (br#"{"client_id":"https://app.example/client.json","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#, "only `none`"),
            (b"[]", "JSON object"),
        ] {
            let e = read_document(&url, bad).unwrap_err();
            assert!(e.description.contains(says), "{e}");
        }
    }

    #[tokio::test]
    async fn private_address_literals_are_refused_before_any_fetch() {
        let docs = MetadataDocuments::new(FetchPolicy::default()).unwrap();
        for id in [
            "https://127.0.0.1/client.json",
            "https://[::1]/client.json",
            "https://169.254.169.254/latest/meta-data",
        ] {
            let e = docs.client(id).await.unwrap_err();
            assert!(e.description.contains("private address"), "{id}: {e}");
        }
        // A name that resolves to loopback is refused by the resolver.
        let e = docs
            .client("https://localhost/client.json")
            .await
            .unwrap_err();
        assert!(e.description.contains("private address"), "{e}");
    }
}
