//! OpenFactory's web console, and everything else a browser (or curl)
//! fetches: the VM screen page and its websocket, and signed ISO downloads.
//!
//! Pages are server-rendered HTML (maud, escaped by construction) that read
//! without JavaScript; one small script refreshes changing parts in place
//! (the same fragments the server renders into the page) and copies secrets.
//! Every page that shows an owner's things calls the same
//! `openfactory-service` operations as the MCP tools, as the signed-in
//! account, so ownership is checked where it is for MCP: at the store.
//!
//! Security, in one place each: the sign-in cookie and the CSRF token in
//! [`session`]. The headers every response gets (the CSP, no framing,
//! `no-store`) are set once for the whole server by `openfactory-server`;
//! routes here set their own only where they need stricter ones (the VM
//! screen) or may be cached (assets, noVNC).

// Handlers and extractors return `Response` as their error, as axum does.
#![allow(clippy::result_large_err)]

mod assets;
pub mod console;
pub mod downloads;
mod form;
mod layout;
mod pages;
pub mod session;
mod signed_links;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::middleware;
use openfactory_service::{App, OwnerPolicy};

/// How the console is served.
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// Mark cookies `Secure` (and name them `__Host-…`): the console is
    /// reached over https. On when the public URL is https.
    pub secure_cookies: bool,
}

/// The web console's state: the application, and the new API keys waiting
/// to be shown once.
pub struct Web {
    pub(crate) app: Arc<App>,
    pub(crate) owners: Arc<OwnerPolicy>,
    pub(crate) settings: WebSettings,
    /// A key just created, shown on the next settings page of the browser
    /// session that created it, then forgotten (by session hash).
    pub(crate) reveals: Mutex<HashMap<String, Reveal>>,
}

impl Web {
    /// The SSE endpoint MCP clients are configured with.
    pub(crate) fn sse_url(&self) -> String {
        let base = self
            .app
            .settings
            .public_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:8080");
        format!("{}/api/mcp/sse", base.trim_end_matches('/'))
    }

    /// The Streamable HTTP endpoint that signs hosted clients in with OAuth.
    pub(crate) fn account_url(&self) -> String {
        format!("{}/api/mcp/account", self.app.oauth.issuer())
    }
}

/// A new API key's secret, waiting for its one showing.
pub(crate) struct Reveal {
    pub name: String,
    pub secret: String,
    pub made: Instant,
}

/// The web console's routes, the console page and websocket, and the signed
/// ISO download route; to be served behind the server's Host check and
/// security headers.
pub fn router(app: Arc<App>, owners: Arc<OwnerPolicy>, settings: WebSettings) -> Router {
    let novnc_dir = app.vms.novnc_dir.clone();
    let web = Arc::new(Web {
        app: app.clone(),
        owners,
        settings,
        reveals: Mutex::new(HashMap::new()),
    });
    Router::new()
        .merge(pages::router(web.clone()))
        .merge(assets::router())
        .layer(middleware::from_fn_with_state(web, session::cookies))
        .merge(console::router(app.clone(), novnc_dir))
        .merge(downloads::router(app))
}
