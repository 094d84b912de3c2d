//! Test runs, stored as jobs: what owners see, and the queue the test worker
//! takes from. The checks and the report are JSON the store does not read.

use sqlx::Row;

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

const COLUMNS: &str = "id, owner_id, build_id, status, stage, progress, message, checks_json, memory_mb, vcpus, timeout_seconds, stop_requested, vm_id, created_at, started_at, finished_at, passed, total, report_json";

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<TestRunRecord, StoreError> {
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
        sqlx::query(
            "INSERT INTO test_runs (id, owner_id, build_id, status, message, checks_json, memory_mb, vcpus, timeout_seconds, created_at)
             VALUES ($1, $2, $3, 'queued', 'waiting for a test VM slot', $4, $5, $6, $7, $8)",
        )
        .bind(run.id)
        .bind(owner.as_str())
        .bind(run.build_id)
        .bind(run.checks_json)
        .bind(i64::from(run.memory_mb))
        .bind(i64::from(run.vcpus))
        .bind(i64::from(run.timeout_seconds))
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.test_run(owner, run.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a test run vanished after insert".into()))
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
             ORDER BY created_at DESC, rowid DESC LIMIT $3"
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

    /// Take the oldest queued run for `worker`, marking it running with the
    /// id its VM will have (recorded before the VM exists, so that a host that
    /// dies while creating it still knows what to remove).
    pub async fn claim_test_run(
        &self,
        worker: &str,
        vm_id: &str,
    ) -> Result<Option<TestRunRecord>, StoreError> {
        let sql = format!(
            "UPDATE test_runs SET status = 'running', worker = $1, vm_id = $2, started_at = $3,
                    stage = 'boot', progress = 0, message = 'starting the test VM'
             WHERE id = (SELECT id FROM test_runs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1)
               AND status = 'queued'
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(vm_id)
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Record a running run's progress (and its report so far); returns
    /// whether a stop was asked.
    pub async fn test_run_progress(
        &self,
        id: &str,
        stage: &str,
        progress: u8,
        message: &str,
        report_json: Option<&str>,
    ) -> Result<bool, StoreError> {
        let stop: Option<i64> = sqlx::query_scalar(
            "UPDATE test_runs SET stage = $2, progress = $3, message = $4, report_json = COALESCE($5, report_json)
             WHERE id = $1 AND status = 'running' RETURNING stop_requested",
        )
        .bind(id)
        .bind(stage)
        .bind(i64::from(progress.min(100)))
        .bind(crate::truncate_chars(message, 500))
        .bind(report_json)
        .fetch_optional(&self.pool)
        .await?;
        Ok(stop.unwrap_or(0) != 0)
    }

    pub async fn finish_test_run(&self, id: &str, end: TestRunEnd<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE test_runs SET status = $2, stage = 'done', progress = 100, message = $3, passed = $4,
                    total = $5, report_json = $6, finished_at = $7
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(end.status.as_str())
        .bind(crate::truncate_chars(end.message, 1000))
        .bind(i64::from(end.passed))
        .bind(i64::from(end.total))
        .bind(end.report_json)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
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

    /// At start-up: runs this host was running when it stopped end in error;
    /// the ids of their VMs, to remove.
    pub async fn fail_interrupted_test_runs(
        &self,
        worker: &str,
    ) -> Result<Vec<String>, StoreError> {
        let vms: Vec<Option<String>> = sqlx::query_scalar(
            "UPDATE test_runs SET status = 'error', finished_at = $2,
                    message = 'interrupted: the OpenFactory host stopped during the run; start a new one with run_tests'
             WHERE status = 'running' AND worker = $1 RETURNING vm_id",
        )
        .bind(worker)
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        Ok(vms.into_iter().flatten().collect())
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
        }
    }

    #[tokio::test]
    async fn runs_queue_claim_stop_and_finish() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let alice = OwnerId::parse("ip:10.0.0.1").unwrap();
        let bob = OwnerId::parse("ip:10.0.0.2").unwrap();
        store.create_test_run(&alice, &run("t1")).await.unwrap();
        store.create_test_run(&alice, &run("t2")).await.unwrap();
        assert_eq!(store.active_test_runs(&alice).await.unwrap(), 2);
        assert!(store.test_run(&bob, "t1").await.unwrap().is_none());
        assert_eq!(
            store.stop_test_run(&bob, "t1").await.unwrap(),
            StopRequest::NotFound
        );

        let claimed = store.claim_test_run("w", "ab12").await.unwrap().unwrap();
        assert_eq!(claimed.id, "t1");
        assert_eq!(claimed.vm_id.as_deref(), Some("ab12"));
        assert_eq!(
            store.stop_test_run(&alice, "t2").await.unwrap(),
            StopRequest::Stopped
        );
        assert!(store.claim_test_run("w", "cd34").await.unwrap().is_none());
        assert!(
            !store
                .test_run_progress("t1", "checks", 50, "2 of 4", Some("{}"))
                .await
                .unwrap()
        );
        assert_eq!(
            store.stop_test_run(&alice, "t1").await.unwrap(),
            StopRequest::Requested
        );
        assert!(
            store
                .test_run_progress("t1", "checks", 60, "3 of 4", None)
                .await
                .unwrap()
        );
        store
            .finish_test_run(
                "t1",
                TestRunEnd {
                    status: TestRunStatus::Stopped,
                    message: "stopped",
                    passed: 2,
                    total: 4,
                    report_json: "{\"checks\": []}",
                },
            )
            .await
            .unwrap();
        let done = store.test_run(&alice, "t1").await.unwrap().unwrap();
        assert_eq!(done.status, TestRunStatus::Stopped);
        assert_eq!((done.passed, done.total), (Some(2), Some(4)));
        assert_eq!(
            store.stop_test_run(&alice, "t1").await.unwrap(),
            StopRequest::AlreadyFinished(TestRunStatus::Stopped)
        );
        let listed = store.test_runs(&alice, Some("b1"), 10).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(store.test_runs(&bob, None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn interrupted_runs_end_in_error_and_name_their_vms() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let alice = OwnerId::parse("ip:10.0.0.1").unwrap();
        store.create_test_run(&alice, &run("t1")).await.unwrap();
        store.claim_test_run("w", "ab12").await.unwrap().unwrap();
        assert_eq!(
            store.fail_interrupted_test_runs("w").await.unwrap(),
            ["ab12"]
        );
        let run = store.test_run(&alice, "t1").await.unwrap().unwrap();
        assert_eq!(run.status, TestRunStatus::Error);
        assert!(run.message.contains("interrupted"));
    }
}
