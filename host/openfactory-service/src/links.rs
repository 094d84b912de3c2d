//! Signed, expiring download links: `?token=<owner>.<expires>.<mac>`.
//!
//! The token names the owner, so the download route looks the build up with
//! the same owner-scoped query as every tool; the HMAC makes it unforgeable
//! and the expiry makes a leaked link short-lived.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use openfactory_store::OwnerId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Seconds since the epoch, the clock links are signed against.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A link's expiry for people: RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// How long a download link works.
pub const LINK_LIFETIME_SECONDS: i64 = 3600;

pub struct LinkSigner {
    key: [u8; 32],
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the download link is malformed; ask for a new download link")]
    Malformed,
    #[error("the download link has expired; ask for a new download link")]
    Expired,
    #[error("the download link is not valid")]
    BadSignature,
}

impl LinkSigner {
    pub fn new(key: [u8; 32]) -> Self {
        LinkSigner { key }
    }

    /// The key in `path`, created (32 random bytes, mode 0600) if missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        if let Ok(bytes) = std::fs::read(path)
            && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(LinkSigner { key });
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(&key)?;
        Ok(LinkSigner { key })
    }

    fn mac(&self, purpose: &str, resource: &str, owner: &str, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(
            format!("openfactory-link-v1\n{purpose}\n{resource}\n{owner}\n{expires}").as_bytes(),
        );
        mac
    }

    /// A token for `owner` to fetch `resource` for `purpose` until `expires`.
    pub fn sign(&self, purpose: &str, resource: &str, owner: &OwnerId, expires: i64) -> String {
        let tag = self
            .mac(purpose, resource, owner.as_str(), expires)
            .finalize()
            .into_bytes();
        format!(
            "{}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(owner.as_str()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// A MAC of `data` for `purpose`, for values the server hands out and
    /// takes back (form tokens, cookies): base64url, unforgeable without the key.
    pub fn tag(&self, purpose: &str, data: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.tag_mac(purpose, data).finalize().into_bytes())
    }

    /// Whether `tag` is [`LinkSigner::tag`] of `data` for `purpose` (in constant time).
    pub fn check_tag(&self, purpose: &str, data: &str, tag: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        self.tag_mac(purpose, data).verify_slice(&tag).is_ok()
    }

    fn tag_mac(&self, purpose: &str, data: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("openfactory-tag-v1\n{purpose}\n{data}").as_bytes());
        mac
    }

    /// The owner a valid token was made for.
    pub fn verify(
        &self,
        purpose: &str,
        resource: &str,
        token: &str,
        now: i64,
    ) -> Result<OwnerId, LinkError> {
        let mut parts = token.splitn(3, '.');
        let (Some(owner), Some(expires), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Malformed);
        };
        let owner = URL_SAFE_NO_PAD
            .decode(owner)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(LinkError::Malformed)?;
        let expires: i64 = expires.parse().map_err(|_| LinkError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Malformed)?;
        self.mac(purpose, resource, &owner, expires)
            .verify_slice(&tag)
            .map_err(|_| LinkError::BadSignature)?;
        if now > expires {
            return Err(LinkError::Expired);
        }
        OwnerId::parse(&owner).ok_or(LinkError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_owner_resource_and_time() {
        let signer = LinkSigner::new([7; 32]);
        let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
        let token = signer.sign("iso", "b1", &alice, 1000);
        assert_eq!(signer.verify("iso", "b1", &token, 999), Ok(alice.clone()));
        assert_eq!(
            signer.verify("iso", "b1", &token, 1001),
            Err(LinkError::Expired)
        );
        assert_eq!(
            signer.verify("iso", "b2", &token, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify("log", "b1", &token, 999),
            Err(LinkError::BadSignature)
        );
        // Another owner's name with alice's tag does not pass.
        let bob = URL_SAFE_NO_PAD.encode("ip:192.0.2.2");
        let forged = format!("{bob}.{}", token.split_once('.').unwrap().1);
        assert_eq!(
            signer.verify("iso", "b1", &forged, 999),
            Err(LinkError::BadSignature)
        );
        // A later expiry with the same tag does not pass either.
        let parts: Vec<&str> = token.split('.').collect();
        let extended = format!("{}.99999.{}", parts[0], parts[2]);
        assert_eq!(
            signer.verify("iso", "b1", &extended, 999),
            Err(LinkError::BadSignature)
        );
        for junk in ["", "a.b", "a.b.c", "..", "x.1.%%%"] {
            assert!(signer.verify("iso", "b1", junk, 0).is_err(), "{junk}");
        }
        assert!(
            LinkSigner::new([8; 32])
                .verify("iso", "b1", &token, 999)
                .is_err()
        );
    }

    #[test]
    fn tags_bind_purpose_and_data() {
        let signer = LinkSigner::new([7; 32]);
        let tag = signer.tag("csrf", "abc");
        assert!(signer.check_tag("csrf", "abc", &tag));
        assert!(!signer.check_tag("csrf", "abd", &tag));
        assert!(!signer.check_tag("flash", "abc", &tag));
        assert!(!signer.check_tag("csrf", "abc", ""));
        assert!(!signer.check_tag("csrf", "abc", "%%%"));
        assert!(!LinkSigner::new([8; 32]).check_tag("csrf", "abc", &tag));
    }
}
