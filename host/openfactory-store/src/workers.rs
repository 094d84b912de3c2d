//! Remote workers: a name, a token (stored as its SHA-256, like API keys),
//! and what the worker last said it can do. Revoking one is immediate: every
//! call a worker makes looks its token up here.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, now, rfc3339};

/// A worker as operators see it: never its token, nor its hash.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRecord {
    pub name: String,
    /// The first characters of the token, to tell tokens apart.
    pub prefix: String,
    pub created_at: String,
    pub last_seen_at: Option<String>,
    pub revoked_at: Option<String>,
    /// What it said it can do when it last asked for a job (JSON).
    #[serde(skip)]
    pub capabilities_json: Option<String>,
}

impl WorkerRecord {
    /// The `worker` column of the jobs it holds.
    pub fn worker_id(&self) -> String {
        format!("worker:{}", self.name)
    }
}

/// What a worker token turned out to be.
#[derive(Debug)]
pub enum WorkerLookup {
    Valid(WorkerRecord),
    Revoked(WorkerRecord),
    Unknown,
}

const COLUMNS: &str = "name, prefix, created_at, last_seen_at, revoked_at, capabilities_json";

fn record(row: &AnyRow) -> Result<WorkerRecord, StoreError> {
    let seen: Option<i64> = row.try_get("last_seen_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(WorkerRecord {
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: rfc3339(row.try_get("created_at")?),
        last_seen_at: seen.map(rfc3339),
        revoked_at: revoked.map(rfc3339),
        capabilities_json: row.try_get("capabilities_json")?,
    })
}

impl Store {
    /// Enrol a worker; a clear conflict when the name is taken (revoked
    /// names stay taken, so that old job records keep meaning one worker).
    pub async fn create_worker(
        &self,
        name: &str,
        prefix: &str,
        token_hash: &str,
    ) -> Result<WorkerRecord, StoreError> {
        let sql = format!(
            "INSERT INTO workers (name, prefix, token_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(prefix)
            .bind(token_hash)
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => record(&row),
            None => Err(StoreError::Conflict(format!(
                "name: a worker named `{name}` exists already; choose another name"
            ))),
        }
    }

    /// Every worker, oldest first.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM workers ORDER BY created_at, name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(record).collect()
    }

    /// Revoke a worker's token; `None` if there is no such worker.
    pub async fn revoke_worker(&self, name: &str) -> Result<Option<WorkerRecord>, StoreError> {
        let sql = format!(
            "UPDATE workers SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// The worker a token hash belongs to; a valid one is marked seen, with
    /// the capabilities it reports (when it reports them).
    pub async fn worker_by_token(
        &self,
        token_hash: &str,
        capabilities_json: Option<&str>,
    ) -> Result<WorkerLookup, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM workers WHERE token_hash = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(WorkerLookup::Unknown);
        };
        let found = record(&row)?;
        if found.revoked_at.is_some() {
            return Ok(WorkerLookup::Revoked(found));
        }
        sqlx::query(
            "UPDATE workers SET last_seen_at = $2, capabilities_json = COALESCE($3, capabilities_json)
             WHERE name = $1",
        )
        .bind(&found.name)
        .bind(now())
        .bind(capabilities_json)
        .execute(&self.pool)
        .await?;
        Ok(WorkerLookup::Valid(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_enrol_authenticate_and_are_revoked_at_once() {
        for (engine, store) in crate::test_databases::each().await {
            let w = store.create_worker("w1", "of_wkr_ab", "h1").await.unwrap();
            assert_eq!(w.worker_id(), "worker:w1");
            let err = store
                .create_worker("w1", "of_wkr_cd", "h2")
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("exists already"),
                "{engine}: {err}"
            );
            assert!(matches!(
                store.worker_by_token("h1", Some("{\"arch\":\"amd64\"}")).await.unwrap(),
                WorkerLookup::Valid(w) if w.name == "w1"
            ));
            let listed = store.workers().await.unwrap();
            assert!(listed[0].last_seen_at.is_some(), "{engine}");
            assert!(
                listed[0]
                    .capabilities_json
                    .as_deref()
                    .unwrap()
                    .contains("amd64")
            );
            assert!(matches!(
                store.worker_by_token("nope", None).await.unwrap(),
                WorkerLookup::Unknown
            ));
            assert!(
                store
                    .revoke_worker("w1")
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at
                    .is_some()
            );
            assert!(store.revoke_worker("nobody").await.unwrap().is_none());
            assert!(matches!(
                store.worker_by_token("h1", None).await.unwrap(),
                WorkerLookup::Revoked(_)
            ));
        }
    }
}
