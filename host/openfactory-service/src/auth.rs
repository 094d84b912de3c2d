//! Accounts, sessions and MCP API keys.
//!
//! - People register and sign in over `/api/auth/*` (argon2id password
//!   hashes; each email may try [`SIGN_IN_BURST`] sign-ins at once, then one
//!   every [`SIGN_IN_PERIOD`]) and get a signed session token (HMAC, 12 hours); or, in the
//!   web console, a web session (a random cookie secret, its SHA-256 in the
//!   store, 7 days).
//! - With it they manage keys at `/api/mcp-keys`: `of_mcp_` + 40 hex digits,
//!   shown once, stored as SHA-256.
//! - An MCP client sending `Authorization: Bearer of_mcp_…` (an API key) or
//!   `Bearer of_oat_…` (an OAuth access token, see `openfactory_oauth`) acts
//!   as the account; without the header, as its IP address (unless the
//!   server refuses anonymous callers). A wrong, expired or revoked
//!   credential is refused (401), never silently treated as the IP session.
//! - Revoking a key or a connected client (an OAuth grant) cancels its token
//!   here, which closes every open stream that authenticated with it.
//! - An address's work (its IP session's recipes, builds, VMs and test runs)
//!   can be claimed into an account.
//!
//! Account, key, web session and claim operations take the store (and what
//! else they use), not the whole [`App`]: the CLI calls them without plugins
//! or a VM backend.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use openfactory_oauth::{ACCESS_TOKEN_PREFIX, AccessError, OAuthError};
use openfactory_store::{Account, Claimed, KeyLookup, McpKey, OAuthGrant, OwnerId, Store};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::error::{Error, Result};
use crate::links::LinkSigner;
use crate::next::Action;
use crate::throttle::{self, Throttle};

pub const KEY_PREFIX: &str = "of_mcp_";
/// Characters of a key kept to tell keys apart.
const SHOWN_PREFIX: usize = 13;
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// How long a browser stays signed in.
pub const WEB_SESSION_SECONDS: i64 = 7 * 24 * 3600;
const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;
/// Sign-ins one email may try at once; then one more every [`SIGN_IN_PERIOD`]
/// (so a password is guessed at most 20 times an hour, after the first 10).
pub const SIGN_IN_BURST: u32 = 10;
pub const SIGN_IN_PERIOD: Duration = Duration::from_secs(3 * 60);

/// What a signed-in MCP caller presented: an API key, or an OAuth access
/// token of a grant (a connected client).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    Key(String),
    Grant(String),
}

/// An MCP caller that presented a valid credential: the account, and what
/// it presented.
#[derive(Debug, Clone)]
pub struct AccountCaller {
    pub owner: OwnerId,
    pub credential: Credential,
}

/// Why a presented credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    Key(KeyError),
    Token(AccessError),
}

impl CredentialError {
    pub fn message(&self) -> &'static str {
        match self {
            CredentialError::Key(e) => e.message(),
            CredentialError::Token(e) => e.message(),
        }
    }

    /// The credential could not be checked (not: it is wrong).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CredentialError::Key(KeyError::Unavailable)
                | CredentialError::Token(AccessError::Unavailable)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not a key of ours (or not a key at all).
    Invalid,
    Revoked,
    Unavailable,
}

impl KeyError {
    pub fn message(&self) -> &'static str {
        match self {
            KeyError::Invalid => {
                "Invalid API key: check the Authorization header (Bearer of_mcp_…), create a new key, or remove the header to use your IP session"
            }
            KeyError::Revoked => {
                "Invalid API key: this key was revoked; create a new one, or remove the Authorization header to use your IP session"
            }
            KeyError::Unavailable => "the server could not check the API key; try again later",
        }
    }
}

/// State the auth layer keeps in memory: which streams each credential
/// holds open, and each email's sign-in budget.
pub struct Auth {
    connections: Mutex<HashMap<Credential, CancellationToken>>,
    sign_ins: Throttle<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            connections: Mutex::default(),
            sign_ins: Throttle::new(
                NonZeroU32::new(SIGN_IN_BURST).expect("above zero"),
                SIGN_IN_PERIOD,
            ),
        }
    }
}

impl Auth {
    /// The token every stream opened with `credential` ends on.
    pub fn streams_of(&self, credential: &Credential) -> CancellationToken {
        self.connections
            .lock()
            .expect("auth lock")
            .entry(credential.clone())
            .or_default()
            .clone()
    }

    /// Close every stream opened with `credential` (in this process).
    pub fn disconnect(&self, credential: &Credential) {
        if let Some(token) = self
            .connections
            .lock()
            .expect("auth lock")
            .remove(credential)
        {
            token.cancel();
        }
    }

    /// Spend one of `email`'s sign-in attempts; `Err`: how long until it has one.
    fn attempt(&self, email: &str) -> std::result::Result<(), Duration> {
        self.sign_ins.check(&email.to_owned())
    }
}

pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key: its secret (shown once), its shown prefix and its hash.
fn new_key() -> (String, String, String) {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let prefix = key[..SHOWN_PREFIX].to_owned();
    let hash = key_hash(&key);
    (key, prefix, hash)
}

fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// The caller's account, if the request carries a credential: an API key
/// or an OAuth access token. `Ok(None)`: no Authorization header (an
/// anonymous caller).
pub async fn account_caller(
    app: &App,
    headers: &HeaderMap,
) -> std::result::Result<Option<AccountCaller>, CredentialError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bearer = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| k.len() <= 128);
    match bearer {
        Some(token) if token.starts_with(ACCESS_TOKEN_PREFIX) => {
            let grant = app
                .oauth
                .access(token)
                .await
                .map_err(CredentialError::Token)?;
            Ok(Some(AccountCaller {
                owner: OwnerId::account(&grant.account_id),
                credential: Credential::Grant(grant.grant_id),
            }))
        }
        Some(key) if key.starts_with(KEY_PREFIX) => key_caller(app, key)
            .await
            .map(Some)
            .map_err(CredentialError::Key),
        _ => Err(CredentialError::Key(KeyError::Invalid)),
    }
}

async fn key_caller(app: &App, key: &str) -> std::result::Result<AccountCaller, KeyError> {
    match app.store.key_by_hash(&key_hash(key)).await {
        Ok(KeyLookup::Valid(found)) => Ok(AccountCaller {
            owner: OwnerId::account(&found.account_id),
            credential: Credential::Key(found.key_id),
        }),
        Ok(KeyLookup::Revoked(_)) => Err(KeyError::Revoked),
        Ok(KeyLookup::Unknown) => Err(KeyError::Invalid),
        Err(e) => {
            tracing::error!(error = %e, "could not look up an API key");
            Err(KeyError::Unavailable)
        }
    }
}

pub fn check_email(email: &str) -> Result<String> {
    let email = email.trim().to_ascii_lowercase();
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(email)
    } else {
        Err(Error::invalid(
            "email",
            "email: give an address like ada@example.org (at most 254 characters)",
        ))
    }
}

fn hash_password(password: &str) -> Result<String> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(Error::invalid(
            "password",
            format!(
                "password: use {MIN_PASSWORD} to {MAX_PASSWORD} characters (a passphrase of a few words works well)"
            ),
        ));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS has randomness");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes encode");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("the password could not be hashed: {e}")))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A burned hash to verify against when the email is unknown, so that the
/// answer takes as long either way.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").expect("hashes"))
}

/// A session token for the account, and when it expires.
pub fn session_token(signer: &LinkSigner, account_id: &str) -> (String, i64) {
    let expires = crate::links::unix_now() + SESSION_SECONDS;
    let token = signer.sign("session", "", &OwnerId::account(account_id), expires);
    (token, expires)
}

/// The account a session token (`Authorization: Bearer …`) was made for.
pub fn session_account(signer: &LinkSigner, headers: &HeaderMap) -> Result<String> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::unauthorized(
                "sign in first: send Authorization: Bearer <token from /api/auth/login>",
            )
        })?;
    if token.starts_with(KEY_PREFIX) {
        return Err(Error::unauthorized(
            "this needs a session token from /api/auth/login, not an MCP API key",
        ));
    }
    let invalid = || Error::unauthorized("the session token is not valid; sign in again");
    let owner = signer
        .verify("session", "", token, crate::links::unix_now())
        .map_err(|e| match e {
            crate::links::LinkError::Expired => {
                Error::unauthorized("the session has expired; sign in again")
            }
            _ => invalid(),
        })?;
    owner.account_id().map(str::to_owned).ok_or_else(invalid)
}

/// What registration and sign-in answer.
#[derive(Debug, serde::Serialize)]
pub struct Session {
    pub account_id: String,
    pub email: String,
    pub token: String,
    pub expires_at: String,
}

fn session(signer: &LinkSigner, account: Account) -> Session {
    let (token, expires) = session_token(signer, &account.id);
    Session {
        account_id: account.id,
        email: account.email,
        token,
        expires_at: crate::links::rfc3339(expires),
    }
}

/// A new account: the email checked and normalised, the password hashed
/// (off the async runtime). Both problems at once when both are wrong; a
/// conflict when the email is taken.
pub async fn create_account(store: &Store, email: &str, password: &str) -> Result<Account> {
    let email = check_email(email);
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await?;
    let (email, hash) = match (email, hash) {
        (Ok(e), Ok(h)) => (e, h),
        (e, h) => {
            let errors: Vec<Error> = [e.err(), h.err()].into_iter().flatten().collect();
            let message = errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let first = errors.into_iter().next().expect("one failed");
            return Err(Error { message, ..first });
        }
    };
    Ok(store.create_account(&new_id(), &email, &hash).await?)
}

/// A new account, signed in.
pub async fn register(
    store: &Store,
    signer: &LinkSigner,
    email: &str,
    password: &str,
) -> Result<Session> {
    let account = create_account(store, email, password).await?;
    Ok(session(signer, account))
}

/// The account with this email, if any (the email normalised first).
pub async fn account_by_email(store: &Store, email: &str) -> Result<Option<Account>> {
    let email = check_email(email)?;
    Ok(store.account_by_email(&email).await?)
}

/// Make the account with this email an operator (who sees the plugins'
/// details and load problems), or take that back.
pub async fn set_operator(store: &Store, email: &str, operator: bool) -> Result<Account> {
    let account = account_by_email(store, email).await?.ok_or_else(|| {
        Error::not_found(format!(
            "no account has the email {}",
            openfactory_core::rules::truncate(email.trim(), 80)
        ))
    })?;
    store.set_operator(&account.email, operator).await?;
    Ok(account)
}

/// A signed-in account, or `unauthorized` if it no longer exists.
pub async fn account(store: &Store, account_id: &str) -> Result<Account> {
    store
        .account(account_id)
        .await?
        .ok_or_else(|| Error::unauthorized("the account no longer exists"))
}

pub enum SignInError {
    Wrong,
    /// Too many sign-ins for this email: try again in this many seconds.
    Throttled(u64),
    Other(Error),
}

pub async fn login(
    app: &App,
    email: &str,
    password: &str,
) -> std::result::Result<Session, SignInError> {
    let email = email.trim().to_ascii_lowercase();
    if let Err(wait) = app.auth.attempt(&email) {
        return Err(SignInError::Throttled(throttle::seconds(wait)));
    }
    let account = app
        .store
        .account_by_email(&email)
        .await
        .map_err(|e| SignInError::Other(e.into()))?;
    let hash = account
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |a| a.password_hash.clone());
    let password = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .unwrap_or(false);
    match account {
        Some(account) if matches => Ok(session(&app.signer, account)),
        _ => Err(SignInError::Wrong),
    }
}

/// A new key for the account: the secret is in the answer, once.
#[derive(Debug, serde::Serialize)]
pub struct CreatedKey {
    pub key_id: String,
    pub name: String,
    /// The key itself. It is not stored: copy it now.
    pub key: String,
    pub prefix: String,
    pub created_at: String,
}

fn check_key_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "name: give 1 to 64 characters of plain text, e.g. \"Claude Desktop\"",
        ));
    }
    Ok(name.to_owned())
}

pub async fn create_key(store: &Store, account_id: &str, name: &str) -> Result<CreatedKey> {
    let name = check_key_name(name)?;
    let (key, prefix, hash) = new_key();
    let stored = store
        .create_key(account_id, &new_id(), &name, &prefix, &hash)
        .await?;
    Ok(CreatedKey {
        key_id: stored.key_id,
        name: stored.name,
        key,
        prefix: stored.prefix,
        created_at: stored.created_at,
    })
}

/// The account's keys, newest first, revoked ones included (never their secrets).
pub async fn keys(store: &Store, account_id: &str) -> Result<Vec<McpKey>> {
    Ok(store.keys(account_id).await?)
}

/// Revoke a key and close every stream it holds open in this process (`auth`
/// is the process's stream registry); another process refuses the key from
/// its next request on.
pub async fn revoke_key(
    store: &Store,
    auth: &Auth,
    account_id: &str,
    key_id: &str,
) -> Result<McpKey> {
    let revoked = store.revoke_key(account_id, key_id).await?.ok_or_else(|| {
        Error::not_found(format!(
            "key `{}` not found",
            openfactory_core::rules::truncate(key_id, 40)
        ))
        .see(Action::ListKeys)
    })?;
    auth.disconnect(&Credential::Key(key_id.to_owned()));
    tracing::info!(key = %key_id, "API key revoked; its connections closed");
    Ok(revoked)
}

/// The account's connected clients (OAuth grants), newest first, removed
/// ones included.
pub async fn connected_clients(app: &App, account_id: &str) -> Result<Vec<OAuthGrant>> {
    app.oauth
        .grants(account_id)
        .await
        .map_err(oauth_unavailable)
}

/// Remove a connected client: its tokens stop working and every stream it
/// holds open in this process closes (another process refuses its tokens
/// from their next request on).
pub async fn remove_connected_client(
    app: &App,
    account_id: &str,
    grant_id: &str,
) -> Result<OAuthGrant> {
    let removed = app
        .oauth
        .revoke_grant(account_id, grant_id)
        .await
        .map_err(oauth_unavailable)?
        .ok_or_else(|| {
            Error::not_found(format!(
                "connected client `{}` not found",
                openfactory_core::rules::truncate(grant_id, 40)
            ))
        })?;
    app.auth
        .disconnect(&Credential::Grant(removed.grant_id.clone()));
    tracing::info!(grant = %removed.grant_id, client = %removed.client_id, "connected client removed; its connections closed");
    Ok(removed)
}

/// The token endpoint: new tokens, or the OAuth error. A replayed code or
/// refresh token revokes its grant, whose streams close here.
pub async fn oauth_token(
    app: &App,
    form: &[u8],
    authorization: Option<&str>,
) -> std::result::Result<openfactory_oauth::TokenResponse, OAuthError> {
    let answer = app.oauth.token(form, authorization).await;
    if let Err(OAuthError {
        revoked_grant: Some(grant),
        ..
    }) = &answer
    {
        app.auth.disconnect(&Credential::Grant(grant.clone()));
    }
    answer
}

/// Token revocation (RFC 7009), closing the grant's streams.
pub async fn oauth_revoke(
    app: &App,
    form: &[u8],
    authorization: Option<&str>,
) -> std::result::Result<(), OAuthError> {
    if let Some(grant) = app.oauth.revoke(form, authorization).await? {
        app.auth.disconnect(&Credential::Grant(grant.grant_id));
    }
    Ok(())
}

fn oauth_unavailable(e: OAuthError) -> Error {
    Error::new(crate::ErrorKind::Unavailable, e.description)
}

/// A browser signed in: the secret for its cookie (the store keeps only its
/// SHA-256, the session's id).
pub async fn create_web_session(store: &Store, account_id: &str) -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    store
        .create_web_session(
            &web_session_id(&secret),
            account_id,
            crate::links::unix_now() + WEB_SESSION_SECONDS,
        )
        .await?;
    Ok(secret)
}

/// A web session's id: the SHA-256 of its cookie's secret.
fn web_session_id(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A browser that is signed in: its session's id and its account.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub id: String,
    pub account: Account,
}

/// The web session a cookie's secret opens, if it exists and has not expired.
pub async fn web_session(store: &Store, secret: &str) -> Result<Option<WebSession>> {
    let id = web_session_id(secret);
    Ok(store
        .web_session_account(&id)
        .await?
        .map(|account| WebSession { id, account }))
}

/// Sign one browser out (by its session's id).
pub async fn delete_web_session(store: &Store, id: &str) -> Result<()> {
    Ok(store.delete_web_session(id).await?)
}

/// Sign every browser of the account out; how many were signed in.
pub async fn delete_web_sessions(store: &Store, account_id: &str) -> Result<u64> {
    Ok(store.delete_web_sessions(account_id).await?)
}

/// What an address (an IP session) holds, to claim into an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Holdings {
    pub recipes: usize,
    pub builds: usize,
    pub vms: usize,
    pub test_runs: usize,
}

impl Holdings {
    pub fn is_empty(&self) -> bool {
        self.recipes + self.builds + self.vms + self.test_runs == 0
    }
}

/// What `address` holds (at most 1000 builds and test runs are counted).
pub async fn address_holdings(store: &Store, address: &OwnerId) -> Result<Holdings> {
    Ok(Holdings {
        recipes: store.recipes(address).await?.len(),
        builds: store.builds(address, None, 1000).await?.len(),
        vms: store.vms(address, None).await?.len(),
        test_runs: store.test_runs(address, None, 1000).await?.len(),
    })
}

/// Move everything `address` (an IP session) owns into the account: all of
/// it, or, when a recipe id or VM name is taken in the account, nothing.
pub async fn claim_address(store: &Store, address: &OwnerId, account_id: &str) -> Result<Claimed> {
    let claimed = store.claim(address, &OwnerId::account(account_id)).await?;
    tracing::info!(account = %account_id, from = %address, ?claimed, "IP session claimed");
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_the_reference_says() {
        let (key, prefix, hash) = new_key();
        assert!(key.starts_with("of_mcp_") && key.len() == 47, "{key}");
        assert!(key.starts_with(&prefix) && prefix.len() == 13);
        assert_eq!(hash, key_hash(&key));
        assert_ne!(new_key().0, key);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", &hash));
        assert!(!password_matches("wrong horse battery", &hash));
        let e = hash_password("short").unwrap_err();
        assert!(e.message.contains("10 to 1024") && e.field() == Some("password"));
    }

    #[test]
    fn emails_are_checked_and_normalised() {
        assert_eq!(check_email(" Ada@Example.org ").unwrap(), "ada@example.org");
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "a b@example.org",
            "ada@example",
            "ada@.org",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_ins_are_throttled_per_email() {
        let auth = Auth::default();
        for _ in 0..SIGN_IN_BURST {
            assert!(auth.attempt("a@b.c").is_ok());
        }
        let wait = auth.attempt("a@b.c").unwrap_err();
        assert!(
            wait <= SIGN_IN_PERIOD && wait > SIGN_IN_PERIOD / 2,
            "{wait:?}"
        );
        assert!(auth.attempt("other@b.c").is_ok());
    }
}
