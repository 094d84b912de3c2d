//! Posted forms: the CSRF token checked before anything else, then the
//! fields, read into a struct.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Web;
use crate::layout;
use crate::session::{SignedIn, Viewer, redirect_with};

/// The largest form the console accepts (a form is a few short fields).
const MAX_FORM: usize = 64 * 1024;

/// A form whose CSRF token is the visitor's, and its fields.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

/// A form with no fields but its token.
#[derive(Deserialize)]
pub struct Empty {}

impl<T: DeserializeOwned> FromRequest<Arc<Web>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, web: &Arc<Web>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, web).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
            layout::error_page(
                &viewer,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form sent more than 64 KiB. Shorten what you typed and try again.",
            )
        })?;
        let token: Token = serde_urlencoded::from_bytes(&bytes).unwrap_or(Token {
            csrf: String::new(),
        });
        if !viewer.csrf_ok(&web.app.signer, &token.csrf) {
            tracing::warn!(path = %parts.uri.path(), "refused a form without a valid CSRF token");
            return Err(layout::error_page(
                &viewer,
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form did not carry this browser's security token: it was opened before you signed in or \
                 out, or it came from another site. Go back, reload the page and send it again.",
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            layout::error_page(
                &viewer,
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                &format!(
                    "{}. Reload the page and send the form again.",
                    openfactory_core::rules::truncate(&e.to_string(), 200)
                ),
            )
        })?;
        Ok(Posted { viewer, form })
    }
}

/// A form from a signed-in browser: its account, and its fields. A visitor
/// is sent to sign in, and nothing is done.
pub struct SignedForm<T> {
    pub user: SignedIn,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<Web>> for SignedForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, web: &Arc<Web>) -> Result<Self, Response> {
        let Posted { viewer, form } = Posted::<T>::from_request(request, web).await?;
        match viewer.account.clone() {
            Some(account) => Ok(SignedForm {
                user: SignedIn {
                    owner: account.owner(),
                    account,
                    viewer,
                },
                form,
            }),
            None => Err(redirect_with(web, "/signin", false, "Sign in to do that.")),
        }
    }
}

/// `value` percent-encoded for a query string.
pub fn encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s[2..].to_owned())
        .unwrap_or_default()
}

/// Where to go after signing in: a path on this site, never another site.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= 4096
                && !p.chars().any(char::is_control) =>
        {
            p.to_owned()
        }
        _ => "/".into(),
    }
}

/// A form field that should be a whole number: `None` when empty.
pub fn number(field: &str, value: &str) -> Result<Option<i64>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        format!(
            "{field}: `{}` is not a whole number",
            openfactory_core::rules::truncate(value, 20)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_path(Some("/builds/abc?x=1")), "/builds/abc?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "builds",
            "/a\nb",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn values_are_encoded_and_numbers_read() {
        assert_eq!(encode("/builds?a=1&b=2"), "%2Fbuilds%3Fa%3D1%26b%3D2");
        assert_eq!(number("memory_mb", " 512 "), Ok(Some(512)));
        assert_eq!(number("memory_mb", ""), Ok(None));
        assert!(
            number("memory_mb", "5; rm -rf /")
                .unwrap_err()
                .contains("memory_mb")
        );
    }
}
