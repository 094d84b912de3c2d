//! Fresh databases for tests, on every engine this machine offers: SQLite
//! always, PostgreSQL when `OPENFACTORY_TEST_POSTGRES` names a server (an
//! admin URL; each test gets a database of its own on it). With
//! `OPENFACTORY_REQUIRE_POSTGRES=1` (CI sets it) a missing server fails the
//! test instead of leaving PostgreSQL untested.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, Row};

use crate::Store;

/// The admin URL of the test server, if there is one.
pub fn postgres_admin_url() -> Option<String> {
    let url = std::env::var("OPENFACTORY_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && std::env::var("OPENFACTORY_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!(
            "OPENFACTORY_REQUIRE_POSTGRES=1 but OPENFACTORY_TEST_POSTGRES is unset: \
             start PostgreSQL (cargo xtask test does) and set it to an admin URL"
        );
    }
    url
}

/// A new, empty PostgreSQL database on the test server; its URL. Databases
/// such tests made more than six hours ago are dropped on the way.
pub async fn fresh_postgres() -> Option<String> {
    let admin = postgres_admin_url()?;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let old: Vec<String> = conn
        .fetch_all(
            "SELECT CAST(datname AS TEXT) FROM pg_database WHERE datname LIKE 'of_store_test_%'",
        )
        .await
        .expect("list test databases")
        .iter()
        .filter_map(|row| row.try_get::<String, _>(0).ok())
        .filter(|name| {
            let made = name.split('_').nth(3).and_then(|t| t.parse::<u64>().ok());
            made.is_some_and(|t| t + 6 * 3600 < now)
        })
        .collect();
    for name in old {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
    }
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("the OS has randomness");
    let name = format!("of_store_test_{now}_{}", hex::encode(random));
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    Some(with_database(&admin, &name))
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A fresh store on each engine: `(engine name, store)`.
pub async fn each() -> Vec<(&'static str, Store)> {
    let mut stores = vec![(
        "sqlite",
        Store::open("sqlite::memory:")
            .await
            .expect("SQLite in memory"),
    )];
    if let Some(url) = fresh_postgres().await {
        let store = Store::open(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the test database {url}: {e}"));
        stores.push(("postgres", store));
    }
    stores
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://pg@127.0.0.1:5433/postgres", "of_test_1_ab"),
            "postgres://pg@127.0.0.1:5433/of_test_1_ab"
        );
        assert_eq!(
            with_database("postgres://pg@h/postgres?sslmode=disable", "x"),
            "postgres://pg@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://pg@h", "x"), "postgres://pg@h/x");
    }
}
