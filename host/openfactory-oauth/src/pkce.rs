//! PKCE (RFC 7636), S256 only: OAuth 2.1 and the MCP authorization
//! specification forbid `plain`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::{OAuthError, shown};

/// The only method accepted.
pub const METHOD: &str = "S256";

/// A code challenge as an authorization request carries it: the method must
/// be S256 and the challenge the 43-character base64url of a SHA-256.
pub fn check_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<String, OAuthError> {
    let challenge = challenge.filter(|c| !c.is_empty()).ok_or_else(|| {
        OAuthError::invalid_request(
            "code_challenge: required (PKCE): send the base64url SHA-256 of a random code_verifier, with code_challenge_method=S256",
        )
    })?;
    match method {
        Some(METHOD) => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "code_challenge_method: `{}` is not supported; use S256",
                shown(other, 20)
            )));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method: required; use S256 (plain is not accepted)",
            ));
        }
    }
    let decodes = URL_SAFE_NO_PAD
        .decode(challenge)
        .is_ok_and(|bytes| bytes.len() == 32);
    if challenge.len() != 43 || !decodes {
        return Err(OAuthError::invalid_request(
            "code_challenge: must be the 43-character base64url (no padding) SHA-256 of the code_verifier",
        ));
    }
    Ok(challenge.to_owned())
}

/// Whether `verifier` is well formed (43 to 128 unreserved characters) and
/// hashes to `challenge`. The comparison takes as long whatever matches.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed & constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// Equal bytes, compared in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // A verifier and its S256 challenge (computed independently, with Python).
    const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";

    #[test]
    fn a_verifier_matches_its_challenge_and_nothing_else_does() {
        assert!(verifier_matches(VERIFIER, CHALLENGE));
        assert!(!verifier_matches(&VERIFIER.replace('d', "e"), CHALLENGE));
        // `plain`: the verifier itself as the challenge.
        assert!(!verifier_matches(VERIFIER, VERIFIER));
        // Too short, or characters outside the unreserved set.
        assert!(!verifier_matches("abc", CHALLENGE));
        let spaced = format!("{} ", &VERIFIER[..43]);
        assert!(!verifier_matches(&spaced, CHALLENGE));
    }

    #[test]
    fn only_s256_challenges_are_accepted() {
        assert_eq!(
            check_challenge(Some(CHALLENGE), Some("S256")).unwrap(),
            CHALLENGE
        );
        for (challenge, method, says) in [
            (None, Some("S256"), "code_challenge: required"),
            (Some(CHALLENGE), Some("plain"), "`plain` is not supported"),
            (Some(CHALLENGE), None, "code_challenge_method: required"),
            (Some("short"), Some("S256"), "43-character"),
        ] {
            let e = check_challenge(challenge, method).unwrap_err();
            assert!(e.description.contains(says), "{e}");
            assert_eq!(e.code, crate::ErrorCode::InvalidRequest);
        }
    }
}
