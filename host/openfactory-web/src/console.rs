//! The browser console: `GET /console/{vm}?token=…` is a page running noVNC
//! (served from the vendored package, never fetched at run time), which
//! connects to `/console/{vm}/ws?token=…`. That websocket is bridged to the
//! VM's VNC port on loopback, for the owner named in a signed, expiring token.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openfactory_store::{OwnerId, VmRow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_http::services::ServeDir;

use crate::signed_links::{TokenQuery, refuse};
use openfactory_service::links::LinkError;
use openfactory_service::{App, vms};

const PAGE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn hardened(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The token is in the URL: never send it on.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The owner's VM a console token is for, or why not.
async fn authorise(app: &App, vm: &str, token: &str) -> Result<(OwnerId, VmRow), Response> {
    let owner =
        match app
            .signer
            .verify("console", vm, token, openfactory_service::links::unix_now())
        {
            Ok(owner) => owner,
            Err(LinkError::Expired) => {
                return Err(refuse(
                    StatusCode::GONE,
                    "this console link has expired; ask get_vm_console_url for a new one",
                ));
            }
            Err(_) => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "this console link is not valid; ask get_vm_console_url for one",
                ));
            }
        };
    match vms::by_id(app, &owner, vm).await {
        Ok(row) => Ok((owner, row)),
        Err(e) if e.is_not_found() => {
            Err(refuse(StatusCode::NOT_FOUND, "this VM no longer exists"))
        }
        Err(e) => Err(refuse(e.kind.http_status(), e.message)),
    }
}

async fn page(
    State(app): State<Arc<App>>,
    Path(vm): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    if let Err(refused) = authorise(&app, &vm, &q.token).await {
        return hardened(refused);
    }
    hardened(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response())
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return refuse(StatusCode::NOT_FOUND, "no such asset"),
    };
    hardened(([(header::CONTENT_TYPE, kind)], body).into_response())
}

async fn websocket(
    State(app): State<Arc<App>>,
    Path(vm): Path<String>,
    Query(q): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (_, row) = match authorise(&app, &vm, &q.token).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let address = match vms::screen(&app, &row).await {
        Ok(address) => address,
        Err(e) => return refuse(e.kind.http_status(), crate::layout::say(&e)),
    };
    upgrade
        .protocols(["binary"])
        .on_upgrade(move |socket| async move {
            if let Err(e) = bridge(socket, address).await {
                tracing::debug!(error = %e, "console connection ended");
            }
        })
}

/// Pump bytes between the browser's websocket and QEMU's VNC port.
async fn bridge(mut socket: WebSocket, address: std::net::SocketAddr) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let (mut from_vnc, mut to_vnc) = tcp.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = from_vnc.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    let _ = socket.send(Message::Close(None)).await;
                    return Ok(());
                }
                if socket.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                    return Ok(());
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(bytes))) => to_vnc.write_all(&bytes).await?,
                Some(Ok(Message::Text(_))) | Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
            }
        }
    }
}

/// noVNC's files may be kept, but checked again (`ServeDir` answers a
/// revalidation with 304), rather than the server's default `no-store`.
async fn revalidate(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

/// The console routes; noVNC is served from `novnc_dir` when it is installed.
pub fn router(app: Arc<App>, novnc_dir: Option<PathBuf>) -> Router {
    let mut router = Router::new()
        .route("/console/assets/{name}", get(asset))
        .route("/console/{vm}", get(page))
        .route("/console/{vm}/ws", get(websocket))
        .with_state(app);
    if let Some(dir) = novnc_dir {
        router = router.merge(
            Router::new()
                .nest_service("/console/novnc", ServeDir::new(dir))
                .layer(axum::middleware::map_response(revalidate)),
        );
    }
    router
}
