//! Clients: who asks for access, and where the answer may go.
//!
//! Two kinds (the MCP authorization specification's order of preference):
//! - a **client ID metadata document**: the client id is an HTTPS URL whose
//!   document names the client and its redirect URIs (fetched by
//!   [`crate::metadata_document`]);
//! - a **registered client** (RFC 7591): it posted its metadata to the
//!   registration endpoint and got an `of_cli_…` id (and a secret if it
//!   asked for a confidential method).
//!
//! Registration input is read field by field from JSON, so every problem
//! names its field; nothing a deserializer says reaches the client.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::shown;
use crate::error::{ErrorCode, OAuthError};
use crate::pkce::constant_time_eq;
use crate::redirect;

pub const CLIENT_ID_PREFIX: &str = "of_cli_";
const SECRET_PREFIX: &str = "of_cls_";
/// Largest registration body.
pub const MAX_REGISTRATION: usize = 16 * 1024;
const MAX_REDIRECT_URIS: usize = 10;
const MAX_NAME: usize = 100;

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: PKCE is its only proof.
    None,
    /// A confidential client, its secret's SHA-256, and how it sends it.
    Secret { hash: String, method: SecretMethod },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMethod {
    Basic,
    Post,
}

impl ClientAuth {
    pub fn method_name(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Secret {
                method: SecretMethod::Basic,
                ..
            } => "client_secret_basic",
            ClientAuth::Secret {
                method: SecretMethod::Post,
                ..
            } => "client_secret_post",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Registered,
    MetadataDocument,
}

/// A client, checked: its id, name and redirect URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// As the client names itself (shown on the consent page, with where
    /// the answer goes, since a name proves nothing).
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub auth: ClientAuth,
    pub kind: ClientKind,
    pub client_uri: Option<String>,
}

impl Client {
    /// The registered redirect URI `asked` matches, if any.
    pub fn redirect_uri(&self, asked: &str) -> Option<&str> {
        self.redirect_uris
            .iter()
            .find(|r| redirect::matches(r, asked))
            .map(String::as_str)
    }

    /// Check what the client presented at the token endpoint.
    pub fn authenticate(&self, secret: Option<&str>) -> Result<(), OAuthError> {
        match (&self.auth, secret) {
            (ClientAuth::None, None) => Ok(()),
            (ClientAuth::None, Some(_)) => Err(OAuthError::invalid_client(
                "client_secret: this client registered as public (token_endpoint_auth_method none); send no secret",
            )),
            (ClientAuth::Secret { .. }, None) => Err(OAuthError::invalid_client(
                "client_secret: this client is confidential; authenticate with its secret",
            )),
            (ClientAuth::Secret { hash, .. }, Some(given)) => {
                if constant_time_eq(secret_hash(given).as_bytes(), hash.as_bytes()) {
                    Ok(())
                } else {
                    Err(OAuthError::invalid_client(
                        "client_secret: wrong secret for this client",
                    ))
                }
            }
        }
    }
}

pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS has randomness");
    hex::encode(b)
}

/// What the registration endpoint answers (RFC 7591 §3.2.1).
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: &'static str,
    pub grant_types: Vec<&'static str>,
    pub response_types: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    pub scope: String,
}

fn metadata_error(field: &str, text: impl std::fmt::Display) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, format!("{field}: {text}"))
}

fn string_field(
    doc: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max && !s.chars().any(char::is_control) => {
            Ok(Some(s.trim().to_owned()))
        }
        Some(Value::String(_)) => Err(metadata_error(
            field,
            format!("at most {max} characters of plain text"),
        )),
        Some(_) => Err(metadata_error(field, "must be a string")),
    }
}

fn string_list(doc: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| metadata_error(field, "must be a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(metadata_error(field, "must be a list of strings")),
    }
}

/// The fields both kinds of client metadata share, checked: redirect URIs,
/// name, auth method, grant and response types.
pub(crate) struct Metadata {
    pub redirect_uris: Vec<String>,
    pub name: Option<String>,
    pub auth_method: String,
    pub client_uri: Option<String>,
}

pub(crate) fn read_metadata(doc: &Map<String, Value>) -> Result<Metadata, OAuthError> {
    let redirect_uris = string_list(doc, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "redirect_uris: required: list the exact URIs the client receives codes at (e.g. [\"http://127.0.0.1:33418/callback\"])",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            format!("redirect_uris: at most {MAX_REDIRECT_URIS}"),
        ));
    }
    for uri in &redirect_uris {
        redirect::check_registrable(uri).map_err(|e| {
            OAuthError::new(ErrorCode::InvalidRedirectUri, format!("redirect_uris: {e}"))
        })?;
    }
    let name = string_field(doc, "client_name", MAX_NAME)?.filter(|n| !n.is_empty());
    let auth_method = string_field(doc, "token_endpoint_auth_method", 40)?
        .unwrap_or_else(|| "client_secret_basic".into());
    if let Some(grants) = string_list(doc, "grant_types")? {
        if let Some(other) = grants
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(metadata_error(
                "grant_types",
                format!(
                    "`{}` is not supported; use authorization_code and refresh_token",
                    shown(other, 40)
                ),
            ));
        }
    }
    if let Some(types) = string_list(doc, "response_types")?
        && types.iter().any(|t| t != "code")
    {
        return Err(metadata_error("response_types", "only `code` is supported"));
    }
    let client_uri = string_field(doc, "client_uri", 2000)?;
    if let Some(uri) = &client_uri
        && !url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" || u.scheme() == "http")
    {
        return Err(metadata_error("client_uri", "must be an http(s) URL"));
    }
    Ok(Metadata {
        redirect_uris,
        name,
        auth_method,
        client_uri,
    })
}

/// A registration request, checked, and the client it makes (with the
/// secret to answer once, for a confidential client).
pub fn register(body: &[u8], now: i64) -> Result<(Client, Registered), OAuthError> {
    if body.len() > MAX_REGISTRATION {
        return Err(OAuthError::invalid_request(format!(
            "the registration is larger than {} KiB",
            MAX_REGISTRATION / 1024
        )));
    }
    let doc = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(doc)) => doc,
        Ok(_) => {
            return Err(OAuthError::invalid_request(
                "the registration must be a JSON object of client metadata (RFC 7591)",
            ));
        }
        Err(_) => {
            return Err(OAuthError::invalid_request(
                "the registration is not JSON: send Content-Type: application/json and an object such as {\"redirect_uris\": [\"http://127.0.0.1:33418/callback\"], \"token_endpoint_auth_method\": \"none\"}",
            ));
        }
    };
    let metadata = read_metadata(&doc)?;
    let (auth, secret) = match metadata.auth_method.as_str() {
        "none" => (ClientAuth::None, None),
        method @ ("client_secret_basic" | "client_secret_post") => {
            let secret = format!("{SECRET_PREFIX}{}", random_hex(24));
            let method = if method == "client_secret_basic" {
                SecretMethod::Basic
            } else {
                SecretMethod::Post
            };
            (
                ClientAuth::Secret {
                    hash: secret_hash(&secret),
                    method,
                },
                Some(secret),
            )
        }
        other => {
            return Err(metadata_error(
                "token_endpoint_auth_method",
                format!(
                    "`{}` is not supported; use none (public clients, PKCE), client_secret_basic or client_secret_post",
                    shown(other, 40)
                ),
            ));
        }
    };
    let client_id = format!("{CLIENT_ID_PREFIX}{}", random_hex(12));
    let name = metadata.name.unwrap_or_else(|| "Unnamed client".into());
    let answer = Registered {
        client_id: client_id.clone(),
        client_secret_expires_at: secret.as_ref().map(|_| 0),
        client_secret: secret,
        client_id_issued_at: now,
        client_name: name.clone(),
        redirect_uris: metadata.redirect_uris.clone(),
        token_endpoint_auth_method: auth.method_name(),
        grant_types: vec!["authorization_code", "refresh_token"],
        response_types: vec!["code"],
        client_uri: metadata.client_uri.clone(),
        scope: crate::SCOPE.into(),
    };
    let client = Client {
        client_id,
        name,
        redirect_uris: metadata.redirect_uris,
        auth,
        kind: ClientKind::Registered,
        client_uri: metadata.client_uri,
    };
    Ok((client, answer))
}

impl Client {
    pub(crate) fn record(&self, now: i64) -> openfactory_store::OAuthClientRecord {
        let secret_hash = match &self.auth {
            ClientAuth::None => None,
            ClientAuth::Secret { hash, .. } => Some(hash.clone()),
        };
        openfactory_store::OAuthClientRecord {
            client_id: self.client_id.clone(),
            client_name: self.name.clone(),
            redirect_uris: self.redirect_uris.clone(),
            auth_method: self.auth.method_name().into(),
            secret_hash,
            client_uri: self.client_uri.clone(),
            created_at: now,
        }
    }

    pub(crate) fn from_record(r: openfactory_store::OAuthClientRecord) -> Client {
        let auth = match (r.auth_method.as_str(), r.secret_hash) {
            ("client_secret_post", Some(hash)) => ClientAuth::Secret {
                hash,
                method: SecretMethod::Post,
            },
            (_, Some(hash)) => ClientAuth::Secret {
                hash,
                method: SecretMethod::Basic,
            },
            (_, None) => ClientAuth::None,
        };
        Client {
            client_id: r.client_id,
            name: r.client_name,
            redirect_uris: r.redirect_uris,
            auth,
            kind: ClientKind::Registered,
            client_uri: r.client_uri,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_client_registers_and_gets_no_secret() {
        let body = br#"{"redirect_uris":["http://127.0.0.1:3030/callback"],"client_name":"Demo","token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"]}"#;
        let (client, answer) = register(body, 7).unwrap();
        assert!(client.client_id.starts_with(CLIENT_ID_PREFIX));
        assert_eq!(answer.client_secret, None);
        assert_eq!(answer.token_endpoint_auth_method, "none");
        assert_eq!(
            client.redirect_uri("http://127.0.0.1:4000/callback"),
            Some("http://127.0.0.1:3030/callback")
        );
        client.authenticate(None).unwrap();
        assert_eq!(
            client.authenticate(Some("x")).unwrap_err().code,
            ErrorCode::InvalidClient
        );
    }

    #[test]
    fn a_confidential_client_gets_a_secret_that_authenticates_it() {
        let body = br#"{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"]}"#;
        let (client, answer) = register(body, 7).unwrap();
        let secret = answer.client_secret.clone().unwrap();
        assert_eq!(answer.token_endpoint_auth_method, "client_secret_basic");
        client.authenticate(Some(&secret)).unwrap();
        assert!(client.authenticate(Some("of_cls_wrong")).is_err());
        assert!(client.authenticate(None).is_err());
        // What the store keeps gives the same client back, without the secret.
        let stored = client.record(7);
        assert_ne!(stored.secret_hash.as_deref(), Some(secret.as_str()));
        assert_eq!(Client::from_record(stored), client);
    }

    #[test]
    fn bad_registrations_name_their_field() {
        for (body, code, says) in [
            (&b"not json"[..], ErrorCode::InvalidRequest, "not JSON"),
            (b"[1]", ErrorCode::InvalidRequest, "JSON object"),
            (b"{}", ErrorCode::InvalidRedirectUri, "redirect_uris: required"),
            (br#"{"redirect_uris":"http://127.0.0.1/cb"}"#, ErrorCode::InvalidClientMetadata, "redirect_uris: must be a list"),
            (br#"{"redirect_uris":["http://evil.example/cb"]}"#, ErrorCode::InvalidRedirectUri, "loopback"),
            (br#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#, ErrorCode::InvalidClientMetadata, "token_endpoint_auth_method"),
            (br#"{"redirect_uris":["http://127.0.0.1/cb"],"grant_types":["client_credentials"]}"#, ErrorCode::InvalidClientMetadata, "grant_types"),
            (br#"{"redirect_uris":["http://127.0.0.1/cb"],"client_name":7}"#, ErrorCode::InvalidClientMetadata, "client_name: must be a string"),
            (br#"{"redirect_uris":["http://127.0.0.1/cb"],"client_name":"a\u001b[2Jb"}"#, ErrorCode::InvalidClientMetadata, "client_name"),
        ] {
            let e = register(body, 0).unwrap_err();
            assert_eq!(e.code, code, "{e}");
            assert!(e.description.contains(says), "{e}");
        }
        let many: Vec<String> = (0..11)
            .map(|i| format!("\"http://127.0.0.1/{i}\""))
            .collect();
        let body = format!("{{\"redirect_uris\":[{}]}}", many.join(","));
        assert!(register(body.as_bytes(), 0).is_err());
        assert!(register(&vec![b' '; MAX_REGISTRATION + 1], 0).is_err());
    }
}
