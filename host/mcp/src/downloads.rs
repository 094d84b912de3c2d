//! `GET /api/builds/{id}/iso?token=…`: a completed build's ISO, for the owner
//! named in a signed, unexpired token; HTTP Range (resumable) through
//! tower-http's `ServeFile`, with the checksum in the headers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use openfactory_build::pipeline::ISO_FILE;
use openfactory_store::BuildStatus;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::app::App;
use crate::builds;
use crate::links::{LinkError, TokenQuery, refuse};

pub async fn iso(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    let owner = match app
        .builds
        .links
        .verify("iso", &id, &query.token, crate::links::unix_now())
    {
        Ok(owner) => owner,
        Err(e @ LinkError::Expired) => return refuse(StatusCode::GONE, e.to_string()),
        Err(e) => return refuse(StatusCode::FORBIDDEN, e.to_string()),
    };
    let build = match builds::find(&app, &owner, &id).await {
        Ok(build) => build,
        Err(message) => return refuse(StatusCode::NOT_FOUND, message),
    };
    if build.status != BuildStatus::Completed {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "build `{id}` is {}; only completed builds have an ISO",
                build.status
            ),
        );
    }
    let path = app.builds.build_dir(&build.id).join(ISO_FILE);
    let response = match ServeFile::new(&path).oneshot(request).await {
        Ok(response) => response,
        Err(e) => match e {},
    };
    let mut response = response.map(Body::new);
    if response.status() == StatusCode::NOT_FOUND {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("the ISO of build `{id}` is no longer on the server"),
        );
    }
    let headers = response.headers_mut();
    let filename = builds::iso_filename(&build);
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-iso9660-image"),
    );
    if let Some(sha) = &build.iso_sha256 {
        if let Ok(value) = HeaderValue::from_str(sha) {
            headers.insert("x-checksum-sha256", value);
        }
        if let Ok(bytes) = hex::decode(sha) {
            let digest = base64::engine::general_purpose::STANDARD.encode(bytes);
            if let Ok(value) = HeaderValue::from_str(&format!("sha-256=:{digest}:")) {
                headers.insert("repr-digest", value);
            }
        }
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}
