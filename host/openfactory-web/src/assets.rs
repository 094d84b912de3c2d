//! The console's stylesheet, script and icon: compiled in, served with a
//! content hash in their URLs so that browsers may cache them for good.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

const FILES: &[(&str, &str, &str)] = &[
    (
        "web.css",
        "text/css; charset=utf-8",
        include_str!("../assets/web.css"),
    ),
    (
        "web.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/web.js"),
    ),
    (
        "logo.svg",
        "image/svg+xml",
        include_str!("../assets/logo.svg"),
    ),
];

fn versions() -> &'static Vec<String> {
    static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, body)| hex::encode(&Sha256::digest(body.as_bytes())[..6]))
            .collect()
    })
}

/// The URL of an asset, with its content hash.
pub fn url(name: &str) -> String {
    let i = FILES
        .iter()
        .position(|(n, _, _)| *n == name)
        .expect("a known asset");
    format!("/assets/{name}?v={}", versions()[i])
}

#[derive(serde::Deserialize)]
struct Version {
    v: Option<String>,
}

async fn asset(Path(name): Path<String>, Query(q): Query<Version>) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let (_, kind, body) = FILES[i];
    let cache = if q.v.as_deref() == Some(versions()[i].as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

pub fn router() -> Router {
    Router::new().route("/assets/{name}", get(asset))
}
