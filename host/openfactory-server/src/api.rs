//! The account and key REST API: `/api/auth/{register,login,me,claim}` and
//! `/api/mcp-keys`. Sign-in gives a session token; the key routes take it
//! as `Authorization: Bearer <token>`.
//!
//! Every error is `{"error": "…"}` with a status from [`status`], the one
//! mapping of a service error to HTTP here. A body is read field by field
//! ([`strings`]): a missing, mistyped or unknown field is named with its
//! fix, and no deserializer's wording reaches the caller.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use openfactory_core::rules::{json_kind, truncate};
use openfactory_service::app::App;
use openfactory_service::auth::{self, SignInError};
use openfactory_service::owner::OwnerPolicy;
use openfactory_service::{Action, Error};

pub fn router(app: Arc<App>, owners: Arc<OwnerPolicy>) -> Router {
    Router::new()
        .route("/api/auth/claim", post(claim))
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/me", get(me))
        .route("/api/mcp-keys", post(create_key).get(list_keys))
        .route("/api/mcp-keys/{key_id}", delete(revoke_key))
        .with_state(app.clone())
        .layer(axum::Extension(owners))
        .layer(axum::middleware::from_fn_with_state(app, verified))
}

/// A request with a valid session token says so on its response, for the
/// rate limits (`limits::Verified`). Checking the token is an HMAC, no lookup.
async fn verified(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let valid = auth::session_account(&app.signer, request.headers()).is_ok();
    let mut response = next.run(request).await;
    if valid {
        response.extensions_mut().insert(crate::limits::Verified);
    }
    response
}

/// A service error in this API's words: its message, and where to look.
fn text(e: &Error) -> String {
    match &e.see {
        Some(Action::ListKeys) => format!("{}; GET /api/mcp-keys shows yours", e.message),
        // The routes here call only the account and key operations, which
        // point to nothing else; a hint for a tool or page would not help.
        _ => e.message.clone(),
    }
}

/// An API error: its status and a message that says what to do.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e.kind.http_status(), text(&e))
    }
}

impl From<openfactory_store::StoreError> for ApiError {
    fn from(e: openfactory_store::StoreError) -> ApiError {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// `a`, `a and b`, `a, b and c`.
fn and_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A body that is a JSON object of exactly `fields` (name, and what to give
/// when it is missing), all strings: their values in that order, or every
/// problem, one line each, each naming its field. `null` counts as missing.
fn strings<const N: usize>(
    bytes: &[u8],
    fields: [(&'static str, &'static str); N],
) -> Result<[String; N], ApiError> {
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let expected = format!("body: expected a JSON object with {}", and_list(&names));
    let object = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            let got = json_kind(&other);
            return Err(Error::invalid("body", format!("{expected}, got {got}")).into());
        }
        Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => {
            return Err(Error::invalid("body", format!("{expected}, got nothing")).into());
        }
        Err(_) => {
            return Err(
                Error::invalid("body", format!("{expected}, got text that is not JSON")).into(),
            );
        }
    };
    let mut problems = Vec::new();
    let mut values = Vec::with_capacity(N);
    for (name, missing) in fields {
        match object.get(name) {
            None | Some(Value::Null) => problems.push(format!("{name}: required; {missing}")),
            Some(Value::String(value)) => values.push(value.clone()),
            Some(other) => problems.push(format!(
                "{name}: expected a string, got {}",
                json_kind(other)
            )),
        }
    }
    let unknown: Vec<&String> = object
        .keys()
        .filter(|key| !names.contains(&key.as_str()))
        .collect();
    if let Some(first) = unknown.first() {
        let more = match unknown.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        problems.push(format!(
            "`{}`: unknown field{more}; this route takes only {}",
            truncate(first, 40),
            and_list(&names)
        ));
    }
    if !problems.is_empty() {
        return Err(Error::invalid("body", problems.join("\n")).into());
    }
    Ok(values.try_into().expect("one value per field"))
}

const EMAIL: (&str, &str) = ("email", "give an address like ada@example.org");
const NEW_PASSWORD: (&str, &str) = (
    "password",
    "give 10 to 1024 characters (a passphrase of a few words works well)",
);
const PASSWORD: (&str, &str) = ("password", "give the account's password");
const KEY_NAME: (&str, &str) = (
    "name",
    "give the key a name of 1 to 64 characters, e.g. \"Claude Desktop\"",
);

async fn register(State(app): State<Arc<App>>, bytes: Bytes) -> ApiResult {
    let [email, password] = strings(&bytes, [EMAIL, NEW_PASSWORD])?;
    let session = auth::register(&app.store, &app.signer, &email, &password).await?;
    Ok((StatusCode::CREATED, axum::Json(session)).into_response())
}

async fn login(State(app): State<Arc<App>>, bytes: Bytes) -> ApiResult {
    let [email, password] = strings(&bytes, [EMAIL, PASSWORD])?;
    match auth::login(&app, &email, &password).await {
        Ok(session) => Ok(axum::Json(session).into_response()),
        Err(SignInError::Wrong) => Err(Error::unauthorized("wrong email or password").into()),
        // Not a service error: a rate, like the rate limits.
        Err(SignInError::Throttled(wait)) => Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many sign-ins for this email; wait {wait} s and try again"),
        )),
        Err(SignInError::Other(e)) => Err(e.into()),
    }
}

/// The signed-in account (`Authorization: Bearer <session token>`).
fn account(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    Ok(auth::session_account(&app.signer, headers)?)
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    let id = account(&app, &headers)?;
    let a = auth::account(&app.store, &id).await?;
    Ok(
        axum::Json(json!({"account_id": a.id, "email": a.email, "created_at": a.created_at}))
            .into_response(),
    )
}

/// Move the work of the caller's address (its IP session) into the account.
async fn claim(
    State(app): State<Arc<App>>,
    axum::Extension(owners): axum::Extension<Arc<OwnerPolicy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult {
    let id = account(&app, &headers)?;
    let from = owners.resolve(peer.ip(), &headers);
    let claimed = auth::claim_address(&app.store, &from, &id).await?;
    Ok(axum::Json(json!({ "from": from, "claimed": claimed })).into_response())
}

async fn create_key(State(app): State<Arc<App>>, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let id = account(&app, &headers)?;
    let [name] = strings(&bytes, [KEY_NAME])?;
    let key = auth::create_key(&app.store, &id, &name).await?;
    Ok((StatusCode::CREATED, axum::Json(key)).into_response())
}

async fn list_keys(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    let id = account(&app, &headers)?;
    let keys = auth::keys(&app.store, &id).await?;
    Ok(axum::Json(json!({ "keys": keys })).into_response())
}

async fn revoke_key(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
) -> ApiResult {
    let id = account(&app, &headers)?;
    let key = auth::revoke_key(&app.store, &app.auth, &id, &key_id).await?;
    Ok(axum::Json(key).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: [(&str, &str); 2] = [EMAIL, NEW_PASSWORD];

    fn problem(body: &str) -> (StatusCode, String) {
        let ApiError(status, text) = strings(body.as_bytes(), CREDENTIALS).unwrap_err();
        (status, text)
    }

    #[test]
    fn a_good_body_gives_its_fields_in_order() {
        let [email, password] = strings(
            br#"{"password": "a long passphrase", "email": "ada@example.org"}"#,
            CREDENTIALS,
        )
        .unwrap();
        assert_eq!(
            (email.as_str(), password.as_str()),
            ("ada@example.org", "a long passphrase")
        );
    }

    #[test]
    fn hostile_bodies_get_field_errors_in_our_words() {
        let expected = "body: expected a JSON object with email and password";
        for (body, wanted) in [
            ("", format!("{expected}, got nothing")),
            ("{not json", format!("{expected}, got text that is not JSON")),
            ("[1, 2]", format!("{expected}, got an array")),
            ("\"ada\"", format!("{expected}, got a string")),
            ("null", format!("{expected}, got null")),
            (
                r#"{"email": "ada@example.org"}"#,
                "password: required; give 10 to 1024 characters (a passphrase of a few words works well)".into(),
            ),
            (
                r#"{"email": null, "password": 5}"#,
                "email: required; give an address like ada@example.org\npassword: expected a string, got a number".into(),
            ),
            (
                r#"{"email": ["ada"], "password": {"p": 1}}"#,
                "email: expected a string, got an array\npassword: expected a string, got an object".into(),
            ),
            (
                r#"{"email": "a@b.org", "password": "x", "admin": true}"#,
                "`admin`: unknown field; this route takes only email and password".into(),
            ),
        ] {
            let (status, text) = problem(body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(text, wanted, "{body}");
        }
    }

    #[test]
    fn many_unknown_fields_are_counted_and_a_long_name_is_cut() {
        let name = "x".repeat(5000);
        let body =
            format!(r#"{{"email": "a@b.org", "password": "p", "{name}": 1, "b": 2, "c": 3}}"#);
        let (_, text) = problem(&body);
        assert!(text.contains("unknown field (and 2 more)"), "{text}");
        assert!(text.len() < 200, "{text}");
    }

    #[test]
    fn service_errors_are_worded_with_the_api_route() {
        let e = Error::not_found("key `k` not found").see(Action::ListKeys);
        assert_eq!(
            ApiError::from(e).1,
            "key `k` not found; GET /api/mcp-keys shows yours"
        );
        let e = Error::unavailable("the database is down");
        assert_eq!(ApiError::from(e).0.as_u16(), 503);
    }
}
