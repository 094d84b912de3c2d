//! Persistent state behind narrow, owner-scoped methods.
//!
//! Every query that reads or changes an owner's things takes the owner: there
//! is no method that lists another owner's recipes, so isolation does not
//! depend on each caller remembering a `WHERE`.
//!
//! Two engines, one set of behaviours: SQLite (the single-machine default) and
//! PostgreSQL (several control planes, remote workers). Every statement is
//! written once, in the SQL both accept (numbered parameters, integers for
//! flags, `seq` rather than `rowid` for insertion order, casts where an
//! aggregate's type differs), and runs through sqlx's `Any` driver; the only
//! engine-specific texts are the migrations and the queue's row lock
//! ([`Engine`]).

/// A status column's enum: its words, `Display` and `FromStr` (with an
/// error that lists the words), one definition per table.
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident, $noun:literal, {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A string, one of the texts.
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            // Spelled out where used: some MCP clients do not follow `$ref`
            // in a tool's arguments.
            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!("A ", $noun, "."),
                    "enum": [$($text),+],
                })
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        format!(
                            "`{}` is not a {}; use one of: {}",
                            openfactory_core::rules::truncate(s, 40).escape_debug(),
                            $noun,
                            [$($text),+].join(", ")
                        )
                    })
            }
        }
    };
}

mod accounts;
mod builds;
mod engine;
mod oauth;
pub mod queue;
#[cfg(any(test, feature = "test-databases"))]
pub mod test_databases;
mod test_runs;
mod vms;
mod workers;

pub use accounts::{Account, Claimed, KeyLookup, McpKey};
pub use builds::{BuildEnd, BuildRecord, BuildStatus, CancelOutcome, NewBuild};
pub use engine::Engine;
pub use oauth::{
    AccessLookup, CodeRedemption, OAuthClientRecord, OAuthGrant, RefreshUse, TokenKind,
};
pub use queue::{
    Claimer, JobKind, JobListener, JobToken, Lease, LeaseSettings, Needs, Requeue, Requeued, Signal,
};
pub use test_runs::{NewTestRun, StopRequest, TestRunEnd, TestRunRecord, TestRunStatus};
pub use vms::VmRow;
pub use workers::{WorkerLookup, WorkerRecord};

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use openfactory_core::Recipe;
use serde::Serialize;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Who owns a resource: `ip:<address>` for anonymous clients,
/// `account:<id>` for signed-in ones (through an API key), `local` for stdio.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OwnerId(pub(crate) String);

impl OwnerId {
    pub fn ip(addr: std::net::IpAddr) -> OwnerId {
        // IPv4-mapped IPv6 addresses are the same client as their IPv4 form.
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(addr),
            v4 => v4,
        };
        OwnerId(format!("ip:{addr}"))
    }

    /// A signed-in caller.
    pub fn account(id: &str) -> OwnerId {
        OwnerId(format!("account:{id}"))
    }

    /// The account this owner is, if it is one.
    pub fn account_id(&self) -> Option<&str> {
        self.0.strip_prefix("account:")
    }

    /// The user running a local stdio server.
    pub fn local() -> OwnerId {
        OwnerId("local".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An owner id as `as_str` writes it; `None` for anything else.
    pub fn parse(text: &str) -> Option<OwnerId> {
        if text == "local" {
            return Some(OwnerId::local());
        }
        if let Some(id) = text.strip_prefix("account:") {
            return (!id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| OwnerId::account(id));
        }
        let addr: std::net::IpAddr = text.strip_prefix("ip:")?.parse().ok()?;
        let owner = OwnerId::ip(addr);
        (owner.as_str() == text).then_some(owner)
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A database URL this store cannot open.
    #[error("{0}")]
    Url(String),
    /// A worker reported on a job through a lease that is no longer the
    /// job's (it was requeued, finished or handed to another worker).
    #[error("the lease on {kind} {id} is no longer held by this worker; stop working on it")]
    LeaseLost { kind: JobKind, id: String },
}

/// A recipe an owner created.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecipe {
    pub id: String,
    pub template_id: Option<String>,
    pub category: String,
    pub recipe: Recipe,
    pub recipe_digest: String,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// For connections outside the pool (PostgreSQL's `LISTEN`).
    url: std::sync::Arc<str>,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// At most `max` characters of `text`.
pub(crate) fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl Store {
    /// Open (creating a SQLite file if needed) and migrate a database:
    /// `sqlite://path/to.db`, `sqlite::memory:` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let engine = Engine::of(url)?;
        let pool = engine.connect(url).await?;
        engine.migrate(&pool).await?;
        Ok(Store {
            pool,
            engine,
            url: url.into(),
        })
    }

    /// Which engine this store runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Record that an owner was seen (creating it on first sight).
    pub async fn touch_owner(&self, owner: &OwnerId) -> Result<(), StoreError> {
        let t = now();
        sqlx::query(
            "INSERT INTO owners (id, created_at, last_seen_at) VALUES ($1, $2, $2)
             ON CONFLICT (id) DO UPDATE SET last_seen_at = $2",
        )
        .bind(owner.as_str())
        .bind(t)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Store a new recipe for `owner`. Fails with [`StoreError::Conflict`] if
    /// the owner already has a recipe with that id; nothing is written then.
    pub async fn insert_recipe(
        &self,
        owner: &OwnerId,
        id: &str,
        template_id: Option<&str>,
        category: &str,
        recipe: &Recipe,
        recipe_digest: &str,
    ) -> Result<StoredRecipe, StoreError> {
        self.touch_owner(owner).await?;
        let json = serde_json::to_string(recipe).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let t = now();
        let result = sqlx::query(
            "INSERT INTO recipes (owner_id, id, template_id, category, recipe_json, recipe_digest, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (owner_id, id) DO NOTHING",
        )
        .bind(owner.as_str())
        .bind(id)
        .bind(template_id)
        .bind(category)
        .bind(&json)
        .bind(recipe_digest)
        .bind(t)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "you already have a recipe named `{id}`"
            )));
        }
        Ok(StoredRecipe {
            id: id.into(),
            template_id: template_id.map(Into::into),
            category: category.into(),
            recipe: recipe.clone(),
            recipe_digest: recipe_digest.into(),
            created_at: rfc3339(t),
        })
    }

    /// The owner's recipes, oldest first.
    pub async fn recipes(&self, owner: &OwnerId) -> Result<Vec<StoredRecipe>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, template_id, category, recipe_json, recipe_digest, created_at
             FROM recipes WHERE owner_id = $1 ORDER BY created_at, id",
        )
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored).collect()
    }

    /// One of the owner's recipes; `None` if it does not exist *for this owner*.
    pub async fn recipe(
        &self,
        owner: &OwnerId,
        id: &str,
    ) -> Result<Option<StoredRecipe>, StoreError> {
        let row = sqlx::query(
            "SELECT id, template_id, category, recipe_json, recipe_digest, created_at
             FROM recipes WHERE owner_id = $1 AND id = $2",
        )
        .bind(owner.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stored).transpose()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn stored(row: &AnyRow) -> Result<StoredRecipe, StoreError> {
    let json: String = row.try_get("recipe_json")?;
    let recipe = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("recipe JSON: {e}")))?;
    Ok(StoredRecipe {
        id: row.try_get("id")?,
        template_id: row.try_get("template_id")?,
        category: row.try_get("category")?,
        recipe,
        recipe_digest: row.try_get("recipe_digest")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openfactory_core::validate::{Format, check_text};

    fn recipe(name: &str) -> Recipe {
        check_text(
            &format!("name = \"{name}\"\nbase_image = \"debian-bookworm\"\n"),
            Format::Toml,
        )
        .recipe
        .unwrap()
    }

    #[tokio::test]
    async fn recipes_are_scoped_to_their_owner_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![format!("sqlite://{}", dir.path().join("of.db").display())];
        urls.extend(crate::test_databases::fresh_postgres().await);
        for url in urls {
            let store = Store::open(&url).await.unwrap();
            let a = OwnerId::ip("127.0.0.1".parse().unwrap());
            let b = OwnerId::ip("127.0.0.2".parse().unwrap());
            store
                .insert_recipe(&a, "mine", Some("tpl"), "server", &recipe("mine"), "h1")
                .await
                .unwrap();
            // The same id for another owner is independent.
            store
                .insert_recipe(&b, "mine", None, "server", &recipe("mine"), "h2")
                .await
                .unwrap();
            let dup = store
                .insert_recipe(&a, "mine", None, "server", &recipe("mine"), "h3")
                .await
                .unwrap_err();
            assert!(matches!(dup, StoreError::Conflict(_)));
            assert_eq!(store.recipes(&a).await.unwrap().len(), 1);
            assert_eq!(
                store
                    .recipe(&b, "mine")
                    .await
                    .unwrap()
                    .unwrap()
                    .recipe_digest,
                "h2"
            );
            assert!(store.recipe(&a, "other").await.unwrap().is_none());
            store.close().await;

            let reopened = Store::open(&url).await.unwrap();
            let got = reopened.recipe(&a, "mine").await.unwrap().unwrap();
            assert_eq!(got.template_id.as_deref(), Some("tpl"));
            assert_eq!(got.recipe.name, "mine");
            assert!(got.created_at.ends_with('Z'));
            // Opening again migrates nothing twice.
            drop(Store::open(&url).await.unwrap());
        }
    }

    #[test]
    fn mapped_ipv6_is_the_same_owner() {
        assert_eq!(
            OwnerId::ip("::ffff:127.0.0.1".parse().unwrap()),
            OwnerId::ip("127.0.0.1".parse().unwrap())
        );
        assert_ne!(
            OwnerId::ip("::1".parse().unwrap()),
            OwnerId::ip("127.0.0.1".parse().unwrap())
        );
    }
}
