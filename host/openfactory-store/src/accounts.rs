//! Accounts and their MCP API keys. Passwords arrive here already hashed and
//! keys as the hash of their secret: the store never sees either in clear.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{OwnerId, Store, StoreError, now, rfc3339};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub email: String,
    /// A PHC string (argon2id).
    pub password_hash: String,
    pub created_at: String,
    /// May see operator-only pages (plugin load problems, bundle locations).
    pub operator: bool,
}

impl Account {
    pub fn owner(&self) -> OwnerId {
        OwnerId::account(&self.id)
    }
}

/// A key as its owner sees it: never its secret, nor its hash.
#[derive(Debug, Clone, Serialize)]
pub struct McpKey {
    pub key_id: String,
    #[serde(skip)]
    pub account_id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart: `of_mcp_3f9c2a`.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

fn account(row: &AnyRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_at: rfc3339(row.try_get("created_at")?),
        operator: row.try_get::<i64, _>("operator")? != 0,
    })
}

fn key(row: &AnyRow) -> Result<McpKey, StoreError> {
    let used: Option<i64> = row.try_get("last_used_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(McpKey {
        key_id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: rfc3339(row.try_get("created_at")?),
        last_used_at: used.map(rfc3339),
        revoked_at: revoked.map(rfc3339),
    })
}

const ACCOUNT_COLUMNS: &str = "id, email, password_hash, created_at, operator";

const KEY_COLUMNS: &str = "id, account_id, name, prefix, created_at, last_used_at, revoked_at";

/// What a key's secret turned out to be.
#[derive(Debug)]
pub enum KeyLookup {
    Valid(McpKey),
    Revoked(McpKey),
    Unknown,
}

impl Store {
    /// A new account; a clear conflict when the email is taken.
    pub async fn create_account(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<Account, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "email: an account with this email already exists; sign in instead".into(),
            ));
        }
        self.touch_owner(&OwnerId::account(id)).await?;
        self.account_by_email(email)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an account vanished after insert".into()))
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1");
        let row = sqlx::query(&sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account).transpose()
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account).transpose()
    }

    /// Make an account an operator, or not; `false` if there is no such email.
    pub async fn set_operator(&self, email: &str, operator: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE accounts SET operator = $2 WHERE email = $1")
            .bind(email)
            .bind(i64::from(operator))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A browser sign-in for the account, known by the hash of its secret,
    /// until `expires_at` (seconds since the epoch). Expired ones are swept.
    pub async fn create_web_session(
        &self,
        id_hash: &str,
        account_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let t = now();
        sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1")
            .bind(t)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(account_id)
        .bind(t)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The account signed in by this browser session, if it exists and has not expired.
    pub async fn web_session_account(&self, id_hash: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!(
            "SELECT {} FROM web_sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.id_hash = $1 AND s.expires_at >= $2",
            ACCOUNT_COLUMNS
                .split(", ")
                .map(|c| format!("a.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(&sql)
            .bind(id_hash)
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account).transpose()
    }

    /// Sign one browser out.
    pub async fn delete_web_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sign every browser of the account out; how many were signed in.
    pub async fn delete_web_sessions(&self, account_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE account_id = $1")
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn create_key(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        prefix: &str,
        key_hash: &str,
    ) -> Result<McpKey, StoreError> {
        let sql = format!(
            "INSERT INTO mcp_keys (id, account_id, name, prefix, key_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(account_id)
            .bind(name)
            .bind(prefix)
            .bind(key_hash)
            .bind(now())
            .fetch_one(&self.pool)
            .await?;
        key(&row)
    }

    /// The account's keys, newest first, revoked ones included.
    pub async fn keys(&self, account_id: &str) -> Result<Vec<McpKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM mcp_keys WHERE account_id = $1 ORDER BY created_at DESC, seq DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key).collect()
    }

    /// Revoke one of the account's keys; `None` if it has no such key.
    pub async fn revoke_key(
        &self,
        account_id: &str,
        key_id: &str,
    ) -> Result<Option<McpKey>, StoreError> {
        let sql = format!(
            "UPDATE mcp_keys SET revoked_at = COALESCE(revoked_at, $3)
             WHERE account_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(account_id)
            .bind(key_id)
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key).transpose()
    }

    /// The key whose secret hashes to `key_hash`; a valid one is marked used.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM mcp_keys WHERE key_hash = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(KeyLookup::Unknown);
        };
        let found = key(&row)?;
        if found.revoked_at.is_some() {
            return Ok(KeyLookup::Revoked(found));
        }
        sqlx::query("UPDATE mcp_keys SET last_used_at = $2 WHERE id = $1")
            .bind(&found.key_id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(KeyLookup::Valid(found))
    }
}

/// What [`Store::claim`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Claimed {
    pub recipes: u64,
    pub builds: u64,
    pub vms: u64,
    pub test_runs: u64,
}

impl Store {
    /// Move everything `from` (an IP session) owns to `to` (an account), in
    /// one transaction: all of it, or, when a recipe id or VM name is taken
    /// in the account, nothing (the conflict says which).
    pub async fn claim(&self, from: &OwnerId, to: &OwnerId) -> Result<Claimed, StoreError> {
        self.touch_owner(to).await?;
        let mut tx = self.pool.begin().await?;
        for (table, column, what) in [("recipes", "id", "recipe"), ("vms", "name", "VM")] {
            let sql = format!(
                "SELECT a.{column} FROM {table} a JOIN {table} b ON a.{column} = b.{column}
                 WHERE a.owner_id = $1 AND b.owner_id = $2 LIMIT 1"
            );
            let clash: Option<String> = sqlx::query_scalar(&sql)
                .bind(from.as_str())
                .bind(to.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(name) = clash {
                return Err(StoreError::Conflict(format!(
                    "your account already has a {what} named `{name}`, and so does this address; rename or delete one, then claim again (nothing was moved)"
                )));
            }
        }
        let mut claimed = Claimed::default();
        for (table, count) in [
            ("recipes", &mut claimed.recipes),
            ("builds", &mut claimed.builds),
            ("vms", &mut claimed.vms),
            ("test_runs", &mut claimed.test_runs),
        ] {
            *count = sqlx::query(&format!(
                "UPDATE {table} SET owner_id = $2 WHERE owner_id = $1"
            ))
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_and_keys() {
        for (_engine, store) in crate::test_databases::each().await {
            let a = store
                .create_account("a1", "ada@example.org", "$argon2id$x")
                .await
                .unwrap();
            assert_eq!(a.owner().as_str(), "account:a1");
            let err = store
                .create_account("a2", "ada@example.org", "$argon2id$y")
                .await
                .unwrap_err();
            assert!(err.to_string().contains("already exists"), "{err}");
            store
                .create_account("b1", "bob@example.org", "$argon2id$z")
                .await
                .unwrap();

            let k = store
                .create_key("a1", "k1", "laptop", "of_mcp_abcd", "h1")
                .await
                .unwrap();
            assert_eq!(k.last_used_at, None);
            assert!(
                matches!(store.key_by_hash("h1").await.unwrap(), KeyLookup::Valid(k) if k.account_id == "a1")
            );
            assert!(store.keys("a1").await.unwrap()[0].last_used_at.is_some());
            assert!(matches!(
                store.key_by_hash("nope").await.unwrap(),
                KeyLookup::Unknown
            ));
            // Bob cannot revoke Ada's key; Ada can, once and for all.
            assert!(store.revoke_key("b1", "k1").await.unwrap().is_none());
            assert!(
                store
                    .revoke_key("a1", "k1")
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at
                    .is_some()
            );
            assert!(matches!(
                store.key_by_hash("h1").await.unwrap(),
                KeyLookup::Revoked(_)
            ));
            assert!(store.keys("b1").await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn web_sessions_sign_in_expire_and_sign_out() {
        for (_engine, store) in crate::test_databases::each().await {
            store
                .create_account("a1", "ada@example.org", "h")
                .await
                .unwrap();
            store
                .create_account("b1", "bob@example.org", "h")
                .await
                .unwrap();
            store
                .create_web_session("s1", "a1", now() + 60)
                .await
                .unwrap();
            store
                .create_web_session("s2", "a1", now() + 60)
                .await
                .unwrap();
            store
                .create_web_session("s3", "b1", now() + 60)
                .await
                .unwrap();
            store
                .create_web_session("old", "a1", now() - 1)
                .await
                .unwrap();
            let found = store.web_session_account("s1").await.unwrap().unwrap();
            assert_eq!((found.id.as_str(), found.operator), ("a1", false));
            assert!(store.web_session_account("old").await.unwrap().is_none());
            assert!(store.web_session_account("nope").await.unwrap().is_none());
            store.delete_web_session("s1").await.unwrap();
            assert!(store.web_session_account("s1").await.unwrap().is_none());
            assert!(store.web_session_account("s2").await.unwrap().is_some());
            // Signing out everywhere ends Ada's sessions, not Bob's.
            assert_eq!(store.delete_web_sessions("a1").await.unwrap(), 2);
            assert!(store.web_session_account("s2").await.unwrap().is_none());
            assert!(store.web_session_account("s3").await.unwrap().is_some());

            assert!(store.set_operator("ada@example.org", true).await.unwrap());
            assert!(store.account("a1").await.unwrap().unwrap().operator);
            assert!(
                !store
                    .set_operator("nobody@example.org", true)
                    .await
                    .unwrap()
            );
        }
    }

    #[tokio::test]
    async fn claiming_moves_everything_or_nothing() {
        for (_engine, store) in crate::test_databases::each().await {
            store
                .create_account("a1", "ada@example.org", "h")
                .await
                .unwrap();
            let ip = OwnerId::parse("ip:192.0.2.1").unwrap();
            let ada = OwnerId::account("a1");
            let row = |name: &str| crate::VmRow {
                id: format!("id-{name}"),
                name: name.into(),
                build_id: "b".into(),
                memory_mb: 512,
                vcpus: 1,
                created_at: String::new(),
            };
            store.insert_vm(&ip, &row("web")).await.unwrap();
            store.insert_vm(&ada, &row("web2")).await.unwrap();
            let moved = store.claim(&ip, &ada).await.unwrap();
            assert_eq!(moved.vms, 1);
            assert!(store.vm(&ada, "web").await.unwrap().is_some());
            assert!(store.vm(&ip, "web").await.unwrap().is_none());

            // A clash moves nothing.
            let mut other = row("web2");
            other.id = "id-other".into();
            store.insert_vm(&ip, &other).await.unwrap();
            let err = store.claim(&ip, &ada).await.unwrap_err();
            assert!(err.to_string().contains("named `web2`"), "{err}");
            assert!(store.vm(&ip, "web2").await.unwrap().is_some());
        }
    }
}
