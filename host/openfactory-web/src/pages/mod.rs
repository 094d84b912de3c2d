//! The console's pages, one module per section. Every handler is thin: who
//! is looking ([`crate::session`]), one or two `openfactory-service` calls
//! as that account, and markup.
//!
//! A resource's URL serves its whole page, and with `?part=…` the fragment
//! of it that changes (a build's status, a run's checks), which the page
//! script swaps in; both come from the same function.

mod account;
mod authorize;
mod builds;
mod catalog;
mod home;
mod plugins;
mod settings;
mod test_runs;
mod vms;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::Web;
use crate::layout;
use crate::session::Viewer;

pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(home::page))
        .route("/signin", get(account::signin_page).post(account::signin))
        .route("/signup", get(account::signup_page).post(account::signup))
        .route("/signout", post(account::signout))
        .route("/catalog", get(catalog::index))
        .route("/catalog/{id}", get(catalog::show))
        .route("/builds", get(builds::index).post(builds::create))
        .route("/builds/{id}", get(builds::show))
        .route("/builds/{id}/cancel", post(builds::cancel))
        .route("/builds/{id}/retry", post(builds::retry))
        .route("/builds/{id}/delete", post(builds::delete))
        .route("/builds/{id}/files/{name}", get(builds::file))
        .route("/builds/{id}/vms", post(vms::create))
        .route("/builds/{id}/test-runs", post(test_runs::create))
        .route("/vms", get(vms::index))
        .route("/vms/{name}", get(vms::show))
        .route("/vms/{name}/start", post(vms::start))
        .route("/vms/{name}/stop", post(vms::stop))
        .route("/vms/{name}/delete", post(vms::delete))
        .route("/test-runs", get(test_runs::index))
        .route("/test-runs/{id}", get(test_runs::show))
        .route("/test-runs/{id}/stop", post(test_runs::stop))
        .route("/test-runs/{id}/junit.xml", get(test_runs::junit))
        .route(
            openfactory_oauth::AUTHORIZE_PATH,
            get(authorize::page).post(authorize::decide),
        )
        .route("/settings", get(settings::page))
        .route(
            "/settings/connections/{grant_id}/remove",
            post(settings::remove_connection),
        )
        .route("/settings/keys", post(settings::create_key))
        .route("/settings/keys/{key_id}/revoke", post(settings::revoke_key))
        .route("/settings/claim", post(settings::claim))
        .route(
            "/settings/sign-out-everywhere",
            post(settings::sign_out_everywhere),
        )
        .route("/plugins", get(plugins::page))
        .fallback(not_found)
        .with_state(web)
}

/// `?part=…`: which fragment of a page to render alone.
#[derive(Debug, Default, Deserialize)]
pub struct Part {
    pub part: Option<String>,
}

async fn not_found(viewer: Viewer, uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return (StatusCode::NOT_FOUND, "no such API route\n").into_response();
    }
    layout::error_page(
        &viewer,
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address. Check the link, or start from the overview.",
    )
}

/// An id from the URL, parsed at the edge: a malformed one names nothing,
/// so it is "not found", like an id that is not the caller's.
pub(crate) fn from_path<T>(
    parsed: openfactory_service::Result<T>,
) -> openfactory_service::Result<T> {
    parsed.map_err(|e| openfactory_service::Error::not_found(e.message))
}
