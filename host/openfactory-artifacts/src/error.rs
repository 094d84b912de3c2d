//! The store's one error type, with a kind per thing a caller handles
//! differently.

/// What went wrong with an artifact operation.
///
/// Callers map the variant, not the text: `NotFound` → 404, `Invalid` → 400,
/// `Checksum` → 422 (an upload whose body is not what its sender announced),
/// `Unavailable` → 503, `Config` → refuse to start, `Source` → the caller's
/// own input failed (a client that hung up mid-upload, an unreadable file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The build has no such artifact (or no such build exists).
    #[error("no artifact `{name}` for build `{build_id}`")]
    NotFound {
        /// The build asked for.
        build_id: String,
        /// The artifact asked for.
        name: String,
    },
    /// An argument is not acceptable: a build id or name outside the allowed
    /// characters, an empty or unsatisfiable range, an object over a size limit,
    /// a malformed checksum.
    #[error("invalid {what}")]
    Invalid {
        /// What was wrong, as a phrase ("build id `../x`: …").
        what: String,
    },
    /// The data's sha256 is not the one announced; nothing was stored.
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum {
        /// The sha256 the caller announced (lowercase hex).
        expected: String,
        /// The sha256 of the data received (lowercase hex).
        actual: String,
    },
    /// The backend failed or could not be reached: its message.
    #[error("artifact storage unavailable: {0}")]
    Unavailable(String),
    /// The store is misconfigured: the message names the setting (flag or
    /// environment variable) to fix.
    #[error("artifact storage misconfigured: {0}")]
    Config(String),
    /// Reading the data to store failed (the caller's file or stream), not the
    /// store.
    #[error("could not read the data to store: {0}")]
    Source(String),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(what: impl Into<String>) -> Error {
        Error::Invalid { what: what.into() }
    }

    pub(crate) fn not_found(build_id: &str, name: &str) -> Error {
        Error::NotFound {
            build_id: build_id.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A backend error on one artifact: `NotFound` stays a kind, the rest is
    /// `Unavailable`.
    pub(crate) fn backend(e: object_store::Error, build_id: &str, name: &str) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::not_found(build_id, name),
            e => Error::Unavailable(e.to_string()),
        }
    }

    /// A local disk error of the store (or its cache).
    pub(crate) fn io(context: impl std::fmt::Display, e: std::io::Error) -> Error {
        Error::Unavailable(format!("{context}: {e}"))
    }
}
