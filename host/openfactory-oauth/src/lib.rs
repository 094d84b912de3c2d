//! OpenFactory's OAuth 2.1 authorization server, as the MCP authorization
//! specification (2025-11-25 and later) asks of one: hosted MCP clients
//! (Claude.ai's connectors and the like) cannot send an API key, so they
//! sign their user in here and get tokens that act as the account.
//!
//! - [`discovery`]: the metadata documents (RFC 8414, RFC 9728).
//! - [`clients`]: registered clients (RFC 7591); [`metadata_document`]:
//!   clients identified by the URL of their metadata document.
//! - [`redirect`]: exact redirect URI matching (RFC 8252 loopback ports).
//! - [`pkce`]: S256 only.
//! - This module: the flows. An authorization request is checked
//!   ([`OAuth::check_authorization`]); the web console shows it and the
//!   person approves ([`OAuth::approve`]) or denies; the client redeems the
//!   code at the token endpoint ([`OAuth::token`]) and refreshes with
//!   rotating refresh tokens; resource requests present the access token
//!   ([`OAuth::access`]).
//!
//! Every code and token is 256 random bits, stored as its SHA-256. A grant
//! (one approval) is the family of everything issued under it: a replayed
//! code or refresh token revokes the whole family (OAuth 2.1 §4.3.1, §6.1).
//! Access tokens are bound to the resource they were asked for (RFC 8707)
//! and only this server's resources are accepted.
//!
//! This crate speaks OAuth, not HTTP routing or HTML: the HTTP server
//! mounts its endpoints and the web console renders the consent page.

pub mod clients;
pub mod discovery;
pub mod error;
pub mod metadata_document;
pub mod pkce;
pub mod redirect;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openfactory_store::{AccessLookup, CodeRedemption, OAuthGrant, RefreshUse, Store, TokenKind};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use clients::{Client, ClientKind};
use error::shown;
pub use error::{ErrorCode, OAuthError};
pub use metadata_document::FetchPolicy;

/// The one scope: what the account may do over MCP.
pub const SCOPE: &str = "mcp";
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
pub const TOKEN_PATH: &str = "/oauth/token";
pub const REGISTER_PATH: &str = "/oauth/register";
pub const REVOKE_PATH: &str = "/oauth/revoke";

pub const ACCESS_TOKEN_PREFIX: &str = "of_oat_";
const REFRESH_TOKEN_PREFIX: &str = "of_ort_";
const CODE_PREFIX: &str = "of_oac_";
/// How long a code may wait for its redemption.
const CODE_SECONDS: i64 = 120;
/// Largest form posted to the token and revocation endpoints.
pub const MAX_FORM: usize = 16 * 1024;

/// How the server issues.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This server's issuer: its public URL, without a trailing slash.
    pub issuer: String,
    /// The protected resources' URLs (the MCP endpoints): a token is bound
    /// to one of them, or to the issuer (all of them).
    pub resources: Vec<String>,
    pub access_token_seconds: i64,
    pub refresh_token_seconds: i64,
    pub fetch: FetchPolicy,
}

impl Settings {
    pub fn new(issuer: &str, resources: Vec<String>) -> Settings {
        Settings {
            issuer: issuer.trim_end_matches('/').to_owned(),
            resources,
            access_token_seconds: 3600,
            refresh_token_seconds: 30 * 24 * 3600,
            fetch: FetchPolicy::default(),
        }
    }
}

/// The authorization server.
pub struct OAuth {
    store: Store,
    settings: Settings,
    documents: metadata_document::MetadataDocuments,
}

/// An authorization request, checked: what the consent page shows and what
/// approving it issues.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: Client,
    /// Where the answer goes (as the client asked for it).
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
}

/// Why an authorization request cannot proceed.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or its redirect URI cannot be trusted: tell the person,
    /// never redirect (RFC 6749 §4.1.2.1).
    Show(OAuthError),
    /// Anything else: back to the client with the error, at this URL.
    Redirect(String),
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub scope: String,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessError {
    Invalid,
    Expired,
    Revoked,
    /// Bound to a resource this server does not serve.
    WrongAudience,
    Unavailable,
}

impl AccessError {
    pub fn message(self) -> &'static str {
        match self {
            AccessError::Invalid => "the access token is not valid; sign in again",
            AccessError::Expired => "the access token has expired; refresh it or sign in again",
            AccessError::Revoked => {
                "the access token was revoked (the connection was removed in Settings, or its refresh token was replayed); sign in again"
            }
            AccessError::WrongAudience => {
                "the access token was issued for another resource; ask for one with resource set to this server's MCP URL"
            }
            AccessError::Unavailable => {
                "the server could not check the access token; try again later"
            }
        }
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parameters of a query string or form, each at most once (RFC 6749 §3.1).
pub fn parameters(input: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut found = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(input) {
        if found.insert(name.to_string(), value.to_string()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "{}: given more than once; send each parameter once",
                shown(&name, 40)
            )));
        }
    }
    Ok(found)
}

/// `uri` with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (k, v) in pairs {
                    query.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => uri.to_owned(),
    }
}

impl OAuth {
    pub fn new(store: Store, settings: Settings) -> Result<OAuth, String> {
        let documents = metadata_document::MetadataDocuments::new(settings.fetch.clone())?;
        Ok(OAuth {
            store,
            settings,
            documents,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Register a client (RFC 7591).
    pub async fn register(&self, body: &[u8]) -> Result<clients::Registered, OAuthError> {
        let now = unix_now();
        let (client, answer) = clients::register(body, now)?;
        self.store.insert_oauth_client(&client.record(now)).await?;
        tracing::info!(client = %client.client_id, name = %client.name, "OAuth client registered");
        Ok(answer)
    }

    /// The client `client_id` names: registered here, or a metadata document.
    pub async fn client(&self, client_id: &str) -> Result<Client, OAuthError> {
        if client_id.starts_with(clients::CLIENT_ID_PREFIX) {
            return match self.store.oauth_client(client_id).await? {
                Some(record) => Ok(Client::from_record(record)),
                None => Err(OAuthError::invalid_client(format!(
                    "client_id: `{}` is not registered here; register at {}{REGISTER_PATH}",
                    shown(client_id, 60),
                    self.settings.issuer
                ))),
            };
        }
        if client_id.starts_with("https://") || client_id.starts_with("http://") {
            return self.documents.client(client_id).await;
        }
        Err(OAuthError::invalid_client(format!(
            "client_id: `{}` is neither a client registered here (of_cli_…) nor the https URL of a client metadata document",
            shown(client_id, 60)
        )))
    }

    /// Whether `resource` is one this server protects; the default (none
    /// given) is the issuer, which covers all of them.
    fn resource(&self, asked: Option<&str>) -> Result<String, OAuthError> {
        let Some(asked) = asked else {
            return Ok(self.settings.issuer.clone());
        };
        let trimmed = asked.trim_end_matches('/');
        if trimmed == self.settings.issuer || self.settings.resources.iter().any(|r| r == trimmed) {
            Ok(trimmed.to_owned())
        } else {
            Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                format!(
                    "resource: `{}` is not served here; use this server's MCP URL, e.g. {}",
                    shown(asked, 100),
                    self.settings
                        .resources
                        .first()
                        .unwrap_or(&self.settings.issuer)
                ),
            ))
        }
    }

    fn scope(asked: Option<&str>) -> Result<String, OAuthError> {
        match asked.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(SCOPE.into()),
            Some(asked) => {
                // `offline_access` asks for a refresh token, which every grant gets.
                if let Some(other) = asked
                    .split(' ')
                    .find(|s| !s.is_empty() && *s != SCOPE && *s != "offline_access")
                {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        format!(
                            "scope: `{}` is not a scope here; ask for `{SCOPE}`",
                            shown(other, 40)
                        ),
                    ));
                }
                Ok(SCOPE.into())
            }
        }
    }

    /// Check an authorization request (its query string).
    pub async fn check_authorization(
        &self,
        query: &str,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let p = parameters(query.as_bytes()).map_err(AuthorizeError::Show)?;
        let client_id = p.get("client_id").ok_or_else(|| {
            AuthorizeError::Show(OAuthError::invalid_request(
                "client_id: required: the client's id (of_cli_… from registration, or its metadata document URL)",
            ))
        })?;
        let client = self.client(client_id).await.map_err(AuthorizeError::Show)?;
        let redirect_uri = match p.get("redirect_uri") {
            Some(asked) => client.redirect_uri(asked).map(|_| asked.clone()).ok_or_else(|| {
                AuthorizeError::Show(OAuthError::invalid_request(format!(
                    "redirect_uri: `{}` is not one this client registered; it must match exactly",
                    shown(asked, 100)
                )))
            })?,
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => {
                return Err(AuthorizeError::Show(OAuthError::invalid_request(
                    "redirect_uri: required, since the client registered several",
                )));
            }
        };
        let state = p.get("state").cloned();
        let back = |e: OAuthError| {
            let mut pairs = vec![
                ("error", e.code.as_str()),
                ("error_description", e.description.as_str()),
            ];
            if let Some(s) = &state {
                pairs.push(("state", s));
            }
            pairs.push(("iss", &self.settings.issuer));
            AuthorizeError::Redirect(with_query(&redirect_uri, &pairs))
        };
        match p.get("response_type").map(String::as_str) {
            Some("code") => {}
            _ => {
                return Err(back(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "response_type: use `code` (the authorization code flow with PKCE)",
                )));
            }
        }
        if state.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(back(OAuthError::invalid_request(
                "state: at most 1024 characters",
            )));
        }
        let code_challenge = pkce::check_challenge(
            p.get("code_challenge").map(String::as_str),
            p.get("code_challenge_method").map(String::as_str),
        )
        .map_err(back)?;
        let scope = Self::scope(p.get("scope").map(String::as_str)).map_err(back)?;
        let resource = self
            .resource(p.get("resource").map(String::as_str))
            .map_err(back)?;
        Ok(AuthorizationRequest {
            client,
            redirect_uri,
            state,
            code_challenge,
            scope,
            resource,
        })
    }

    /// The person approved: a code for the client, at its redirect URI.
    pub async fn approve(
        &self,
        request: &AuthorizationRequest,
        account_id: &str,
    ) -> Result<String, OAuthError> {
        let grant = self
            .store
            .create_oauth_grant(
                &new_id(),
                account_id,
                &request.client.client_id,
                &request.client.name,
                &request.scope,
                &request.resource,
            )
            .await?;
        let code = secret(CODE_PREFIX);
        self.store
            .insert_oauth_code(
                &hash(&code),
                &grant.grant_id,
                &request.redirect_uri,
                &request.code_challenge,
                unix_now() + CODE_SECONDS,
            )
            .await?;
        tracing::info!(grant = %grant.grant_id, client = %request.client.client_id, account = %account_id, "OAuth access approved");
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = &request.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", &self.settings.issuer));
        Ok(with_query(&request.redirect_uri, &pairs))
    }

    /// The person said no: the client learns so at its redirect URI.
    pub fn deny(&self, request: &AuthorizationRequest) -> String {
        let mut pairs = vec![
            ("error", "access_denied"),
            ("error_description", "the account holder denied the request"),
        ];
        if let Some(s) = &request.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", &self.settings.issuer));
        with_query(&request.redirect_uri, &pairs)
    }

    /// Who the token or revocation request comes from, authenticated.
    async fn calling_client(
        &self,
        p: &HashMap<String, String>,
        authorization: Option<&str>,
    ) -> Result<Client, OAuthError> {
        let (client_id, secret) = match authorization {
            Some(header) => {
                let basic = header
                    .strip_prefix("Basic ")
                    .and_then(|b| STANDARD.decode(b.trim()).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| {
                        let (id, secret) = s.split_once(':')?;
                        let decode = |v: &str| {
                            url::form_urlencoded::parse(format!("v={v}").as_bytes())
                                .next()
                                .map(|(_, v)| v.to_string())
                        };
                        Some((decode(id)?, decode(secret)?))
                    })
                    .ok_or_else(|| {
                        OAuthError::invalid_client(
                            "Authorization: use Basic base64(client_id:client_secret), or send client_id in the form",
                        )
                    })?;
                if p.get("client_id").is_some_and(|id| *id != basic.0) {
                    return Err(OAuthError::invalid_client(
                        "client_id: differs from the client in the Authorization header",
                    ));
                }
                (basic.0, Some(basic.1))
            }
            None => {
                let id = p.get("client_id").cloned().ok_or_else(|| {
                    OAuthError::invalid_client(
                        "client_id: required (or authenticate with HTTP Basic)",
                    )
                })?;
                (id, p.get("client_secret").cloned())
            }
        };
        let client = self.client(&client_id).await?;
        client.authenticate(secret.as_deref())?;
        Ok(client)
    }

    async fn revoke_family(&self, grant_id: &str, because: &str) -> OAuthError {
        if let Err(e) = self.store.revoke_oauth_grant(grant_id, because).await {
            return e.into();
        }
        tracing::warn!(grant = %grant_id, %because, "OAuth grant revoked");
        OAuthError {
            code: ErrorCode::InvalidGrant,
            description: format!("{because}: every token issued with it is revoked; sign in again"),
            revoked_grant: Some(grant_id.to_owned()),
        }
    }

    async fn issue(&self, grant: &OAuthGrant) -> Result<TokenResponse, OAuthError> {
        let now = unix_now();
        let access = secret(ACCESS_TOKEN_PREFIX);
        let refresh = secret(REFRESH_TOKEN_PREFIX);
        self.store
            .insert_oauth_token(
                &hash(&access),
                &grant.grant_id,
                TokenKind::Access,
                now + self.settings.access_token_seconds,
            )
            .await?;
        self.store
            .insert_oauth_token(
                &hash(&refresh),
                &grant.grant_id,
                TokenKind::Refresh,
                now + self.settings.refresh_token_seconds,
            )
            .await?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.settings.access_token_seconds,
            refresh_token: refresh,
            scope: grant.scope.clone(),
        })
    }

    /// The token endpoint: a code (with its PKCE verifier) or a refresh
    /// token for new tokens. `authorization`: the request's Authorization
    /// header, for HTTP Basic client authentication.
    pub async fn token(
        &self,
        form: &[u8],
        authorization: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if form.len() > MAX_FORM {
            return Err(OAuthError::invalid_request(
                "the form is larger than 16 KiB",
            ));
        }
        let p = parameters(form)?;
        let grant_type = p.get("grant_type").cloned().ok_or_else(|| {
            OAuthError::invalid_request("grant_type: required: authorization_code or refresh_token")
        })?;
        if !matches!(grant_type.as_str(), "authorization_code" | "refresh_token") {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "grant_type: `{}` is not supported; use authorization_code or refresh_token",
                    shown(&grant_type, 40)
                ),
            ));
        }
        let client = self.calling_client(&p, authorization).await?;
        let resource = p.get("resource").map(String::as_str);
        if grant_type == "authorization_code" {
            let code = p.get("code").ok_or_else(|| {
                OAuthError::invalid_request("code: required: the code from the redirect")
            })?;
            let verifier = p.get("code_verifier").ok_or_else(|| {
                OAuthError::invalid_request("code_verifier: required (PKCE): the verifier whose S256 was the code_challenge")
            })?;
            let (grant, redirect_uri, challenge) =
                match self.store.redeem_oauth_code(&hash(code)).await? {
                    CodeRedemption::Redeemed {
                        grant,
                        redirect_uri,
                        code_challenge,
                    } => (grant, redirect_uri, code_challenge),
                    CodeRedemption::Replayed { grant_id } => {
                        return Err(self
                            .revoke_family(&grant_id, "this code was already used")
                            .await);
                    }
                    CodeRedemption::Expired => {
                        return Err(OAuthError::invalid_grant(format!(
                            "code: expired (codes last {CODE_SECONDS} s); start the sign-in again"
                        )));
                    }
                    CodeRedemption::Unknown => {
                        return Err(OAuthError::invalid_grant(
                            "code: not a code this server issued",
                        ));
                    }
                };
            // The code is spent from here on, whatever follows: a wrong
            // verifier cannot be retried with the same code.
            if grant.client_id != client.client_id {
                return Err(self
                    .revoke_family(&grant.grant_id, "this code was issued to another client")
                    .await);
            }
            if p.get("redirect_uri").is_some_and(|r| *r != redirect_uri) {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri: differs from the one in the authorization request",
                ));
            }
            if !pkce::verifier_matches(verifier, &challenge) {
                return Err(OAuthError::invalid_grant(
                    "code_verifier: does not match the code_challenge (S256) of the authorization request",
                ));
            }
            if resource.is_some_and(|r| r.trim_end_matches('/') != grant.resource) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "resource: differs from the one approved in the authorization request",
                ));
            }
            return self.issue(&grant).await;
        }
        let refresh = p
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token: required"))?;
        let grant = match self.store.use_refresh_token(&hash(refresh)).await? {
            RefreshUse::Rotated(grant) => grant,
            RefreshUse::Replayed { grant_id } => {
                return Err(self
                    .revoke_family(&grant_id, "this refresh token was already used")
                    .await);
            }
            RefreshUse::Expired => {
                return Err(OAuthError::invalid_grant(
                    "refresh_token: expired; sign in again",
                ));
            }
            RefreshUse::Revoked => {
                return Err(OAuthError::invalid_grant(
                    "refresh_token: revoked (the connection was removed); sign in again",
                ));
            }
            RefreshUse::Unknown => {
                return Err(OAuthError::invalid_grant(
                    "refresh_token: not a refresh token this server issued",
                ));
            }
        };
        if grant.client_id != client.client_id {
            return Err(self
                .revoke_family(
                    &grant.grant_id,
                    "this refresh token was issued to another client",
                )
                .await);
        }
        Self::scope(p.get("scope").map(String::as_str))?;
        if resource.is_some_and(|r| r.trim_end_matches('/') != grant.resource) {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource: differs from the one the connection was approved for",
            ));
        }
        self.issue(&grant).await
    }

    /// Token revocation (RFC 7009): the token's whole grant goes. Unknown
    /// tokens are not an error. The revoked grant, if any.
    pub async fn revoke(
        &self,
        form: &[u8],
        authorization: Option<&str>,
    ) -> Result<Option<OAuthGrant>, OAuthError> {
        if form.len() > MAX_FORM {
            return Err(OAuthError::invalid_request(
                "the form is larger than 16 KiB",
            ));
        }
        let p = parameters(form)?;
        let client = self.calling_client(&p, authorization).await?;
        let token = p.get("token").ok_or_else(|| {
            OAuthError::invalid_request("token: required: the access or refresh token to revoke")
        })?;
        match self.store.token_grant(&hash(token)).await? {
            Some(grant) if grant.client_id == client.client_id => Ok(self
                .store
                .revoke_oauth_grant(&grant.grant_id, "revoked by the client")
                .await?),
            _ => Ok(None),
        }
    }

    /// The grant a presented access token acts for.
    pub async fn access(&self, token: &str) -> Result<OAuthGrant, AccessError> {
        if !token.starts_with(ACCESS_TOKEN_PREFIX) || token.len() > 128 {
            return Err(AccessError::Invalid);
        }
        match self.store.access_token(&hash(token)).await {
            Ok(AccessLookup::Valid(grant)) => {
                let ours = grant.resource == self.settings.issuer
                    || self.settings.resources.iter().any(|r| *r == grant.resource);
                if ours {
                    Ok(grant)
                } else {
                    Err(AccessError::WrongAudience)
                }
            }
            Ok(AccessLookup::Expired) => Err(AccessError::Expired),
            Ok(AccessLookup::Revoked) => Err(AccessError::Revoked),
            Ok(AccessLookup::Unknown) => Err(AccessError::Invalid),
            Err(e) => {
                tracing::error!(error = %e, "could not look up an access token");
                Err(AccessError::Unavailable)
            }
        }
    }

    /// The account's connected clients, newest first.
    pub async fn grants(&self, account_id: &str) -> Result<Vec<OAuthGrant>, OAuthError> {
        Ok(self.store.oauth_grants(account_id).await?)
    }

    /// The account removes a connected client; `None` if it has no such grant.
    pub async fn revoke_grant(
        &self,
        account_id: &str,
        grant_id: &str,
    ) -> Result<Option<OAuthGrant>, OAuthError> {
        if self
            .store
            .account_oauth_grant(account_id, grant_id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        Ok(self
            .store
            .revoke_oauth_grant(grant_id, "removed by its account")
            .await?)
    }
}

#[cfg(test)]
mod tests;
