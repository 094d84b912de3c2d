//! Redirect URIs: which a client may register, and when an asked one is a
//! registered one. The match is exact (OAuth 2.1 §2.3.1), with the one
//! exception RFC 8252 §7.3 requires for native apps: on a loopback IP
//! address the port may differ, since a desktop client listens on whatever
//! port it gets.

use url::{Host, Url};

/// Longest redirect URI accepted.
const MAX_LEN: usize = 2000;
/// Schemes that are never a redirect target.
const FORBIDDEN_SCHEMES: [&str; 6] = ["javascript", "data", "file", "vbscript", "blob", "about"];

/// A loopback host a native app listens on: `127.0.0.1`, `[::1]`, or
/// `localhost` (NOT RECOMMENDED by RFC 8252, but clients use it).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether a client may register `uri`: `https://…`; `http://` on a
/// loopback host; or a private-use scheme in reverse-domain form
/// (`com.example.app:/callback`, `cursor://…`; RFC 8252 §7.1). Never with
/// a fragment, never longer than 2000 characters.
pub fn check_registrable(uri: &str) -> Result<Url, String> {
    let shown = crate::error::shown(uri, 80);
    if uri.len() > MAX_LEN {
        return Err(format!("`{shown}` is longer than {MAX_LEN} characters"));
    }
    let url = Url::parse(uri).map_err(|e| format!("`{shown}` is not an absolute URI ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!(
            "`{shown}` has a fragment (#…); redirect URIs may not"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{shown}` carries credentials; remove them"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "`{shown}`: http is allowed only on a loopback address (http://127.0.0.1:PORT/…); use https"
        )),
        scheme if FORBIDDEN_SCHEMES.contains(&scheme) => Err(format!(
            "`{shown}`: the `{scheme}` scheme cannot be a redirect URI"
        )),
        // A private-use scheme: a native app's own.
        _ => Ok(url),
    }
}

/// Whether the asked redirect URI is the registered one: the same string,
/// or, for http on a loopback host, the same but for the port.
pub fn matches(registered: &str, asked: &str) -> bool {
    if registered == asked {
        return true;
    }
    let (Ok(r), Ok(a)) = (Url::parse(registered), Url::parse(asked)) else {
        return false;
    };
    // The registered text but for the port: same scheme, host, path and query.
    r.scheme() == "http" && is_loopback(&r) && without_port(&r) == without_port(&a)
}

fn without_port(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_port(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_uris() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost:3030/callback",
            "http://[::1]/cb",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(check_registrable(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://evil.example/cb", "only on a loopback"),
            ("https://claude.ai/cb#frag", "fragment"),
            ("javascript:alert(1)", "`javascript` scheme"),
            ("/relative", "not an absolute URI"),
            ("https://user:pw@claude.ai/cb", "credentials"),
        ] {
            let e = check_registrable(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_registrable(&format!("https://a.example/{}", "x".repeat(2000))).is_err());
    }

    #[test]
    fn a_redirect_matches_exactly_but_for_a_loopback_port() {
        let claude = "https://claude.ai/api/mcp/auth_callback";
        assert!(matches(claude, claude));
        for near in [
            "https://claude.ai/api/mcp/auth_callbacK",
            "https://claude.ai/api/mcp/auth_callback/",
            "https://claude.ai/api/mcp/auth_callback?x=1",
            "https://claude.ai:444/api/mcp/auth_callback",
            "https://claude.ai.evil.example/api/mcp/auth_callback",
            "http://claude.ai/api/mcp/auth_callback",
        ] {
            assert!(!matches(claude, near), "{near}");
        }
        let native = "http://127.0.0.1:8000/callback";
        assert!(matches(native, "http://127.0.0.1:51234/callback"));
        assert!(matches(native, "http://127.0.0.1/callback"));
        assert!(!matches(native, "http://127.0.0.1:51234/callbacks"));
        assert!(!matches(native, "http://127.0.0.2:8000/callback"));
        assert!(!matches(native, "http://localhost:8000/callback"));
        assert!(!matches(native, "https://127.0.0.1:8000/callback"));
        // Ports never vary off loopback.
        assert!(!matches(
            "https://a.example:8443/cb",
            "https://a.example:9443/cb"
        ));
    }
}
