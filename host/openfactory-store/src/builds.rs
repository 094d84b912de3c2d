//! Builds, stored as jobs: what owners see, and the queue workers take from.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::queue::{Claimer, HELD, JobKind, Lease, Needs, lease_held};
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
    pub needs: Needs<'a>,
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
    /// Which claim by a worker this is (0 while first queued): a job whose
    /// worker was lost is requeued, a bounded number of times.
    pub attempt: u32,
    /// Why an earlier attempt ended before the job did.
    pub requeued_because: Option<String>,
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

const COLUMNS: &str = "id, owner_id, recipe_digest, recipe_name, recipe_json, plan_json, features_json, status, stage, progress, message, error, failed_step, cancel_requested, retry_of, created_at, started_at, finished_at, iso_sha256, iso_size_bytes, result_json, attempts, requeued_because";

fn record(row: &AnyRow) -> Result<BuildRecord, StoreError> {
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
        attempt: row
            .try_get::<i64, _>("attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        requeued_because: row.try_get("requeued_because")?,
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
        // The record as inserted (RETURNING), not as re-read: a worker woken
        // by the insert may already have claimed it.
        let sql = format!(
            "INSERT INTO builds (id, owner_id, recipe_digest, recipe_name, recipe_json, plan_json, features_json, status, retry_of, created_at, arch, disk_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(build.id)
            .bind(owner.as_str())
            .bind(build.recipe_digest)
            .bind(build.recipe_name)
            .bind(build.recipe_json)
            .bind(build.plan_json)
            .bind(&features)
            .bind(build.retry_of)
            .bind(now())
            .bind(build.needs.arch)
            .bind(i64::try_from(build.needs.disk_bytes).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await?;
        let created = record(&row)?;
        self.jobs_changed().await;
        Ok(created)
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
             ORDER BY created_at DESC, seq DESC LIMIT $3"
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
        // SUM of a BIGINT is a NUMERIC on PostgreSQL: cast it back.
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(iso_size_bytes), 0) AS BIGINT) FROM builds
             WHERE owner_id = $1 AND status = 'completed'",
        )
        .bind(owner.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
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
    pub async fn claim_build(
        &self,
        claimer: &Claimer<'_>,
    ) -> Result<Option<(Lease, BuildRecord)>, StoreError> {
        match self.claim_job(JobKind::Build, claimer, COLUMNS).await? {
            Some((lease, row)) => Ok(Some((lease, record(&row)?))),
            None => Ok(None),
        }
    }

    /// Finish a running build, through its lease.
    pub async fn finish_build(&self, lease: &Lease, end: BuildEnd<'_>) -> Result<(), StoreError> {
        let t = now();
        let hash = lease.token.hash();
        let id = lease.id.as_str();
        let done = match end {
            BuildEnd::Completed {
                iso_sha256,
                iso_size_bytes,
                result_json,
            } => {
                sqlx::query(&format!(
                    "UPDATE builds SET status = 'completed', stage = 'finish', progress = 100, message = 'done',
                            finished_at = $3, iso_sha256 = $4, iso_size_bytes = $5, result_json = $6,
                            lease_token_hash = NULL
                     WHERE {HELD}",
                ))
                .bind(id)
                .bind(&hash)
                .bind(t)
                .bind(iso_sha256)
                .bind(iso_size_bytes as i64)
                .bind(result_json)
                .execute(&self.pool)
                .await?
            }
            BuildEnd::Failed { error, failed_step } => {
                sqlx::query(&format!(
                    "UPDATE builds SET status = 'failed', finished_at = $3, error = $4, failed_step = $5,
                            lease_token_hash = NULL
                     WHERE {HELD}",
                ))
                .bind(id)
                .bind(&hash)
                .bind(t)
                .bind(crate::truncate_chars(error, 4000))
                .bind(failed_step)
                .execute(&self.pool)
                .await?
            }
            BuildEnd::Cancelled => {
                sqlx::query(&format!(
                    "UPDATE builds SET status = 'cancelled', finished_at = $3, message = 'cancelled',
                            lease_token_hash = NULL
                     WHERE {HELD}",
                ))
                .bind(id)
                .bind(&hash)
                .bind(t)
                .execute(&self.pool)
                .await?
            }
        };
        lease_held(lease, done.rows_affected())
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn new_build(id: &str) -> NewBuild<'_> {
        NewBuild {
            id,
            recipe_digest: "r1",
            recipe_name: "web",
            recipe_json: "{}",
            plan_json: "{}",
            features: &[],
            retry_of: None,
            needs: Needs {
                arch: "amd64",
                disk_bytes: 1 << 30,
            },
        }
    }

    #[tokio::test]
    async fn the_queue_runs_oldest_first_and_owners_see_only_theirs() {
        for (engine, store) in crate::test_databases::each().await {
            let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
            let bob = OwnerId::ip("192.0.2.2".parse().unwrap());
            store.create_build(&alice, &new_build("a1")).await.unwrap();
            store.create_build(&bob, &new_build("b1")).await.unwrap();
            assert!(store.build(&bob, "a1").await.unwrap().is_none());
            assert_eq!(store.builds(&alice, None, 10).await.unwrap().len(), 1);

            let (first, build) = store
                .claim_build(&crate::queue::any_claimer("w"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (build.id.as_str(), build.status),
                ("a1", BuildStatus::Running),
                "{engine}"
            );
            let (second, _) = store
                .claim_build(&crate::queue::any_claimer("w"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(second.id, "b1", "{engine}");
            assert!(
                store
                    .claim_build(&crate::queue::any_claimer("w"))
                    .await
                    .unwrap()
                    .is_none()
            );

            let signal = store
                .job_progress(&first, "apply", 50, "step 3/9")
                .await
                .unwrap();
            assert!(!signal.cancel);
            assert_eq!(
                store.cancel_build(&bob, "a1").await.unwrap(),
                CancelOutcome::NotFound
            );
            assert_eq!(
                store.cancel_build(&alice, "a1").await.unwrap(),
                CancelOutcome::Requested
            );
            assert!(
                store
                    .job_progress(&first, "apply", 60, "x")
                    .await
                    .unwrap()
                    .cancel
            );
            store
                .finish_build(&first, BuildEnd::Cancelled)
                .await
                .unwrap();
            assert_eq!(
                store.cancel_build(&alice, "a1").await.unwrap(),
                CancelOutcome::AlreadyFinished(BuildStatus::Cancelled)
            );
            // Once finished, the lease finishes nothing else.
            assert!(matches!(
                store.finish_build(&first, BuildEnd::Cancelled).await,
                Err(StoreError::LeaseLost { .. })
            ));

            let end = BuildEnd::Completed {
                iso_sha256: "ab",
                iso_size_bytes: 5_000_000_000,
                result_json: "{}",
            };
            store.finish_build(&second, end).await.unwrap();
            let b1 = store.build(&bob, "b1").await.unwrap().unwrap();
            assert_eq!(b1.status, BuildStatus::Completed);
            // Sizes past 32 bits survive, and sums come back as integers.
            assert_eq!(b1.iso_size_bytes, Some(5_000_000_000), "{engine}");
            assert_eq!(store.owner_disk_bytes(&bob).await.unwrap(), 5_000_000_000);
            assert_eq!(store.owner_disk_bytes(&alice).await.unwrap(), 0);
            assert_eq!(
                store
                    .builds(&bob, Some(BuildStatus::Failed), 10)
                    .await
                    .unwrap()
                    .len(),
                0
            );
        }
    }

    #[tokio::test]
    async fn queued_builds_cancel_at_once() {
        for (engine, store) in crate::test_databases::each().await {
            let alice = OwnerId::local();
            store.create_build(&alice, &new_build("q1")).await.unwrap();
            assert_eq!(
                store.cancel_build(&alice, "q1").await.unwrap(),
                CancelOutcome::Cancelled,
                "{engine}"
            );
            assert!(
                store
                    .claim_build(&crate::queue::any_claimer("w"))
                    .await
                    .unwrap()
                    .is_none()
            );
            assert_eq!(store.active_builds(&alice).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn listings_are_newest_first_even_within_one_second() {
        for (engine, store) in crate::test_databases::each().await {
            let alice = OwnerId::local();
            for id in ["b1", "b2", "b3", "b4"] {
                store.create_build(&alice, &new_build(id)).await.unwrap();
            }
            let ids: Vec<String> = store
                .builds(&alice, None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|b| b.id)
                .collect();
            assert_eq!(ids, ["b4", "b3", "b2", "b1"], "{engine}");
            let (_, first) = store
                .claim_build(&crate::queue::any_claimer("w"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(first.id, "b1", "{engine}: the queue is first in, first out");
        }
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
