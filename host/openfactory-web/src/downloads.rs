//! A build's files, as browsers and curl fetch them.
//!
//! - `GET /api/builds/{id}/iso?token=…`: a completed build's ISO, for the
//!   owner named in a signed, unexpired token (what `get_iso_download_url`
//!   hands out).
//! - The web console serves every file of a build (ISO, log, package
//!   manifest, SBOM) to its signed-in owner through [`serve`].
//!
//! HTTP Range (resumable downloads) comes from tower-http's `ServeFile`; the
//! ISO's checksum is in the headers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use openfactory_build::pipeline::{ISO_FILE, LOG_FILE, PACKAGES_FILE, SBOM_FILE};
use openfactory_service::links::LinkError;
use openfactory_service::{App, BuildId, builds};
use openfactory_store::{BuildRecord, BuildStatus};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::signed_links::{TokenQuery, refuse};

/// A file a build leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Iso,
    Log,
    Packages,
    Sbom,
}

impl Artifact {
    pub const ALL: [Artifact; 4] = [
        Artifact::Iso,
        Artifact::Packages,
        Artifact::Sbom,
        Artifact::Log,
    ];

    /// The name in URLs: `iso`, `log`, `packages`, `sbom`.
    pub fn slug(self) -> &'static str {
        match self {
            Artifact::Iso => "iso",
            Artifact::Log => "log",
            Artifact::Packages => "packages",
            Artifact::Sbom => "sbom",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Artifact> {
        Artifact::ALL.into_iter().find(|a| a.slug() == slug)
    }

    /// The file in the build's directory.
    pub fn file(self) -> &'static str {
        match self {
            Artifact::Iso => ISO_FILE,
            Artifact::Log => LOG_FILE,
            Artifact::Packages => PACKAGES_FILE,
            Artifact::Sbom => SBOM_FILE,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Artifact::Iso => "Bootable ISO (BIOS and UEFI)",
            Artifact::Log => "Build log",
            Artifact::Packages => "Package manifest (JSON)",
            Artifact::Sbom => "SBOM (SPDX 2.3 JSON)",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Artifact::Iso => "application/x-iso9660-image",
            Artifact::Log => "text/plain; charset=utf-8",
            Artifact::Packages => "application/json",
            Artifact::Sbom => "application/spdx+json",
        }
    }

    /// The name a download is saved under.
    pub fn download_name(self, b: &BuildRecord) -> String {
        match self {
            Artifact::Iso => builds::iso_filename(b),
            Artifact::Log => format!("{}-{}.log", b.recipe_name, b.id),
            Artifact::Packages => format!("{}-{}.packages.json", b.recipe_name, b.id),
            Artifact::Sbom => format!("{}-{}.spdx.json", b.recipe_name, b.id),
        }
    }
}

/// `GET /api/builds/{id}/iso?token=…`.
async fn iso(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    let owner = match app.signer.verify(
        "iso",
        &id,
        &query.token,
        openfactory_service::links::unix_now(),
    ) {
        Ok(owner) => owner,
        Err(e @ LinkError::Expired) => return refuse(StatusCode::GONE, e.to_string()),
        Err(e) => return refuse(StatusCode::FORBIDDEN, e.to_string()),
    };
    // The token names this id, so it is well-formed; a database failure is
    // 503, not "not found".
    let found = match BuildId::parse("build_id", &id) {
        Ok(id) => builds::find(&app, &owner, &id).await,
        Err(e) => Err(e),
    };
    let build = match found {
        Ok(build) => build,
        Err(e) => return refuse(e.kind.http_status(), e.message),
    };
    serve(&app, &build, Artifact::Iso, request).await
}

/// One file of `build` (already looked up for its owner), as an attachment.
/// The ISO only of a completed build; a log while the build runs too.
pub async fn serve(
    app: &App,
    build: &BuildRecord,
    artifact: Artifact,
    request: Request,
) -> Response {
    if artifact != Artifact::Log && build.status != BuildStatus::Completed {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "build `{}` is {}; only completed builds have an ISO, a manifest and an SBOM",
                build.id, build.status
            ),
        );
    }
    let dir = match app.artifacts.local_dir(&build.id) {
        Ok(Some(dir)) => dir,
        // In object storage: a short-lived presigned URL, now that the owner
        // is checked; the store serves Range itself.
        _ => return redirect_to_store(app, build, artifact).await,
    };
    let path = dir.join(artifact.file());
    let response = match ServeFile::new(&path).oneshot(request).await {
        Ok(response) => response,
        Err(e) => match e {},
    };
    let mut response = response.map(Body::new);
    if response.status() == StatusCode::NOT_FOUND {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "the {} of build `{}` is not on the server",
                artifact.slug(),
                build.id
            ),
        );
    }
    let headers = response.headers_mut();
    // The log reads in the browser; the others are saved.
    let disposition = if artifact == Artifact::Log {
        "inline"
    } else {
        "attachment"
    };
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{disposition}; filename=\"{}\"",
        artifact.download_name(build)
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(artifact.content_type()),
    );
    if artifact == Artifact::Iso
        && let Some(sha) = &build.iso_sha256
    {
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

/// How long a presigned URL to object storage works.
const PRESIGNED_SECONDS: u64 = 600;

async fn redirect_to_store(app: &App, build: &BuildRecord, artifact: Artifact) -> Response {
    match app.artifacts.head(&build.id, artifact.file()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "the {} of build `{}` is not stored",
                    artifact.slug(),
                    build.id
                ),
            );
        }
        Err(e) => {
            tracing::warn!(build = %build.id, error = %e, "the artifact store did not answer");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the artifact store did not answer; try again",
            );
        }
    }
    let expires = std::time::Duration::from_secs(PRESIGNED_SECONDS);
    match app
        .artifacts
        .presigned_get(&build.id, artifact.file(), expires)
        .await
    {
        Ok(Some(url)) => {
            let mut response =
                axum::response::IntoResponse::into_response(StatusCode::TEMPORARY_REDIRECT);
            if let Ok(value) = HeaderValue::from_str(url.as_str()) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            response
        }
        _ => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the artifact store could not sign a download link; try again",
        ),
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/builds/{id}/iso", get(iso))
        .with_state(app)
}
