//! The one error every operation returns: what kind of failure it is (so a
//! front end can pick its HTTP status or tool error without reading the
//! text), a message for people, and optionally the operation that helps.
//!
//! The message names the field and the fix in the service's own words; it
//! never names an MCP tool or a web page. Each front end words [`Error::see`]
//! its own way (a tool name, a button) and appends it.

use std::fmt;

use openfactory_store::StoreError;

use crate::next::Action;

/// What went wrong, as a front end needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such thing for this caller: missing, or another owner's (the two
    /// answer alike).
    NotFound,
    /// An argument is wrong; `field` is its path, e.g. `limit` or `recipe`.
    Invalid { field: String },
    /// The thing is in a state that refuses this (a running build cannot be
    /// deleted, a name is taken).
    Conflict,
    /// A per-owner limit or quota is used up.
    LimitReached,
    /// The server cannot do it now (its database, its VM backend, a missing
    /// component); trying later may work.
    Unavailable,
    /// Something that should not fail did; logged.
    Internal,
    /// The caller is not signed in, or its session is not valid.
    Unauthorized,
}

impl ErrorKind {
    /// What the kind means in HTTP, for the front ends that answer over it
    /// (the web console, the account API). A limit is 409, like a conflict:
    /// it is the state of the owner's things (delete one, or wait), not a
    /// request rate, so 429 keeps meaning the rate limits.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Invalid { .. } => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict | ErrorKind::LimitReached => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A service failure: its kind, a message, and the operation that helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    /// For people: what is wrong and how to fix it, without front-end words.
    pub message: String,
    /// The operation that resolves or explains it (for a conflict: what to
    /// do first; otherwise: where to look).
    pub see: Option<Action>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a database failure says: nothing of its internals.
pub const DATABASE_UNAVAILABLE: &str =
    "the server could not read or write its database; try again later";

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            see: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    /// A wrong argument: `field` is its path, `message` says what is wrong
    /// (prefix it with the field yourself when it should show).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(
            ErrorKind::Invalid {
                field: field.into(),
            },
            message,
        )
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }

    pub fn limit_reached(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::LimitReached, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unauthorized, message)
    }

    /// The same error, pointing to `action`.
    pub fn see(mut self, action: Action) -> Error {
        self.see = Some(action);
        self
    }

    /// The same error with `prefix` before its message (e.g. a field).
    pub fn prefixed(mut self, prefix: &str) -> Error {
        self.message = format!("{prefix}{}", self.message);
        self
    }

    /// An `Invalid` error about `field`, its message prefixed `field: `.
    pub fn in_field(mut self, field: &str) -> Error {
        self.kind = ErrorKind::Invalid {
            field: field.to_owned(),
        };
        self.message = format!("{field}: {}", self.message);
        self
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The field an `Invalid` error is about.
    pub fn field(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Invalid { field } => Some(field),
            _ => None,
        }
    }
}

/// A store conflict says what conflicted; anything else is logged and
/// reported without internals.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Conflict(message) => Error::conflict(message),
            e => {
                tracing::error!(error = %e, "store failure");
                Error::unavailable(DATABASE_UNAVAILABLE)
            }
        }
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Error {
        tracing::error!(error = %e, "a blocking task failed");
        Error::internal(format!("the server failed unexpectedly: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_kind_has_one_http_status() {
        for (kind, code) in [
            (ErrorKind::NotFound, 404),
            (ErrorKind::Invalid { field: "x".into() }, 400),
            (ErrorKind::Conflict, 409),
            (ErrorKind::LimitReached, 409),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
            (ErrorKind::Unauthorized, 401),
        ] {
            assert_eq!(kind.http_status().as_u16(), code, "{kind:?}");
        }
    }

    use super::*;

    #[test]
    fn store_conflicts_keep_their_message_and_other_failures_hide_theirs() {
        let e = Error::from(StoreError::Conflict(
            "you already have a VM named `a`".into(),
        ));
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(e.message, "you already have a VM named `a`");

        let e = Error::from(StoreError::Corrupt("secret table layout".into()));
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(e.message, DATABASE_UNAVAILABLE);
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn constructors_set_kind_field_and_action() {
        let e = Error::invalid("limit", "limit: 0 is out of range").see(Action::ListBuilds);
        assert_eq!(e.field(), Some("limit"));
        assert_eq!(e.see, Some(Action::ListBuilds));
        assert_eq!(e.to_string(), "limit: 0 is out of range");
        assert!(Error::not_found("x").is_not_found());
        assert_eq!(Error::limit_reached("x").kind, ErrorKind::LimitReached);
        assert_eq!(Error::conflict("b").prefixed("name: ").message, "name: b");
    }
}
