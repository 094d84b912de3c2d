//! The two database engines: how to connect to each, its migrations, and the
//! few words of SQL that differ between them.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor};

use crate::StoreError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

// How long a statement waits for a lock another connection holds before it
// fails (the caller is told the database is unavailable; nothing is half
// written, each change being one transaction): 5 s on both engines.
const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";
const LOCK_TIMEOUT_SQL: &str = "SET lock_timeout = 5000";

/// A database engine the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One file, one machine: the default.
    Sqlite,
    /// A server that several control planes share.
    Postgres,
}

impl Engine {
    /// The engine a database URL names.
    pub fn of(url: &str) -> Result<Engine, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Engine::Sqlite),
            "postgres" | "postgresql" => Ok(Engine::Postgres),
            _ => Err(StoreError::Url(format!(
                "database URL `{}`: use sqlite://PATH (the default engine), sqlite::memory: or postgres://USER@HOST:PORT/DATABASE",
                openfactory_core::rules::truncate(scheme, 40).escape_debug()
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    /// What ends the queue's `SELECT` of the next job: on PostgreSQL the row
    /// is locked and rows other claimers hold are skipped, so that many
    /// claimers never wait on each other; SQLite has one writer at a time,
    /// which makes the claiming `UPDATE` atomic without it.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    pub(crate) async fn connect(self, url: &str) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        match self {
            Engine::Sqlite => {
                let memory = url.contains(":memory:");
                // Create the file when it is missing (SQLite's `mode=rwc`).
                let url = if memory || url.contains("mode=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let pool = AnyPoolOptions::new()
                    // An in-memory database exists once per connection.
                    .max_connections(if memory { 1 } else { 8 })
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(SQLITE_PRAGMAS).await?;
                            if !memory {
                                conn.execute("PRAGMA journal_mode = WAL;").await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                Ok(pool)
            }
            Engine::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    // A table another session keeps locked is an error after
                    // a while, as on SQLite (its busy timeout), never a
                    // request that waits for ever.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(LOCK_TIMEOUT_SQL).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                // Fail at start, with the server's words, rather than on the
                // first request.
                pool.acquire().await?.ping().await?;
                Ok(pool)
            }
        }
    }

    /// Bring the schema up to date. On PostgreSQL sqlx holds an advisory
    /// lock meanwhile, so control planes starting together migrate once.
    pub(crate) async fn migrate(self, pool: &AnyPool) -> Result<(), StoreError> {
        match self {
            Engine::Sqlite => SQLITE_MIGRATIONS.run(pool).await?,
            Engine::Postgres => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_engine_or_say_what_to_use() {
        assert_eq!(Engine::of("sqlite:///tmp/x.db").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::of("sqlite::memory:").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::of("postgres://u@h/db").unwrap(), Engine::Postgres);
        assert_eq!(Engine::of("postgresql://u@h/db").unwrap(), Engine::Postgres);
        let err = Engine::of("mysql://h/db").unwrap_err().to_string();
        assert!(
            err.contains("`mysql`") && err.contains("postgres://"),
            "{err}"
        );
    }

    #[test]
    fn both_engines_wait_as_long_for_a_lock() {
        let wait = "5000";
        assert!(SQLITE_PRAGMAS.contains(&format!("busy_timeout = {wait};")));
        assert!(LOCK_TIMEOUT_SQL.ends_with(&format!("= {wait}")));
    }
}
