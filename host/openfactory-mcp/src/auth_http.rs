//! The account and key REST API (`/api/auth/*`, `/api/mcp-keys`), and the
//! layer that authenticates Streamable HTTP requests carrying an API key.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use openfactory_service::app::App;
use openfactory_service::auth::{self, KeyError, SignInError};
use openfactory_service::owner::OwnerPolicy;
use openfactory_service::{Error, ErrorKind};

/// An API error: its status and a message that says what to do.
struct ApiError(StatusCode, String);

/// The HTTP status of a service error, for this API: the one mapping here
/// (the web console has its own, the same). A limit is 409, like a conflict:
/// it is the state of the owner's things, not a request rate, so 429 keeps
/// meaning the rate limits.
pub fn status(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid { .. } => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict | ErrorKind::LimitReached => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(status(&e.kind), crate::wording::error_text(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// A JSON body of exactly the expected shape, or a 400 that says what is wrong.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let why = openfactory_core::rules::truncate(&e.to_string(), 200);
        ApiError(StatusCode::BAD_REQUEST, format!("body: {why}"))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyName {
    name: String,
}

pub fn router(app: Arc<App>, owners: Arc<OwnerPolicy>) -> Router {
    Router::new()
        .route("/api/auth/claim", post(claim))
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/me", get(me))
        .route("/api/mcp-keys", post(create_key).get(list_keys))
        .route("/api/mcp-keys/{key_id}", delete(revoke_key))
        .with_state(app)
        .layer(axum::Extension(owners))
}

async fn register(State(app): State<Arc<App>>, bytes: Bytes) -> ApiResult {
    let creds: Credentials = body(&bytes)?;
    let session = auth::register(&app.store, &app.signer, &creds.email, &creds.password).await?;
    Ok((StatusCode::CREATED, axum::Json(session)).into_response())
}

async fn login(State(app): State<Arc<App>>, bytes: Bytes) -> ApiResult {
    let creds: Credentials = body(&bytes)?;
    match auth::login(&app, &creds.email, &creds.password).await {
        Ok(session) => Ok(axum::Json(session).into_response()),
        Err(SignInError::Wrong) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong email or password".into(),
        )),
        Err(SignInError::Throttled) => Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed sign-ins for this email; wait 15 minutes and try again".into(),
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
    let name: KeyName = body(&bytes)?;
    let key = auth::create_key(&app.store, &id, &name.name).await?;
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

/// A refused key, as MCP clients expect it: 401, and the reason.
pub fn refused(e: &KeyError) -> Response {
    let status = if *e == KeyError::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut response = (
        status,
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32001, "message": e.message() },
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("valid header"),
    );
    response
}

/// Streamable HTTP: a request with a key acts as its account (the tools read
/// the [`auth::KeyCaller`] this puts in the request), and whatever it streams
/// back ends when the key is revoked. A bad key never reaches rmcp.
pub async fn streamable(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    match auth::key_caller(&app, request.headers()).await {
        Err(e) => refused(&e),
        Ok(None) => next.run(request).await,
        Ok(Some(caller)) => {
            let ends = app.auth.key_token(&caller.key_id);
            request.extensions_mut().insert(caller);
            let (parts, body) = next.run(request).await.into_parts();
            let stream = body.into_data_stream().take_until(ends.cancelled_owned());
            Response::from_parts(parts, Body::from_stream(stream))
        }
    }
}
