//! Test runs, stored as jobs: what owners see, and the queue the test worker
//! takes from. The checks and the report are JSON the store does not read.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::queue::{Claimer, HELD, JobKind, Lease, Needs, lease_held};
use crate::{OwnerId, Store, StoreError, now, rfc3339};

status_enum!(TestRunStatus, "test run status", {
    Queued = "queued",
    Running = "running",
    /// Every check passed.
    Passed = "passed",
    /// At least one check did not pass.
    Failed = "failed",
    /// The run itself could not proceed (the VM did not start or boot).
    Error = "error",
    /// stop_test_run.
    Stopped = "stopped",
    /// The run's whole time budget ran out.
    TimedOut = "timed_out",
});

impl TestRunStatus {
    pub fn is_active(self) -> bool {
        matches!(self, TestRunStatus::Queued | TestRunStatus::Running)
    }
}

/// A new test run, as `run_tests` makes it.
pub struct NewTestRun<'a> {
    pub id: &'a str,
    pub build_id: &'a str,
    pub checks_json: &'a str,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub timeout_seconds: u32,
    pub needs: Needs<'a>,
}

#[derive(Debug, Clone)]
pub struct TestRunRecord {
    pub id: String,
    pub owner: OwnerId,
    pub build_id: String,
    pub status: TestRunStatus,
    pub stage: Option<String>,
    pub progress: u8,
    pub message: String,
    pub checks_json: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub timeout_seconds: u32,
    pub stop_requested: bool,
    pub vm_id: Option<String>,
    /// Which claim by a worker this is (0 while first queued): a job whose
    /// worker was lost is requeued, a bounded number of times.
    pub attempt: u32,
    /// Why an earlier attempt ended before the job did.
    pub requeued_because: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub started_unix: Option<i64>,
    pub finished_unix: Option<i64>,
    pub passed: Option<u32>,
    pub total: Option<u32>,
    pub report_json: Option<String>,
}

/// What a stop request did.
#[derive(Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// It was queued: stopped now.
    Stopped,
    /// It is running: its worker will stop it and remove its VM.
    Requested,
    AlreadyFinished(TestRunStatus),
    NotFound,
}

const COLUMNS: &str = "id, owner_id, build_id, status, stage, progress, message, checks_json, memory_mb, vcpus, timeout_seconds, stop_requested, vm_id, created_at, started_at, finished_at, passed, total, report_json, attempts, requeued_because";

fn record(row: &AnyRow) -> Result<TestRunRecord, StoreError> {
    let status: String = row.try_get("status")?;
    let started: Option<i64> = row.try_get("started_at")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    let count = |name: &str| -> Result<Option<u32>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)?
            .map(|n| n.max(0) as u32))
    };
    Ok(TestRunRecord {
        id: row.try_get("id")?,
        owner: OwnerId(row.try_get("owner_id")?),
        build_id: row.try_get("build_id")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        stage: row.try_get("stage")?,
        progress: row.try_get::<i64, _>("progress")?.clamp(0, 100) as u8,
        message: row.try_get("message")?,
        checks_json: row.try_get("checks_json")?,
        memory_mb: row.try_get::<i64, _>("memory_mb")?.max(0) as u32,
        vcpus: row.try_get::<i64, _>("vcpus")?.max(0) as u32,
        timeout_seconds: row.try_get::<i64, _>("timeout_seconds")?.max(0) as u32,
        stop_requested: row.try_get::<i64, _>("stop_requested")? != 0,
        vm_id: row.try_get("vm_id")?,
        attempt: row
            .try_get::<i64, _>("attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        requeued_because: row.try_get("requeued_because")?,
        created_at: rfc3339(row.try_get("created_at")?),
        started_at: started.map(rfc3339),
        finished_at: finished.map(rfc3339),
        started_unix: started,
        finished_unix: finished,
        passed: count("passed")?,
        total: count("total")?,
        report_json: row.try_get("report_json")?,
    })
}

/// How a run ended, for [`Store::finish_test_run`].
pub struct TestRunEnd<'a> {
    pub status: TestRunStatus,
    pub message: &'a str,
    pub passed: u32,
    pub total: u32,
    pub report_json: &'a str,
}

impl Store {
    pub async fn create_test_run(
        &self,
        owner: &OwnerId,
        run: &NewTestRun<'_>,
    ) -> Result<TestRunRecord, StoreError> {
        self.touch_owner(owner).await?;
        // The record as inserted (RETURNING), not as re-read: a worker woken
        // by the insert may already have claimed it.
        let sql = format!(
            "INSERT INTO test_runs (id, owner_id, build_id, status, message, checks_json, memory_mb, vcpus, timeout_seconds, created_at, arch, disk_bytes)
             VALUES ($1, $2, $3, 'queued', 'waiting for a test VM slot', $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(run.id)
            .bind(owner.as_str())
            .bind(run.build_id)
            .bind(run.checks_json)
            .bind(i64::from(run.memory_mb))
            .bind(i64::from(run.vcpus))
            .bind(i64::from(run.timeout_seconds))
            .bind(now())
            .bind(run.needs.arch)
            .bind(i64::try_from(run.needs.disk_bytes).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await?;
        let created = record(&row)?;
        self.jobs_changed().await;
        Ok(created)
    }

    /// One of the owner's runs; `None` when it is not theirs or not there.
    pub async fn test_run(
        &self,
        owner: &OwnerId,
        id: &str,
    ) -> Result<Option<TestRunRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM test_runs WHERE owner_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// The owner's runs (of one build, or all), newest first.
    pub async fn test_runs(
        &self,
        owner: &OwnerId,
        build_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TestRunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM test_runs WHERE owner_id = $1 AND ($2 IS NULL OR build_id = $2)
             ORDER BY created_at DESC, seq DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(build_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// Number of the owner's queued or running test runs.
    pub async fn active_test_runs(&self, owner: &OwnerId) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM test_runs WHERE owner_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(owner.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u32)
    }

    /// Take the oldest queued run for `worker`, marking it running.
    pub async fn claim_test_run(
        &self,
        claimer: &Claimer<'_>,
    ) -> Result<Option<(Lease, TestRunRecord)>, StoreError> {
        match self.claim_job(JobKind::TestRun, claimer, COLUMNS).await? {
            Some((lease, row)) => Ok(Some((lease, record(&row)?))),
            None => Ok(None),
        }
    }

    /// Record the id the run's VM will have, before the VM exists, so that
    /// whoever cleans up after a lost worker knows what to remove.
    pub async fn set_test_run_vm(&self, lease: &Lease, vm_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(&format!("UPDATE test_runs SET vm_id = $3 WHERE {HELD}"))
            .bind(&lease.id)
            .bind(lease.token.hash())
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        lease_held(lease, done.rows_affected())
    }

    /// The build a leased run tests.
    pub async fn leased_test_run_build(&self, lease: &Lease) -> Result<String, StoreError> {
        let build: Option<String> =
            sqlx::query_scalar(&format!("SELECT build_id FROM test_runs WHERE {HELD}"))
                .bind(&lease.id)
                .bind(lease.token.hash())
                .fetch_optional(&self.pool)
                .await?;
        build.ok_or_else(|| StoreError::LeaseLost {
            kind: lease.kind,
            id: lease.id.clone(),
        })
    }

    /// Record the report so far of a leased run.
    pub async fn test_run_report(
        &self,
        lease: &Lease,
        report_json: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE test_runs SET report_json = $3 WHERE {HELD}"
        ))
        .bind(&lease.id)
        .bind(lease.token.hash())
        .bind(report_json)
        .execute(&self.pool)
        .await?;
        lease_held(lease, done.rows_affected())
    }

    /// Finish a leased run.
    pub async fn finish_test_run(
        &self,
        lease: &Lease,
        end: TestRunEnd<'_>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE test_runs SET status = $3, stage = 'done', progress = 100, message = $4, passed = $5,
                    total = $6, report_json = $7, finished_at = $8, lease_token_hash = NULL
             WHERE {HELD}"
        ))
        .bind(&lease.id)
        .bind(lease.token.hash())
        .bind(end.status.as_str())
        .bind(crate::truncate_chars(end.message, 1000))
        .bind(i64::from(end.passed))
        .bind(i64::from(end.total))
        .bind(end.report_json)
        .bind(now())
        .execute(&self.pool)
        .await?;
        lease_held(lease, done.rows_affected())
    }

    /// Ask for one of the owner's runs to stop.
    pub async fn stop_test_run(
        &self,
        owner: &OwnerId,
        id: &str,
    ) -> Result<StopRequest, StoreError> {
        let queued = sqlx::query(
            "UPDATE test_runs SET status = 'stopped', finished_at = $3, message = 'stopped before it started'
             WHERE owner_id = $1 AND id = $2 AND status = 'queued'",
        )
        .bind(owner.as_str())
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if queued.rows_affected() == 1 {
            return Ok(StopRequest::Stopped);
        }
        let running = sqlx::query(
            "UPDATE test_runs SET stop_requested = 1, message = 'stopping'
             WHERE owner_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(owner.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if running.rows_affected() == 1 {
            return Ok(StopRequest::Requested);
        }
        Ok(match self.test_run(owner, id).await? {
            Some(run) => StopRequest::AlreadyFinished(run.status),
            None => StopRequest::NotFound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str) -> NewTestRun<'_> {
        NewTestRun {
            id,
            build_id: "b1",
            checks_json: "[]",
            memory_mb: 1024,
            vcpus: 1,
            timeout_seconds: 600,
            needs: Needs {
                arch: "amd64",
                disk_bytes: 1 << 30,
            },
        }
    }

    #[tokio::test]
    async fn runs_queue_claim_stop_and_finish() {
        for (engine, store) in crate::test_databases::each().await {
            let alice = OwnerId::parse("ip:10.0.0.1").unwrap();
            let bob = OwnerId::parse("ip:10.0.0.2").unwrap();
            store.create_test_run(&alice, &run("t1")).await.unwrap();
            store.create_test_run(&alice, &run("t2")).await.unwrap();
            assert_eq!(store.active_test_runs(&alice).await.unwrap(), 2, "{engine}");
            assert!(store.test_run(&bob, "t1").await.unwrap().is_none());
            assert_eq!(
                store.stop_test_run(&bob, "t1").await.unwrap(),
                StopRequest::NotFound
            );

            let (lease, claimed) = store
                .claim_test_run(&crate::queue::any_claimer("w"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((claimed.id.as_str(), lease.attempt), ("t1", 1), "{engine}");
            store.set_test_run_vm(&lease, "ab12").await.unwrap();
            assert_eq!(
                store
                    .test_run(&alice, "t1")
                    .await
                    .unwrap()
                    .unwrap()
                    .vm_id
                    .as_deref(),
                Some("ab12")
            );
            assert_eq!(
                store.stop_test_run(&alice, "t2").await.unwrap(),
                StopRequest::Stopped
            );
            assert!(
                store
                    .claim_test_run(&crate::queue::any_claimer("w"))
                    .await
                    .unwrap()
                    .is_none()
            );
            let signal = store
                .job_progress(&lease, "checks", 50, "2 of 4")
                .await
                .unwrap();
            assert!(!signal.cancel);
            store.test_run_report(&lease, "{}").await.unwrap();
            assert_eq!(
                store.stop_test_run(&alice, "t1").await.unwrap(),
                StopRequest::Requested
            );
            assert!(store.heartbeat(&lease).await.unwrap().cancel, "{engine}");
            let end = TestRunEnd {
                status: TestRunStatus::Stopped,
                message: "stopped",
                passed: 2,
                total: 4,
                report_json: "{\"checks\": []}",
            };
            store.finish_test_run(&lease, end).await.unwrap();
            let done = store.test_run(&alice, "t1").await.unwrap().unwrap();
            assert_eq!(done.status, TestRunStatus::Stopped);
            assert_eq!((done.passed, done.total), (Some(2), Some(4)));
            assert_eq!(
                store.stop_test_run(&alice, "t1").await.unwrap(),
                StopRequest::AlreadyFinished(TestRunStatus::Stopped)
            );
            // A finished run's lease reports nothing more.
            assert!(matches!(
                store.heartbeat(&lease).await,
                Err(StoreError::LeaseLost { .. })
            ));
            let listed = store.test_runs(&alice, Some("b1"), 10).await.unwrap();
            assert_eq!(
                listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
                ["t2", "t1"],
                "{engine}: newest first, by insertion where the second ties"
            );
            assert!(store.test_runs(&bob, None, 10).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_lost_workers_run_is_requeued_and_names_its_vm() {
        for (engine, store) in crate::test_databases::each().await {
            let alice = OwnerId::parse("ip:10.0.0.1").unwrap();
            store.create_test_run(&alice, &run("t1")).await.unwrap();
            let (lease, _) = store
                .claim_test_run(&crate::queue::any_claimer("w"))
                .await
                .unwrap()
                .unwrap();
            store.set_test_run_vm(&lease, "ab12").await.unwrap();
            let gone = store
                .requeue_worker("w", crate::LeaseSettings::default(), "the host restarted")
                .await
                .unwrap();
            assert_eq!(gone.len(), 1, "{engine}");
            assert_eq!(gone[0].vm_id.as_deref(), Some("ab12"));
            assert_eq!(gone[0].outcome, crate::queue::Requeue::Queued);
            let run = store.test_run(&alice, "t1").await.unwrap().unwrap();
            assert_eq!(run.status, TestRunStatus::Queued, "{engine}");
            assert!(
                run.message.contains("the host restarted"),
                "{}",
                run.message
            );
        }
    }
}
