//! Builds, stored as jobs: what owners see, and the queue workers take from.

use serde::Serialize;
use sqlx::Row;

use crate::{OwnerId, Store, StoreError, now, rfc3339};

status_enum!(BuildStatus, "build status", {
    Queued = "queued",
    Running = "running",
    Completed = "completed",
    Failed = "failed",
    Cancelled = "cancelled",
});

impl BuildStatus {
    /// Whether the build can still change.
    pub fn is_active(self) -> bool {
        matches!(self, BuildStatus::Queued | BuildStatus::Running)
    }
}

/// A new build, as `create_build` and `retry_build` make it.
pub struct NewBuild<'a> {
    pub id: &'a str,
    pub recipe_digest: &'a str,
    pub recipe_name: &'a str,
    pub recipe_json: &'a str,
    pub plan_json: &'a str,
    pub features: &'a [String],
    pub retry_of: Option<&'a str>,
}

/// A build as stored.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    pub id: String,
    #[serde(skip)]
    pub owner: OwnerId,
    pub recipe_digest: String,
    pub recipe_name: String,
    #[serde(skip)]
    pub recipe_json: String,
    #[serde(skip)]
    pub plan_json: String,
    pub features: Vec<String>,
    pub status: BuildStatus,
    pub stage: Option<String>,
    /// Overall percentage, 0–100.
    pub progress: u8,
    pub message: String,
    pub error: Option<String>,
    pub failed_step: Option<String>,
    pub cancel_requested: bool,
    pub retry_of: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Unix seconds, for elapsed-time arithmetic.
    #[serde(skip)]
    pub started_unix: Option<i64>,
    #[serde(skip)]
    pub finished_unix: Option<i64>,
    pub iso_sha256: Option<String>,
    pub iso_size_bytes: Option<u64>,
    /// The executor's summary (stage timings, layers, base), as JSON.
    #[serde(skip)]
    pub result_json: Option<String>,
}

/// How a build ended.
pub enum BuildEnd<'a> {
    Completed {
        iso_sha256: &'a str,
        iso_size_bytes: u64,
        result_json: &'a str,
    },
    Failed {
        error: &'a str,
        failed_step: Option<&'a str>,
    },
    Cancelled,
}

/// What a cancel request did.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued: cancelled now.
    Cancelled,
    /// It is running: its worker will stop it.
    Requested,
    /// It had already finished with this status.
    AlreadyFinished(BuildStatus),
    NotFound,
}

const COLUMNS: &str = "id, owner_id, recipe_digest, recipe_name, recipe_json, plan_json, features_json, status, stage, progress, message, error, failed_step, cancel_requested, retry_of, created_at, started_at, finished_at, iso_sha256, iso_size_bytes, result_json";

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<BuildRecord, StoreError> {
    let features: String = row.try_get("features_json")?;
    let status: String = row.try_get("status")?;
    let started: Option<i64> = row.try_get("started_at")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    let size: Option<i64> = row.try_get("iso_size_bytes")?;
    let progress: i64 = row.try_get("progress")?;
    let cancel: i64 = row.try_get("cancel_requested")?;
    Ok(BuildRecord {
        id: row.try_get("id")?,
        owner: OwnerId(row.try_get("owner_id")?),
        recipe_digest: row.try_get("recipe_digest")?,
        recipe_name: row.try_get("recipe_name")?,
        recipe_json: row.try_get("recipe_json")?,
        plan_json: row.try_get("plan_json")?,
        features: serde_json::from_str(&features)
            .map_err(|e| StoreError::Corrupt(format!("build features: {e}")))?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        stage: row.try_get("stage")?,
        progress: progress.clamp(0, 100) as u8,
        message: row.try_get("message")?,
        error: row.try_get("error")?,
        failed_step: row.try_get("failed_step")?,
        cancel_requested: cancel != 0,
        retry_of: row.try_get("retry_of")?,
        created_at: rfc3339(row.try_get("created_at")?),
        started_at: started.map(rfc3339),
        finished_at: finished.map(rfc3339),
        started_unix: started,
        finished_unix: finished,
        iso_sha256: row.try_get("iso_sha256")?,
        iso_size_bytes: size.map(|s| s.max(0) as u64),
        result_json: row.try_get("result_json")?,
    })
}

impl Store {
    /// Queue a new build for `owner`.
    pub async fn create_build(
        &self,
        owner: &OwnerId,
        build: &NewBuild<'_>,
    ) -> Result<BuildRecord, StoreError> {
        self.touch_owner(owner).await?;
        let features = serde_json::to_string(build.features).expect("serialisable");
        sqlx::query(
            "INSERT INTO builds (id, owner_id, recipe_digest, recipe_name, recipe_json, plan_json, features_json, status, retry_of, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9)",
        )
        .bind(build.id)
        .bind(owner.as_str())
        .bind(build.recipe_digest)
        .bind(build.recipe_name)
        .bind(build.recipe_json)
        .bind(build.plan_json)
        .bind(&features)
        .bind(build.retry_of)
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.build(owner, build.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a build vanished after insert".into()))
    }

    /// The owner's builds, newest first.
    pub async fn builds(
        &self,
        owner: &OwnerId,
        status: Option<BuildStatus>,
        limit: u32,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM builds WHERE owner_id = $1 AND ($2 IS NULL OR status = $2)
             ORDER BY created_at DESC, rowid DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(status.map(|s| s.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// One of the owner's builds; `None` when it is not theirs or not there.
    pub async fn build(
        &self,
        owner: &OwnerId,
        id: &str,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM builds WHERE owner_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Number of the owner's queued or running builds.
    pub async fn active_builds(&self, owner: &OwnerId) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM builds WHERE owner_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(owner.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u32)
    }

    /// Bytes the owner's finished builds keep on disk (their ISOs).
    pub async fn owner_disk_bytes(&self, owner: &OwnerId) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(iso_size_bytes) FROM builds WHERE owner_id = $1 AND status = 'completed'",
        )
        .bind(owner.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Forget one of the owner's finished builds; whether it was there.
    pub async fn delete_build(&self, owner: &OwnerId, id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM builds WHERE owner_id = $1 AND id = $2 AND status NOT IN ('queued', 'running')",
        )
        .bind(owner.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Take the oldest queued build for `worker`, marking it running.
    pub async fn claim_build(&self, worker: &str) -> Result<Option<BuildRecord>, StoreError> {
        let t = now();
        let sql = format!(
            "UPDATE builds SET status = 'running', worker = $1, started_at = $2,
                    stage = 'bootstrap', progress = 0, message = 'starting'
             WHERE id = (SELECT id FROM builds WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1)
               AND status = 'queued'
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(t)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Record a running build's progress; returns whether cancellation was asked.
    pub async fn build_progress(
        &self,
        id: &str,
        stage: &str,
        progress: u8,
        message: &str,
    ) -> Result<bool, StoreError> {
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE builds SET stage = $2, progress = $3, message = $4
             WHERE id = $1 AND status = 'running' RETURNING cancel_requested",
        )
        .bind(id)
        .bind(stage)
        .bind(i64::from(progress.min(100)))
        .bind(crate::truncate_chars(message, 500))
        .fetch_optional(&self.pool)
        .await?;
        Ok(cancel.unwrap_or(0) != 0)
    }

    /// Whether cancellation of a running build was asked.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        let cancel: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM builds WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(cancel.unwrap_or(0) != 0)
    }

    /// Finish a running build.
    pub async fn finish_build(&self, id: &str, end: BuildEnd<'_>) -> Result<(), StoreError> {
        let t = now();
        match end {
            BuildEnd::Completed {
                iso_sha256,
                iso_size_bytes,
                result_json,
            } => {
                sqlx::query(
                    "UPDATE builds SET status = 'completed', stage = 'finish', progress = 100, message = 'done',
                            finished_at = $2, iso_sha256 = $3, iso_size_bytes = $4, result_json = $5
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(id)
                .bind(t)
                .bind(iso_sha256)
                .bind(iso_size_bytes as i64)
                .bind(result_json)
                .execute(&self.pool)
                .await?;
            }
            BuildEnd::Failed { error, failed_step } => {
                sqlx::query(
                    "UPDATE builds SET status = 'failed', finished_at = $2, error = $3, failed_step = $4
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(id)
                .bind(t)
                .bind(crate::truncate_chars(error, 4000))
                .bind(failed_step)
                .execute(&self.pool)
                .await?;
            }
            BuildEnd::Cancelled => {
                sqlx::query(
                    "UPDATE builds SET status = 'cancelled', finished_at = $2, message = 'cancelled'
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(id)
                .bind(t)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Ask for one of the owner's builds to stop.
    pub async fn cancel_build(
        &self,
        owner: &OwnerId,
        id: &str,
    ) -> Result<CancelOutcome, StoreError> {
        let t = now();
        let queued = sqlx::query(
            "UPDATE builds SET status = 'cancelled', finished_at = $3, message = 'cancelled before it started'
             WHERE owner_id = $1 AND id = $2 AND status = 'queued'",
        )
        .bind(owner.as_str())
        .bind(id)
        .bind(t)
        .execute(&self.pool)
        .await?;
        if queued.rows_affected() == 1 {
            return Ok(CancelOutcome::Cancelled);
        }
        let running = sqlx::query(
            "UPDATE builds SET cancel_requested = 1, message = 'cancelling'
             WHERE owner_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(owner.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if running.rows_affected() == 1 {
            return Ok(CancelOutcome::Requested);
        }
        Ok(match self.build(owner, id).await? {
            Some(build) => CancelOutcome::AlreadyFinished(build.status),
            None => CancelOutcome::NotFound,
        })
    }

    /// At start-up: builds this host was running when it stopped can not be
    /// resumed (their scratch space is gone), so they fail, saying why.
    pub async fn fail_interrupted_builds(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE builds SET status = 'failed', finished_at = $2,
                    error = 'interrupted: the OpenFactory host stopped during stage ' || COALESCE(stage, 'bootstrap')
             WHERE status = 'running' AND worker = $1 RETURNING id",
        )
        .bind(worker)
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        Store::open("sqlite::memory:").await.unwrap()
    }

    fn new_build(id: &str) -> NewBuild<'_> {
        NewBuild {
            id,
            recipe_digest: "r1",
            recipe_name: "web",
            recipe_json: "{}",
            plan_json: "{}",
            features: &[],
            retry_of: None,
        }
    }

    #[tokio::test]
    async fn the_queue_runs_oldest_first_and_owners_see_only_theirs() {
        let store = store().await;
        let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
        let bob = OwnerId::ip("192.0.2.2".parse().unwrap());
        store.create_build(&alice, &new_build("a1")).await.unwrap();
        store.create_build(&bob, &new_build("b1")).await.unwrap();
        assert!(store.build(&bob, "a1").await.unwrap().is_none());
        assert_eq!(store.builds(&alice, None, 10).await.unwrap().len(), 1);

        let first = store.claim_build("w").await.unwrap().unwrap();
        assert_eq!(
            (first.id.as_str(), first.status),
            ("a1", BuildStatus::Running)
        );
        let second = store.claim_build("w").await.unwrap().unwrap();
        assert_eq!(second.id, "b1");
        assert!(store.claim_build("w").await.unwrap().is_none());

        assert!(
            !store
                .build_progress("a1", "apply", 50, "step 3/9")
                .await
                .unwrap()
        );
        assert_eq!(
            store.cancel_build(&bob, "a1").await.unwrap(),
            CancelOutcome::NotFound
        );
        assert_eq!(
            store.cancel_build(&alice, "a1").await.unwrap(),
            CancelOutcome::Requested
        );
        assert!(store.build_progress("a1", "apply", 60, "x").await.unwrap());
        store.finish_build("a1", BuildEnd::Cancelled).await.unwrap();
        assert_eq!(
            store.cancel_build(&alice, "a1").await.unwrap(),
            CancelOutcome::AlreadyFinished(BuildStatus::Cancelled)
        );

        let failed = store.fail_interrupted_builds("w").await.unwrap();
        assert_eq!(failed, ["b1"]);
        let b1 = store.build(&bob, "b1").await.unwrap().unwrap();
        assert_eq!(b1.status, BuildStatus::Failed);
        assert!(b1.error.unwrap().contains("interrupted"));
        assert_eq!(
            store
                .builds(&bob, Some(BuildStatus::Completed), 10)
                .await
                .unwrap()
                .len(),
            0
        );
    }

    #[tokio::test]
    async fn queued_builds_cancel_at_once() {
        let store = store().await;
        let alice = OwnerId::local();
        store.create_build(&alice, &new_build("q1")).await.unwrap();
        assert_eq!(
            store.cancel_build(&alice, "q1").await.unwrap(),
            CancelOutcome::Cancelled
        );
        assert!(store.claim_build("w").await.unwrap().is_none());
        assert_eq!(store.active_builds(&alice).await.unwrap(), 0);
    }

    #[test]
    fn statuses_parse_with_a_helpful_error() {
        assert_eq!(
            "failed".parse::<BuildStatus>().unwrap(),
            BuildStatus::Failed
        );
        let err = "done".parse::<BuildStatus>().unwrap_err();
        assert!(err.contains("queued, running"), "{err}");
    }
}
