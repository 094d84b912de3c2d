//! Who is looking, and proof that a form came from our own page.
//!
//! - **Sign-in**: the cookie holds a web session's secret (32 random bytes;
//!   the database holds their SHA-256, see `openfactory_service::auth`).
//!   Signing out deletes the session. The cookie is
//!   `HttpOnly`, `SameSite=Lax`, and `Secure` (named `__Host-…`) when the
//!   console is served over https.
//! - **CSRF**: every visitor gets a random `csrf` cookie (`SameSite=Strict`);
//!   every form carries a MAC of it together with the sign-in, so a token
//!   is worthless in another browser or after signing in or out. Every POST
//!   is checked before anything else runs.
//! - **Flash**: a one-line message for the page after a redirect, in a
//!   signed cookie that the next page clears.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openfactory_service::auth::{self, WEB_SESSION_SECONDS};
use openfactory_service::links::LinkSigner;
use openfactory_store::{Account, OwnerId};

use crate::Web;

/// The cookies' names: `__Host-` prefixed when they are `Secure`.
struct Names {
    session: &'static str,
    csrf: &'static str,
    flash: &'static str,
}

fn names(secure: bool) -> Names {
    if secure {
        Names {
            session: "__Host-of_session",
            csrf: "__Host-of_csrf",
            flash: "__Host-of_flash",
        }
    } else {
        Names {
            session: "of_session",
            csrf: "of_csrf",
            flash: "of_flash",
        }
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn cookie(web: &Web, name: &'static str, value: String, same_site: SameSite) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(web.settings.secure_cookies)
        .same_site(same_site)
        .build()
}

fn set_cookie(headers: &mut HeaderMap, cookie: Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        headers.append(header::SET_COOKIE, value);
    }
}

fn expired(web: &Web, name: &'static str) -> Cookie<'static> {
    let mut c = cookie(web, name, String::new(), SameSite::Lax);
    c.make_removal();
    c
}

/// A message shown once, on the page after a redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// What the cookie layer found, for the extractors.
#[derive(Clone)]
struct Found {
    csrf: String,
    flash: Option<Flash>,
}

/// Every request: make sure the browser has a CSRF cookie; take the flash
/// message, and clear it once a page has been answered.
pub async fn cookies(State(web): State<Arc<Web>>, mut request: Request, next: Next) -> Response {
    let names = names(web.settings.secure_cookies);
    let jar = CookieJar::from_headers(request.headers());
    let (csrf, new_csrf) = match jar.get(names.csrf).map(|c| c.value().to_owned()) {
        Some(v) if v.len() >= 32 && v.len() <= 64 => (v, false),
        _ => (random_secret(), true),
    };
    let flash = jar
        .get(names.flash)
        .and_then(|c| read_flash(&web, c.value()));
    let had_flash = jar.get(names.flash).is_some();
    request.extensions_mut().insert(Found {
        csrf: csrf.clone(),
        flash,
    });
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if new_csrf {
        set_cookie(headers, cookie(&web, names.csrf, csrf, SameSite::Strict));
    }
    // A redirect carries the flash on to the page that shows it.
    let shown = !response.status().is_redirection();
    if had_flash && shown && !sets(response.headers(), names.flash) {
        set_cookie(response.headers_mut(), expired(&web, names.flash));
    }
    response
}

fn sets(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(format!("{name}=").as_bytes()))
}

fn read_flash(web: &Web, value: &str) -> Option<Flash> {
    let (body, tag) = value.rsplit_once('.')?;
    if !web.app.signer.check_tag("flash", body, tag) {
        return None;
    }
    let (kind, text) = body.split_once('.')?;
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
    Some(Flash {
        ok: kind == "ok",
        text,
    })
}

/// A redirect (303) that shows `text` on the page it leads to.
pub fn redirect_with(web: &Web, to: &str, ok: bool, text: &str) -> Response {
    let body = format!(
        "{}.{}",
        if ok { "ok" } else { "bad" },
        URL_SAFE_NO_PAD.encode(text.as_bytes())
    );
    let tag = web.app.signer.tag("flash", &body);
    let mut response = Redirect::to(to).into_response();
    let names = names(web.settings.secure_cookies);
    set_cookie(
        response.headers_mut(),
        cookie(web, names.flash, format!("{body}.{tag}"), SameSite::Lax),
    );
    response
}

/// The visitor: signed in or not, with the token their forms carry.
#[derive(Clone)]
pub struct Viewer {
    pub account: Option<Account>,
    /// The id of the browser's web session (the hash of its cookie's secret).
    pub session: Option<String>,
    /// The CSRF token to put in every form.
    pub csrf: String,
    /// What the token is the signer's tag of: the `csrf` cookie and the session.
    csrf_data: String,
    pub flash: Option<Flash>,
    /// The path (and query) asked for, for `?next=` after signing in.
    pub path: String,
    /// The client's address (its IP session, for claiming).
    pub ip: IpAddr,
}

impl Viewer {
    pub fn owner(&self) -> Option<OwnerId> {
        self.account.as_ref().map(Account::owner)
    }

    pub fn is_operator(&self) -> bool {
        self.account.as_ref().is_some_and(|a| a.operator)
    }
}

/// What a visitor's CSRF token is the tag of: a form posted with it must come
/// from this browser (its `csrf` cookie) in this web session.
fn csrf_data(csrf_cookie: &str, session: Option<&str>) -> String {
    format!("{csrf_cookie}\n{}", session.unwrap_or(""))
}

impl FromRequestParts<Arc<Web>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Viewer, Response> {
        let found = parts
            .extensions
            .get::<Found>()
            .cloned()
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        let names = names(web.settings.secure_cookies);
        let jar = CookieJar::from_headers(&parts.headers);
        let mut account = None;
        let mut session = None;
        if let Some(secret) = jar.get(names.session).map(|c| c.value()) {
            match auth::web_session(&web.app.store, secret).await {
                Ok(Some(found)) => {
                    account = Some(found.account);
                    session = Some(found.id);
                }
                Ok(None) => {}
                Err(_) => {
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server could not reach its database; try again in a moment\n",
                    )
                        .into_response());
                }
            }
        }
        let csrf_data = csrf_data(&found.csrf, session.as_deref());
        Ok(Viewer {
            csrf: web.app.signer.tag("csrf", &csrf_data),
            csrf_data,
            account,
            session,
            flash: found.flash,
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into()),
            ip: web.owners.client_ip(peer, &parts.headers),
        })
    }
}

impl Viewer {
    /// Whether a posted form's token is this visitor's.
    /// The signer checks the tag in constant time: how long the check takes
    /// says nothing about how much of the token was right.
    pub fn csrf_ok(&self, signer: &LinkSigner, token: &str) -> bool {
        signer.check_tag("csrf", &self.csrf_data, token)
    }
}

/// A signed-in visitor. Anyone else is sent to the sign-in page (and a
/// fragment request, made by script, gets 401).
pub struct SignedIn {
    pub viewer: Viewer,
    pub account: Account,
    pub owner: OwnerId,
}

impl FromRequestParts<Arc<Web>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<SignedIn, Response> {
        let viewer = Viewer::from_request_parts(parts, web).await?;
        match viewer.account.clone() {
            Some(account) => Ok(SignedIn {
                owner: account.owner(),
                account,
                viewer,
            }),
            None if parts.uri.query().is_some_and(|q| q.contains("part=")) => {
                Err((StatusCode::UNAUTHORIZED, "sign in first\n").into_response())
            }
            None if parts.method == http::Method::GET => Err(Redirect::to(&format!(
                "/signin?next={}",
                crate::form::encode(&viewer.path)
            ))
            .into_response()),
            None => Err(redirect_with(
                web,
                "/signin",
                false,
                "Your session has ended; sign in again.",
            )),
        }
    }
}

/// Sign the browser in as `account` and send it on `to`: a new web session
/// and its cookie (or a page that says the database failed).
pub async fn sign_in(web: &Web, viewer: &Viewer, account_id: &str, to: &str) -> Response {
    let secret = match auth::create_web_session(&web.app.store, account_id).await {
        Ok(secret) => secret,
        Err(e) => {
            return crate::layout::error_page(
                viewer,
                e.kind.http_status(),
                "Could not sign in",
                &e.message,
            );
        }
    };
    let names = names(web.settings.secure_cookies);
    let mut response = Redirect::to(to).into_response();
    let mut c = cookie(web, names.session, secret, SameSite::Lax);
    c.set_max_age(time::Duration::seconds(WEB_SESSION_SECONDS));
    set_cookie(response.headers_mut(), c);
    response
}

/// Sign this browser out: its web session goes, and its cookie.
pub async fn sign_out(web: &Web, viewer: &Viewer) -> Response {
    if let Some(session) = &viewer.session
        && let Err(e) = auth::delete_web_session(&web.app.store, session).await
    {
        tracing::error!(error = %e, "could not delete a web session");
    }
    let names = names(web.settings.secure_cookies);
    let mut response = redirect_with(web, "/", true, "You are signed out.");
    set_cookie(response.headers_mut(), expired(web, names.session));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_are_host_prefixed() {
        assert_eq!(names(true).session, "__Host-of_session");
        assert_eq!(names(false).csrf, "of_csrf");
    }

    #[test]
    fn a_csrf_token_is_good_for_its_browser_and_session_only() {
        let signer = LinkSigner::new([7; 32]);
        let viewer = |cookie: &str, session: Option<&str>| Viewer {
            account: None,
            session: session.map(str::to_owned),
            csrf: signer.tag("csrf", &csrf_data(cookie, session)),
            csrf_data: csrf_data(cookie, session),
            flash: None,
            path: "/".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
        };
        let mine = viewer("cookie-a", Some("session-1"));
        assert!(mine.csrf_ok(&signer, &mine.csrf));
        // Another browser's token, this browser's token from before it signed in, a
        // token with its last character changed, and none at all are refused.
        let other = viewer("cookie-b", Some("session-1"));
        let before = viewer("cookie-a", None);
        let mut altered = mine.csrf.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        for token in [&other.csrf, &before.csrf, &altered, &String::new()] {
            assert!(!mine.csrf_ok(&signer, token), "{token}");
        }
        // And a different key refuses the right token.
        assert!(!mine.csrf_ok(&LinkSigner::new([8; 32]), &mine.csrf));
    }

    #[test]
    fn csrf_secrets_are_random() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
