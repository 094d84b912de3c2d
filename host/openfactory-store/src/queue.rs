//! One job queue for builds and test runs: a worker claims the oldest queued
//! job and gets a **lease** (its worker id, a job token, a heartbeat); every
//! later report (progress, heartbeat, finish, hand-back) carries the token and
//! is refused once the lease is gone. A job whose heartbeat is older than a
//! bound is requeued, at most [`LeaseSettings::max_attempts`] claims in all,
//! then ends saying that its worker was lost.
//!
//! Owners never see leases: they cancel by id (a flag the worker's next
//! heartbeat returns), and read the job's record.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Engine, Store, StoreError, now};

/// What a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Build,
    TestRun,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Build, JobKind::TestRun];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Build => "build",
            JobKind::TestRun => "test_run",
        }
    }

    fn table(self) -> &'static str {
        match self {
            JobKind::Build => "builds",
            JobKind::TestRun => "test_runs",
        }
    }

    /// The flag an owner sets to stop a running job.
    fn cancel_column(self) -> &'static str {
        match self {
            JobKind::Build => "cancel_requested",
            JobKind::TestRun => "stop_requested",
        }
    }

    /// The status of a job stopped at its owner's request.
    fn cancelled(self) -> &'static str {
        match self {
            JobKind::Build => "cancelled",
            JobKind::TestRun => "stopped",
        }
    }

    /// The status, and the column that says why, of a job whose workers
    /// were all lost.
    fn lost(self) -> (&'static str, &'static str) {
        match self {
            JobKind::Build => ("failed", "error"),
            JobKind::TestRun => ("error", "message"),
        }
    }

    /// Stage and message of a job just claimed.
    fn first_stage(self) -> (&'static str, &'static str) {
        match self {
            JobKind::Build => ("bootstrap", "starting"),
            JobKind::TestRun => ("boot", "starting the test VM"),
        }
    }

    /// The id of the job's VM, where it has one.
    fn vm_column(self) -> &'static str {
        match self {
            JobKind::Build => "CAST(NULL AS TEXT)",
            JobKind::TestRun => "vm_id",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobKind::Build => "build",
            JobKind::TestRun => "test run",
        })
    }
}

/// The secret a lease is held by: 256 random bits, shown to the claimer once
/// and stored only as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct JobToken(String);

impl JobToken {
    fn new() -> JobToken {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS has randomness");
        JobToken(hex::encode(bytes))
    }

    /// A token as a worker sends it back; `None` unless it has the shape
    /// of one (64 lowercase hex digits).
    pub fn parse(text: &str) -> Option<JobToken> {
        (text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| JobToken(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for JobToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobToken(…)")
    }
}

/// A claimed job, held by one worker.
#[derive(Debug, Clone)]
pub struct Lease {
    pub kind: JobKind,
    pub id: String,
    pub token: JobToken,
    pub worker: String,
    /// Which claim of the job this is: 1 for the first.
    pub attempt: u32,
    /// Why the job was requeued before this claim, if it was.
    pub requeued_because: Option<String>,
}

/// How long a lease lasts without a heartbeat, and how often a job may be
/// claimed before it ends as lost.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub heartbeat_timeout: Duration,
    pub max_attempts: u32,
}

impl Default for LeaseSettings {
    /// osbuild-composer's figures: two minutes, and two retries.
    fn default() -> Self {
        LeaseSettings {
            heartbeat_timeout: Duration::from_secs(120),
            max_attempts: 3,
        }
    }
}

/// What a job needs of the worker that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs<'a> {
    /// Debian's name for the CPU architecture: `amd64`.
    pub arch: &'a str,
    /// Scratch disk the job may use.
    pub disk_bytes: u64,
}

/// Who asks for a job, and what it can run.
#[derive(Debug, Clone, Copy)]
pub struct Claimer<'a> {
    /// Recorded in the job's `worker` column.
    pub worker: &'a str,
    pub arch: &'a str,
    pub free_disk_bytes: u64,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The owner asked for the job to stop.
    pub cancel: bool,
}

/// What happened to a job whose worker went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeued {
    pub kind: JobKind,
    pub id: String,
    /// The job's VM, which whoever can should remove.
    pub vm_id: Option<String>,
    pub outcome: Requeue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Back in the queue, for its next attempt.
    Queued,
    /// Its attempts are used up: it ended as lost.
    Lost,
    /// Its owner had asked it to stop: it stopped.
    Cancelled,
}

/// Which running jobs lost their worker.
enum Gone<'a> {
    /// No heartbeat since this Unix second.
    SilentSince(i64),
    /// This worker is known to be gone (restarted, revoked).
    Worker(&'a str),
}

impl Store {
    /// Take the oldest queued job of `kind` for `worker`: the lease and the
    /// job's row (`columns` of it, which name `attempts` and
    /// `requeued_because`) to decode.
    pub(crate) async fn claim_job(
        &self,
        kind: JobKind,
        claimer: &Claimer<'_>,
        columns: &str,
    ) -> Result<Option<(Lease, AnyRow)>, StoreError> {
        let worker = claimer.worker;
        let token = JobToken::new();
        let (stage, message) = kind.first_stage();
        let table = kind.table();
        let sql = format!(
            "UPDATE {table} SET status = 'running', worker = $1, lease_token_hash = $2, heartbeat_at = $3,
                    started_at = $3, attempts = attempts + 1, stage = $4, progress = 0, message = $5
             WHERE id = (SELECT id FROM {table} WHERE status = 'queued' AND arch = $6 AND disk_bytes <= $7
                         ORDER BY seq LIMIT 1{lock})
               AND status = 'queued'
             RETURNING {columns}",
            lock = self.engine.skip_locked(),
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(token.hash())
            .bind(now())
            .bind(stage)
            .bind(message)
            .bind(claimer.arch)
            .bind(i64::try_from(claimer.free_disk_bytes).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let lease = Lease {
            kind,
            id: row.try_get("id")?,
            token,
            worker: worker.to_owned(),
            attempt: row
                .try_get::<i64, _>("attempts")?
                .clamp(1, i64::from(u32::MAX)) as u32,
            requeued_because: row.try_get("requeued_because")?,
        };
        Ok(Some((lease, row)))
    }

    /// The lease is alive; whether its job should stop.
    pub async fn heartbeat(&self, lease: &Lease) -> Result<Signal, StoreError> {
        let sql = format!(
            "UPDATE {table} SET heartbeat_at = $3
             WHERE id = $1 AND lease_token_hash = $2 AND status = 'running' RETURNING {cancel}",
            table = lease.kind.table(),
            cancel = lease.kind.cancel_column(),
        );
        let cancel: Option<i64> = sqlx::query_scalar(&sql)
            .bind(&lease.id)
            .bind(lease.token.hash())
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        signal(lease, cancel)
    }

    /// Record a leased job's progress (which is a heartbeat too).
    pub async fn job_progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
    ) -> Result<Signal, StoreError> {
        let sql = format!(
            "UPDATE {table} SET stage = $3, progress = $4, message = $5, heartbeat_at = $6
             WHERE id = $1 AND lease_token_hash = $2 AND status = 'running' RETURNING {cancel}",
            table = lease.kind.table(),
            cancel = lease.kind.cancel_column(),
        );
        let cancel: Option<i64> = sqlx::query_scalar(&sql)
            .bind(&lease.id)
            .bind(lease.token.hash())
            .bind(crate::truncate_chars(stage, 40))
            .bind(i64::from(percent.min(100)))
            .bind(crate::truncate_chars(message, 500))
            .bind(now())
            .fetch_optional(&self.pool)
            .await?;
        signal(lease, cancel)
    }

    /// Hand a job back unfinished (its worker is shutting down): queued again
    /// without counting the attempt, or stopped if its owner asked for that.
    pub async fn release(&self, lease: &Lease, reason: &str) -> Result<(), StoreError> {
        let table = lease.kind.table();
        let cancel = lease.kind.cancel_column();
        let cancelled = lease.kind.cancelled();
        let sql = format!(
            "UPDATE {table} SET
                 status = CASE WHEN {cancel} = 1 THEN '{cancelled}' ELSE 'queued' END,
                 finished_at = CASE WHEN {cancel} = 1 THEN $3 ELSE NULL END,
                 attempts = CASE WHEN {cancel} = 1 THEN attempts ELSE attempts - 1 END,
                 worker = NULL, lease_token_hash = NULL, heartbeat_at = NULL, stage = NULL,
                 progress = 0, message = $4
             WHERE id = $1 AND lease_token_hash = $2 AND status = 'running'"
        );
        let done = sqlx::query(&sql)
            .bind(&lease.id)
            .bind(lease.token.hash())
            .bind(now())
            .bind(crate::truncate_chars(reason, 500))
            .execute(&self.pool)
            .await?;
        self.jobs_changed().await;
        lease_held(lease, done.rows_affected())
    }

    /// Requeue (or end) every running job whose heartbeat is older than the
    /// bound. Every control plane calls this now and then; each job is
    /// handled once whoever calls.
    pub async fn requeue_silent(
        &self,
        settings: LeaseSettings,
    ) -> Result<Vec<Requeued>, StoreError> {
        let cutoff = now() - settings.heartbeat_timeout.as_secs() as i64;
        let why = format!(
            "its worker sent no heartbeat for {} s",
            settings.heartbeat_timeout.as_secs()
        );
        self.requeue(Gone::SilentSince(cutoff), settings, &why)
            .await
    }

    /// Requeue (or end) every running job of a worker known to be gone: a
    /// restarted host's own worker, or one whose token was revoked.
    pub async fn requeue_worker(
        &self,
        worker: &str,
        settings: LeaseSettings,
        why: &str,
    ) -> Result<Vec<Requeued>, StoreError> {
        self.requeue(Gone::Worker(worker), settings, why).await
    }

    async fn requeue(
        &self,
        gone: Gone<'_>,
        settings: LeaseSettings,
        why: &str,
    ) -> Result<Vec<Requeued>, StoreError> {
        let condition = match gone {
            Gone::SilentSince(_) => "heartbeat_at < $1",
            Gone::Worker(_) => "worker = $1",
        };
        let t = now();
        let why = crate::truncate_chars(why, 300);
        let max = i64::from(settings.max_attempts.max(1));
        let mut out = Vec::new();
        for kind in JobKind::ALL {
            let table = kind.table();
            let cancel = kind.cancel_column();
            let vm = kind.vm_column();
            let (lost, lost_column) = kind.lost();
            // $1 says which jobs, $2 is now, $3 why, $4 the most attempts.
            let statements = [
                (
                    Requeue::Cancelled,
                    format!(
                        "UPDATE {table} SET status = '{cancelled}', finished_at = $2, lease_token_hash = NULL,
                                message = 'stopped: ' || $3
                         WHERE status = 'running' AND {condition} AND {cancel} = 1 AND $4 > 0
                         RETURNING id, {vm} AS vm_id",
                        cancelled = kind.cancelled(),
                    ),
                ),
                (
                    Requeue::Queued,
                    format!(
                        "UPDATE {table} SET status = 'queued', lease_token_hash = NULL, heartbeat_at = $2,
                                stage = NULL, progress = 0, message = 'requeued: ' || $3,
                                requeued_because = 'attempt ' || CAST(attempts AS TEXT) || ' of '
                                    || CAST($4 AS TEXT) || ' ended: ' || $3
                                    || ' (worker ' || COALESCE(worker, '?') || ')',
                                worker = NULL
                         WHERE status = 'running' AND {condition} AND attempts < $4
                         RETURNING id, {vm} AS vm_id"
                    ),
                ),
                (
                    Requeue::Lost,
                    format!(
                        "UPDATE {table} SET status = '{lost}', finished_at = $2, lease_token_hash = NULL,
                                {lost_column} = 'the worker was lost on every attempt (' || CAST(attempts AS TEXT)
                                    || ' of ' || CAST($4 AS TEXT) || '); the last: ' || $3
                                    || ' (worker ' || COALESCE(worker, '?') || ')'
                         WHERE status = 'running' AND {condition} AND attempts >= $4
                         RETURNING id, {vm} AS vm_id"
                    ),
                ),
            ];
            for (outcome, sql) in &statements {
                let query = sqlx::query(sql);
                let query = match gone {
                    Gone::SilentSince(cutoff) => query.bind(cutoff),
                    Gone::Worker(worker) => query.bind(worker),
                };
                let rows = query
                    .bind(t)
                    .bind(why)
                    .bind(max)
                    .fetch_all(&self.pool)
                    .await?;
                for row in rows {
                    out.push(Requeued {
                        kind,
                        id: row.try_get("id")?,
                        vm_id: row.try_get("vm_id")?,
                        outcome: *outcome,
                    });
                }
            }
        }
        if out.iter().any(|r| r.outcome == Requeue::Queued) {
            self.jobs_changed().await;
        }
        Ok(out)
    }
}

/// Wakes a claimer when jobs may have become claimable, whichever control
/// plane queued them (PostgreSQL `LISTEN`; within one process the service's
/// own wake-up does the same on SQLite).
pub struct JobListener(sqlx::postgres::PgListener);

impl JobListener {
    /// Wait for the next change.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}

const CHANNEL: &str = "openfactory_jobs";

impl Store {
    /// Say that jobs may have become claimable (queued, requeued, handed back).
    pub(crate) async fn jobs_changed(&self) {
        if self.engine == Engine::Postgres {
            // Best effort: claimers also look now and then.
            let _ = sqlx::query(&format!("NOTIFY {CHANNEL}"))
                .execute(&self.pool)
                .await;
        }
    }

    /// A listener for [`Store::jobs_changed`] from any process; `None` on
    /// SQLite, which has no other processes to hear from.
    pub async fn job_listener(&self) -> Result<Option<JobListener>, StoreError> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(JobListener(listener)))
    }
}

/// The SQL that limits an update to the job a lease holds (`$1` the id, `$2`
/// the token's hash).
pub(crate) const HELD: &str = "id = $1 AND lease_token_hash = $2 AND status = 'running'";

/// `Ok` when an update through a lease changed its row.
pub(crate) fn lease_held(lease: &Lease, rows: u64) -> Result<(), StoreError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            kind: lease.kind,
            id: lease.id.clone(),
        })
    }
}

fn signal(lease: &Lease, cancel: Option<i64>) -> Result<Signal, StoreError> {
    match cancel {
        Some(flag) => Ok(Signal { cancel: flag != 0 }),
        None => Err(StoreError::LeaseLost {
            kind: lease.kind,
            id: lease.id.clone(),
        }),
    }
}

/// A claimer that can run anything, for tests.
#[cfg(any(test, feature = "test-databases"))]
pub fn any_claimer(worker: &str) -> Claimer<'_> {
    Claimer {
        worker,
        arch: "amd64",
        free_disk_bytes: u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::tests::new_build;
    use crate::{BuildEnd, BuildStatus, OwnerId};

    /// Pretend every running job's last heartbeat was `seconds` ago.
    async fn age_heartbeats(store: &Store, seconds: i64) {
        for kind in JobKind::ALL {
            let sql = format!(
                "UPDATE {} SET heartbeat_at = heartbeat_at - $1 WHERE status = 'running'",
                kind.table()
            );
            sqlx::query(&sql)
                .bind(seconds)
                .execute(&store.pool)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_silent_worker_loses_its_job_twice_then_the_job_fails() {
        for (engine, store) in crate::test_databases::each().await {
            let owner = OwnerId::local();
            store.create_build(&owner, &new_build("b1")).await.unwrap();
            let settings = LeaseSettings::default();
            let (first, _) = store
                .claim_build(&any_claimer("w1"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(first.attempt, 1);
            // A live lease is left alone.
            assert!(store.requeue_silent(settings).await.unwrap().is_empty());

            age_heartbeats(&store, 121).await;
            let requeued = store.requeue_silent(settings).await.unwrap();
            assert_eq!(requeued.len(), 1, "{engine}");
            assert_eq!(requeued[0].outcome, Requeue::Queued);
            // The old token is refused for everything from now on.
            for refused in [
                store.heartbeat(&first).await.map(|_| ()),
                store
                    .job_progress(&first, "apply", 10, "x")
                    .await
                    .map(|_| ()),
                store.finish_build(&first, BuildEnd::Cancelled).await,
                store.release(&first, "shutting down").await,
            ] {
                assert!(
                    matches!(refused, Err(StoreError::LeaseLost { .. })),
                    "{engine}: {refused:?}"
                );
            }

            let (second, _) = store
                .claim_build(&any_claimer("w2"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((second.attempt, second.id.as_str()), (2, "b1"), "{engine}");
            let because = second.requeued_because.clone().unwrap();
            assert!(
                because.contains("attempt 1 of 3") && because.contains("worker w1"),
                "{because}"
            );
            // Another claimer cannot finish it with a token of its own.
            assert!(
                store
                    .claim_build(&any_claimer("w3"))
                    .await
                    .unwrap()
                    .is_none()
            );

            age_heartbeats(&store, 121).await;
            store.requeue_silent(settings).await.unwrap();
            let (third, _) = store
                .claim_build(&any_claimer("w3"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(third.attempt, 3);
            age_heartbeats(&store, 121).await;
            let ended = store.requeue_silent(settings).await.unwrap();
            assert_eq!(ended[0].outcome, Requeue::Lost, "{engine}");
            let build = store.build(&owner, "b1").await.unwrap().unwrap();
            assert_eq!(build.status, BuildStatus::Failed);
            let error = build.error.unwrap();
            assert!(
                error.contains("worker was lost on every attempt (3 of 3)") && error.contains("w3"),
                "{error}"
            );
            assert!(
                store
                    .claim_build(&any_claimer("w1"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[tokio::test]
    async fn a_job_handed_back_is_queued_again_without_using_an_attempt() {
        for (engine, store) in crate::test_databases::each().await {
            let owner = OwnerId::local();
            store.create_build(&owner, &new_build("b1")).await.unwrap();
            store.create_build(&owner, &new_build("b2")).await.unwrap();
            let (lease, _) = store
                .claim_build(&any_claimer("w1"))
                .await
                .unwrap()
                .unwrap();
            store
                .release(&lease, "worker w1 is shutting down")
                .await
                .unwrap();
            let (again, build) = store
                .claim_build(&any_claimer("w2"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((build.id.as_str(), again.attempt), ("b1", 1), "{engine}");

            // A job whose owner asked it to stop stops instead.
            let (other, _) = store
                .claim_build(&any_claimer("w1"))
                .await
                .unwrap()
                .unwrap();
            store.cancel_build(&owner, "b2").await.unwrap();
            store.release(&other, "shutting down").await.unwrap();
            let b2 = store.build(&owner, "b2").await.unwrap().unwrap();
            assert_eq!(b2.status, BuildStatus::Cancelled, "{engine}");
        }
    }

    #[tokio::test]
    async fn a_lost_job_whose_owner_asked_it_to_stop_stops() {
        for (engine, store) in crate::test_databases::each().await {
            let owner = OwnerId::local();
            store.create_build(&owner, &new_build("b1")).await.unwrap();
            store
                .claim_build(&any_claimer("w1"))
                .await
                .unwrap()
                .unwrap();
            store.cancel_build(&owner, "b1").await.unwrap();
            let gone = store
                .requeue_worker("w1", LeaseSettings::default(), "its token was revoked")
                .await
                .unwrap();
            assert_eq!(gone[0].outcome, Requeue::Cancelled, "{engine}");
            let b1 = store.build(&owner, "b1").await.unwrap().unwrap();
            assert_eq!(b1.status, BuildStatus::Cancelled);
        }
    }

    #[tokio::test]
    async fn concurrent_claimers_never_share_a_job() {
        for (engine, store) in crate::test_databases::each().await {
            let owner = OwnerId::local();
            let ids: Vec<String> = (0..40).map(|i| format!("b{i:02}")).collect();
            for id in &ids {
                store.create_build(&owner, &new_build(id)).await.unwrap();
            }
            let claimers: Vec<_> = (0..8)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut mine = Vec::new();
                        while let Some((lease, _)) = store
                            .claim_build(&any_claimer(&format!("w{n}")))
                            .await
                            .unwrap()
                        {
                            mine.push(lease.id);
                        }
                        mine
                    })
                })
                .collect();
            let mut claimed = Vec::new();
            for claimer in claimers {
                claimed.extend(claimer.await.unwrap());
            }
            claimed.sort();
            assert_eq!(claimed, ids, "{engine}: every job claimed exactly once");
        }
    }

    #[tokio::test]
    async fn a_worker_that_cannot_run_a_job_never_gets_it() {
        for (engine, store) in crate::test_databases::each().await {
            let owner = OwnerId::local();
            store.create_build(&owner, &new_build("b1")).await.unwrap();
            let small = Claimer {
                worker: "small",
                arch: "amd64",
                free_disk_bytes: (1 << 30) - 1,
            };
            let arm = Claimer {
                worker: "arm",
                arch: "arm64",
                free_disk_bytes: u64::MAX,
            };
            assert!(
                store.claim_build(&small).await.unwrap().is_none(),
                "{engine}"
            );
            assert!(store.claim_build(&arm).await.unwrap().is_none(), "{engine}");
            let (lease, _) = store
                .claim_build(&any_claimer("big"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(lease.id, "b1");
        }
    }

    #[test]
    fn tokens_are_secret_in_logs_and_parse_only_in_their_shape() {
        let token = JobToken::new();
        assert_eq!(format!("{token:?}"), "JobToken(…)");
        assert_eq!(JobToken::parse(token.as_str()), Some(token.clone()));
        assert_ne!(token.hash(), token.as_str());
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
            assert!(JobToken::parse(bad).is_none(), "{bad}");
        }
    }
}
