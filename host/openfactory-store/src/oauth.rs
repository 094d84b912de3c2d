//! OAuth 2.1 records: registered clients, grants (an account's consent to a
//! client, the family of everything issued under it), authorization codes
//! and tokens. Codes and tokens arrive as the SHA-256 of their secret, as
//! keys do: the store never sees one in clear.
//!
//! Single use is decided here, by one conditional `UPDATE` each (a code, a
//! refresh token): of two concurrent redemptions exactly one wins, on both
//! engines, and the loser learns that it replayed a used one.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, now, rfc3339};

/// A client that registered itself (RFC 7591).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// The SHA-256 of a confidential client's secret.
    pub secret_hash: Option<String>,
    pub client_uri: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One account's consent to one client: a connected client.
#[derive(Debug, Clone, Serialize)]
pub struct OAuthGrant {
    pub grant_id: String,
    #[serde(skip)]
    pub account_id: String,
    pub client_id: String,
    pub client_name: String,
    pub scope: String,
    pub resource: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_because: Option<String>,
}

impl OAuthGrant {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Which kind of token a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// What redeeming a code found.
#[derive(Debug)]
pub enum CodeRedemption {
    /// The code's first use: what it was issued for.
    Redeemed {
        grant: OAuthGrant,
        redirect_uri: String,
        code_challenge: String,
    },
    /// Used before: whoever holds it now may be an attacker.
    Replayed {
        grant_id: String,
    },
    Expired,
    Unknown,
}

/// What using a refresh token found.
#[derive(Debug)]
pub enum RefreshUse {
    /// Its first use: it is spent now, and the grant may issue the next.
    Rotated(OAuthGrant),
    /// Spent before: a stolen copy, or a client that lost the new one.
    Replayed {
        grant_id: String,
    },
    Expired,
    Revoked,
    Unknown,
}

/// What an access token turned out to be.
#[derive(Debug)]
pub enum AccessLookup {
    Valid(OAuthGrant),
    Expired,
    Revoked,
    Unknown,
}

/// What spending a single-use secret found.
enum Spent {
    /// Its first use: its row.
    First(AnyRow),
    /// Used before, under this grant.
    Again {
        grant_id: String,
    },
    Unknown,
}

const GRANT_COLUMNS: &str = "id, account_id, client_id, client_name, scope, resource, created_at, \
     last_used_at, revoked_at, revoked_because";

/// How stale a grant's "last used" may get before a use writes it again.
const LAST_USED_RESOLUTION: i64 = 60;

fn grant(row: &AnyRow) -> Result<OAuthGrant, StoreError> {
    let used: Option<i64> = row.try_get("last_used_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(OAuthGrant {
        grant_id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        client_id: row.try_get("client_id")?,
        client_name: row.try_get("client_name")?,
        scope: row.try_get("scope")?,
        resource: row.try_get("resource")?,
        created_at: rfc3339(row.try_get("created_at")?),
        last_used_at: used.map(rfc3339),
        revoked_at: revoked.map(rfc3339),
        revoked_because: row.try_get("revoked_because")?,
    })
}

fn client(row: &AnyRow) -> Result<OAuthClientRecord, StoreError> {
    let uris: String = row.try_get("redirect_uris_json")?;
    Ok(OAuthClientRecord {
        client_id: row.try_get("client_id")?,
        client_name: row.try_get("client_name")?,
        redirect_uris: serde_json::from_str(&uris)
            .map_err(|e| StoreError::Corrupt(format!("an OAuth client's redirect URIs: {e}")))?,
        auth_method: row.try_get("auth_method")?,
        secret_hash: row.try_get("secret_hash")?,
        client_uri: row.try_get("client_uri")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    pub async fn insert_oauth_client(&self, c: &OAuthClientRecord) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&c.redirect_uris)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris_json, auth_method,
                 secret_hash, client_uri, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.client_id)
        .bind(&c.client_name)
        .bind(uris)
        .bind(&c.auth_method)
        .bind(&c.secret_hash)
        .bind(&c.client_uri)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn oauth_client(
        &self,
        client_id: &str,
    ) -> Result<Option<OAuthClientRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT client_id, client_name, redirect_uris_json, auth_method, secret_hash,
                    client_uri, created_at
             FROM oauth_clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client).transpose()
    }

    /// A new grant: `account_id` consented to `client_id`.
    pub async fn create_oauth_grant(
        &self,
        grant_id: &str,
        account_id: &str,
        client_id: &str,
        client_name: &str,
        scope: &str,
        resource: &str,
    ) -> Result<OAuthGrant, StoreError> {
        let sql = format!(
            "INSERT INTO oauth_grants (id, account_id, client_id, client_name, scope, resource, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {GRANT_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(grant_id)
            .bind(account_id)
            .bind(client_id)
            .bind(client_name)
            .bind(scope)
            .bind(resource)
            .bind(now())
            .fetch_one(&self.pool)
            .await?;
        grant(&row)
    }

    async fn grant_by_id(&self, grant_id: &str) -> Result<Option<OAuthGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM oauth_grants WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(grant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant).transpose()
    }

    pub async fn insert_oauth_code(
        &self,
        code_hash: &str,
        grant_id: &str,
        redirect_uri: &str,
        code_challenge: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(code_hash)
        .bind(grant_id)
        .bind(redirect_uri)
        .bind(code_challenge)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spend a single-use secret: `spend` marks it used (`$1` its hash, `$2`
    /// now) only if it was not, returning its row; `earlier` finds it used.
    async fn spend(
        &self,
        spend: &str,
        earlier: &str,
        hash: &str,
        at: i64,
    ) -> Result<Spent, StoreError> {
        if let Some(row) = sqlx::query(spend)
            .bind(hash)
            .bind(at)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(Spent::First(row));
        }
        Ok(
            match sqlx::query(earlier)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?
            {
                Some(row) => Spent::Again {
                    grant_id: row.try_get("grant_id")?,
                },
                None => Spent::Unknown,
            },
        )
    }

    /// Spend a code. Only its first redemption learns what it was for.
    pub async fn redeem_oauth_code(&self, code_hash: &str) -> Result<CodeRedemption, StoreError> {
        let at = now();
        let row = match self
            .spend(
                "UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL
                 RETURNING grant_id, redirect_uri, code_challenge, expires_at",
                "SELECT grant_id FROM oauth_codes WHERE code_hash = $1",
                code_hash,
                at,
            )
            .await?
        {
            Spent::First(row) => row,
            Spent::Again { grant_id } => return Ok(CodeRedemption::Replayed { grant_id }),
            Spent::Unknown => return Ok(CodeRedemption::Unknown),
        };
        let expires_at: i64 = row.try_get("expires_at")?;
        let grant_id: String = row.try_get("grant_id")?;
        match self.grant_by_id(&grant_id).await? {
            Some(grant) if expires_at > at && !grant.is_revoked() => Ok(CodeRedemption::Redeemed {
                grant,
                redirect_uri: row.try_get("redirect_uri")?,
                code_challenge: row.try_get("code_challenge")?,
            }),
            Some(_) => Ok(CodeRedemption::Expired),
            None => Ok(CodeRedemption::Unknown),
        }
    }

    pub async fn insert_oauth_token(
        &self,
        token_hash: &str,
        grant_id: &str,
        kind: TokenKind,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_tokens (token_hash, grant_id, kind, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(grant_id)
        .bind(kind.as_str())
        .bind(now())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spend a refresh token. Only its first use may rotate.
    pub async fn use_refresh_token(&self, token_hash: &str) -> Result<RefreshUse, StoreError> {
        let at = now();
        let row = match self
            .spend(
                "UPDATE oauth_tokens SET used_at = $2
                 WHERE token_hash = $1 AND kind = 'refresh' AND used_at IS NULL
                 RETURNING grant_id, expires_at",
                "SELECT grant_id FROM oauth_tokens WHERE token_hash = $1 AND kind = 'refresh'",
                token_hash,
                at,
            )
            .await?
        {
            Spent::First(row) => row,
            Spent::Again { grant_id } => return Ok(RefreshUse::Replayed { grant_id }),
            Spent::Unknown => return Ok(RefreshUse::Unknown),
        };
        let expires_at: i64 = row.try_get("expires_at")?;
        let grant_id: String = row.try_get("grant_id")?;
        Ok(match self.grant_by_id(&grant_id).await? {
            None => RefreshUse::Unknown,
            Some(g) if g.is_revoked() => RefreshUse::Revoked,
            Some(_) if expires_at <= at => RefreshUse::Expired,
            Some(g) => RefreshUse::Rotated(g),
        })
    }

    /// The grant an access token acts for; a valid one marks it used.
    pub async fn access_token(&self, token_hash: &str) -> Result<AccessLookup, StoreError> {
        let at = now();
        let sql = format!(
            "SELECT t.expires_at AS token_expires_at, {}
             FROM oauth_tokens t JOIN oauth_grants g ON g.id = t.grant_id
             WHERE t.token_hash = $1 AND t.kind = 'access'",
            GRANT_COLUMNS
                .split(", ")
                .map(|c| format!("g.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let Some(row) = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(AccessLookup::Unknown);
        };
        let found = grant(&row)?;
        if found.is_revoked() {
            return Ok(AccessLookup::Revoked);
        }
        if row.try_get::<i64, _>("token_expires_at")? <= at {
            return Ok(AccessLookup::Expired);
        }
        sqlx::query(
            "UPDATE oauth_grants SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(&found.grant_id)
        .bind(at)
        .bind(at - LAST_USED_RESOLUTION)
        .execute(&self.pool)
        .await?;
        Ok(AccessLookup::Valid(found))
    }

    /// The grant a token of either kind belongs to, whatever its state.
    pub async fn token_grant(&self, token_hash: &str) -> Result<Option<OAuthGrant>, StoreError> {
        let row = sqlx::query("SELECT grant_id FROM oauth_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                self.grant_by_id(&row.try_get::<String, _>("grant_id")?)
                    .await
            }
            None => Ok(None),
        }
    }

    /// Revoke a grant, and with it every code and token issued under it.
    /// The first reason given is kept.
    pub async fn revoke_oauth_grant(
        &self,
        grant_id: &str,
        because: &str,
    ) -> Result<Option<OAuthGrant>, StoreError> {
        let sql = format!(
            "UPDATE oauth_grants SET revoked_at = COALESCE(revoked_at, $2),
                 revoked_because = COALESCE(revoked_because, $3)
             WHERE id = $1 RETURNING {GRANT_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(grant_id)
            .bind(now())
            .bind(because)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant).transpose()
    }

    /// One of the account's grants, if it has it.
    pub async fn account_oauth_grant(
        &self,
        account_id: &str,
        grant_id: &str,
    ) -> Result<Option<OAuthGrant>, StoreError> {
        Ok(self
            .grant_by_id(grant_id)
            .await?
            .filter(|g| g.account_id == account_id))
    }

    /// The account's grants, newest first, revoked ones included.
    pub async fn oauth_grants(&self, account_id: &str) -> Result<Vec<OAuthGrant>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants WHERE account_id = $1
             ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(grant).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_databases;

    async fn account(store: &Store, n: &str) -> String {
        let id = format!("acct{n}");
        store
            .create_account(&id, &format!("{n}@example.org"), "$argon2id$x")
            .await
            .unwrap();
        id
    }

    #[tokio::test]
    async fn a_code_is_redeemed_once_and_a_replay_names_its_grant() {
        for (engine, store) in test_databases::each().await {
            let a = account(&store, "a").await;
            let g = store
                .create_oauth_grant(
                    "g1",
                    &a,
                    "https://c.example/cm",
                    "C",
                    "mcp",
                    "http://x/api/mcp",
                )
                .await
                .unwrap();
            store
                .insert_oauth_code("h1", &g.grant_id, "http://127.0.0.1/cb", "chal", now() + 60)
                .await
                .unwrap();
            match store.redeem_oauth_code("h1").await.unwrap() {
                CodeRedemption::Redeemed {
                    grant,
                    redirect_uri,
                    code_challenge,
                } => {
                    assert_eq!(grant.grant_id, "g1", "{engine}");
                    assert_eq!(redirect_uri, "http://127.0.0.1/cb");
                    assert_eq!(code_challenge, "chal");
                }
                other => panic!("{engine}: {other:?}"),
            }
            assert!(
                matches!(store.redeem_oauth_code("h1").await.unwrap(), CodeRedemption::Replayed { grant_id } if grant_id == "g1"),
                "{engine}"
            );
            assert!(matches!(
                store.redeem_oauth_code("nope").await.unwrap(),
                CodeRedemption::Unknown
            ));
            store
                .insert_oauth_code("h2", &g.grant_id, "http://127.0.0.1/cb", "chal", now() - 1)
                .await
                .unwrap();
            assert!(matches!(
                store.redeem_oauth_code("h2").await.unwrap(),
                CodeRedemption::Expired
            ));
        }
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_once_and_revoking_the_grant_ends_its_tokens() {
        for (engine, store) in test_databases::each().await {
            let a = account(&store, "a").await;
            let g = store
                .create_oauth_grant("g1", &a, "of_cli_1", "C", "mcp", "http://x/api/mcp")
                .await
                .unwrap();
            store
                .insert_oauth_token("r1", "g1", TokenKind::Refresh, now() + 600)
                .await
                .unwrap();
            store
                .insert_oauth_token("a1", "g1", TokenKind::Access, now() + 600)
                .await
                .unwrap();
            // An access token is not a refresh token, and the other way round.
            assert!(matches!(
                store.use_refresh_token("a1").await.unwrap(),
                RefreshUse::Unknown
            ));
            assert!(matches!(
                store.access_token("r1").await.unwrap(),
                AccessLookup::Unknown
            ));
            assert!(
                matches!(store.use_refresh_token("r1").await.unwrap(), RefreshUse::Rotated(x) if x.grant_id == g.grant_id)
            );
            assert!(
                matches!(store.use_refresh_token("r1").await.unwrap(), RefreshUse::Replayed { grant_id } if grant_id == "g1"),
                "{engine}"
            );
            match store.access_token("a1").await.unwrap() {
                AccessLookup::Valid(found) => {
                    assert_eq!(found.account_id, a);
                    assert!(
                        found.last_used_at.is_none(),
                        "the answer is the state before this use"
                    );
                }
                other => panic!("{engine}: {other:?}"),
            }
            assert!(
                store.oauth_grants(&a).await.unwrap()[0]
                    .last_used_at
                    .is_some()
            );
            let revoked = store
                .revoke_oauth_grant("g1", "refresh token replayed")
                .await
                .unwrap()
                .unwrap();
            assert!(revoked.is_revoked());
            assert!(matches!(
                store.access_token("a1").await.unwrap(),
                AccessLookup::Revoked
            ));
            // The first reason stays.
            let again = store
                .revoke_oauth_grant("g1", "by its owner")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                again.revoked_because.as_deref(),
                Some("refresh token replayed")
            );
            store
                .insert_oauth_token("a2", "g1", TokenKind::Access, now() - 1)
                .await
                .unwrap();
            assert!(matches!(
                store.access_token("a2").await.unwrap(),
                AccessLookup::Revoked
            ));
        }
    }

    #[tokio::test]
    async fn grants_and_clients_are_the_accounts_own() {
        for (engine, store) in test_databases::each().await {
            let a = account(&store, "a").await;
            let b = account(&store, "b").await;
            store
                .create_oauth_grant("ga", &a, "c", "C", "mcp", "r")
                .await
                .unwrap();
            store
                .insert_oauth_token("x", "ga", TokenKind::Access, now() - 5)
                .await
                .unwrap();
            assert!(matches!(
                store.access_token("x").await.unwrap(),
                AccessLookup::Expired
            ));
            assert!(
                store.account_oauth_grant(&b, "ga").await.unwrap().is_none(),
                "{engine}"
            );
            assert_eq!(store.oauth_grants(&a).await.unwrap().len(), 1);
            assert!(store.oauth_grants(&b).await.unwrap().is_empty());
            assert_eq!(
                store.token_grant("x").await.unwrap().unwrap().grant_id,
                "ga"
            );

            let record = OAuthClientRecord {
                client_id: "of_cli_1".into(),
                client_name: "Client".into(),
                redirect_uris: vec!["http://127.0.0.1/cb".into()],
                auth_method: "none".into(),
                secret_hash: None,
                client_uri: None,
                created_at: 5,
            };
            store.insert_oauth_client(&record).await.unwrap();
            assert_eq!(store.oauth_client("of_cli_1").await.unwrap(), Some(record));
            assert!(store.oauth_client("of_cli_2").await.unwrap().is_none());
        }
    }
}
