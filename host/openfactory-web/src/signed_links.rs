//! What the routes behind signed links (ISO downloads, the VM screen) share:
//! the `?token=` query, and a plain-text refusal.

/// The `?token=` of a signed link (an empty one is simply invalid).
#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    pub token: String,
}

/// A signed-link route's refusal: the status and a line of text.
pub fn refuse(status: http::StatusCode, message: impl Into<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, format!("{}\n", message.into())).into_response()
}
