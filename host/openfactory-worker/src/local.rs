//! [`Control`] inside the control plane: the store's queue, directly. It is
//! also what the worker API does for remote workers ([`claim`]), so a job is
//! handed out the same way whoever runs it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openfactory_build::pipeline::ISO_FILE;
use openfactory_service::App;
use openfactory_store::{BuildEnd, Claimer, JobKind, Lease, Signal, StoreError, TestRunEnd};

use crate::capabilities::Capabilities;
use crate::control::{
    BUILD_OUTPUTS, BuildOutcome, BuildTask, Control, ControlError, Reply, Task, TestOutcome,
    TestSpec, TestTask,
};

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> ControlError {
        match e {
            StoreError::LeaseLost { kind, id } => ControlError::LeaseLost { kind, id },
            other => ControlError::Unavailable(other.to_string()),
        }
    }
}

/// How long a claim waits for a job before answering "none".
pub const CLAIM_WAIT: Duration = Duration::from_secs(20);

/// Claim the next job of `kind` for a worker with these capabilities: the
/// lease and what the worker needs to run it. Jobs that cannot run at all
/// (an unreadable plan, a build gone before its test run) end here, saying
/// why, and the next one is tried.
pub async fn claim(
    app: &App,
    worker: &str,
    capabilities: &Capabilities,
    kind: JobKind,
) -> Reply<Option<Task>> {
    let claimer = Claimer {
        worker,
        arch: &capabilities.arch,
        free_disk_bytes: capabilities.free_disk_bytes,
    };
    loop {
        match kind {
            JobKind::Build => {
                let Some((lease, build)) = app.store.claim_build(&claimer).await? else {
                    return Ok(None);
                };
                match serde_json::from_str(&build.plan_json) {
                    Ok(plan) => return Ok(Some(Task::Build(BuildTask { lease, plan }))),
                    Err(e) => {
                        let error =
                            format!("the stored plan is unreadable ({e}); create the build again");
                        let end = BuildEnd::Failed {
                            error: &error,
                            failed_step: None,
                        };
                        app.store.finish_build(&lease, end).await?;
                    }
                }
            }
            JobKind::TestRun => {
                let Some((lease, run)) = app.store.claim_test_run(&claimer).await? else {
                    return Ok(None);
                };
                let checks: Result<Vec<openfactory_core::plan::PlannedCheck>, _> =
                    serde_json::from_str(&run.checks_json);
                let build = app.store.build(&run.owner, &run.build_id).await?;
                let problem = match (&checks, &build) {
                    (Err(e), _) => {
                        format!("the stored checks are unreadable ({e}); start a new run")
                    }
                    (_, None) => "the build is gone; its ISO cannot be tested".into(),
                    (_, Some(b)) if b.iso_sha256.is_none() => "the build has no ISO to test".into(),
                    (Ok(checks), Some(build)) => {
                        let spec = TestSpec {
                            build_id: build.id.clone(),
                            iso_sha256: build.iso_sha256.clone().unwrap_or_default(),
                            iso_size_bytes: build.iso_size_bytes.unwrap_or(0),
                            checks: checks.clone(),
                            memory_mb: run.memory_mb,
                            vcpus: run.vcpus,
                            timeout_seconds: run.timeout_seconds,
                        };
                        return Ok(Some(Task::TestRun(TestTask { lease, spec })));
                    }
                };
                let end = TestRunEnd {
                    status: openfactory_store::TestRunStatus::Error,
                    message: &problem,
                    passed: 0,
                    total: 0,
                    report_json: "{}",
                };
                app.store.finish_test_run(&lease, end).await?;
            }
        }
    }
}

/// The control plane's own worker.
pub struct LocalControl {
    pub app: Arc<App>,
    /// In the jobs' `worker` column.
    pub worker: String,
}

impl LocalControl {
    fn capabilities(&self) -> Capabilities {
        Capabilities::measure(&self.app.settings.builds_dir)
    }
}

impl Control for LocalControl {
    async fn claim(&self, kinds: &[JobKind]) -> Reply<Option<Task>> {
        let capabilities = self.capabilities();
        for &kind in kinds {
            if let Some(task) = claim(&self.app, &self.worker, &capabilities, kind).await? {
                if kind == JobKind::Build {
                    self.app.metrics.builds_running.inc();
                }
                return Ok(Some(task));
            }
        }
        let wake = &self.app.wake;
        tokio::select! {
            _ = wake.builds.notified(), if kinds.contains(&JobKind::Build) => {}
            _ = wake.test_runs.notified(), if kinds.contains(&JobKind::TestRun) => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        Ok(None)
    }

    async fn progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
        report: Option<&str>,
    ) -> Reply<Signal> {
        let signal = self
            .app
            .store
            .job_progress(lease, stage, percent, message)
            .await?;
        if let Some(report) = report {
            self.app.store.test_run_report(lease, report).await?;
        }
        Ok(signal)
    }

    async fn heartbeat(&self, lease: &Lease) -> Reply<Signal> {
        Ok(self.app.store.heartbeat(lease).await?)
    }

    async fn set_vm(&self, lease: &Lease, vm_id: &str) -> Reply<()> {
        Ok(self.app.store.set_test_run_vm(lease, vm_id).await?)
    }

    fn build_dir(&self, build_id: &str) -> PathBuf {
        match self.app.artifacts.local_dir(build_id) {
            // Where downloads read them.
            Ok(Some(dir)) => dir,
            // Scratch space, published to object storage at the end.
            _ => self
                .app
                .settings
                .builds_dir
                .join(".unpublished")
                .join(build_id),
        }
    }

    async fn publish(&self, lease: &Lease) -> Reply<()> {
        if matches!(self.app.artifacts.local_dir(&lease.id), Ok(Some(_))) {
            // The build wrote its outputs where downloads read them.
            return Ok(());
        }
        let dir = self.build_dir(&lease.id);
        for name in BUILD_OUTPUTS {
            let path = dir.join(name);
            if path.is_file() {
                self.app
                    .artifacts
                    .put_file(&lease.id, name, &path)
                    .await
                    .map_err(|e| ControlError::Unavailable(format!("storing {name}: {e}")))?;
            }
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
    }

    async fn finish_build(&self, lease: &Lease, outcome: BuildOutcome, seconds: f64) -> Reply<()> {
        self.app.metrics.builds_running.dec();
        self.app.metrics.build_finished(outcome.word(), seconds);
        finish_build(&self.app, lease, &outcome).await
    }

    async fn iso(&self, task: &TestTask) -> Reply<PathBuf> {
        self.app
            .artifacts
            .local_copy(&task.spec.build_id, ISO_FILE, Some(&task.spec.iso_sha256))
            .await
            .map_err(|e| ControlError::Unavailable(format!("the build's ISO: {e}")))
    }

    async fn finish_test_run(&self, lease: &Lease, outcome: TestOutcome) -> Reply<()> {
        finish_test_run(&self.app, lease, &outcome).await
    }

    async fn release(&self, lease: &Lease, reason: &str) -> Reply<()> {
        if lease.kind == JobKind::Build {
            self.app.metrics.builds_running.dec();
        }
        Ok(self.app.store.release(lease, reason).await?)
    }
}

/// Record a build's end (for local and remote workers alike).
pub async fn finish_build(app: &App, lease: &Lease, outcome: &BuildOutcome) -> Reply<()> {
    let result;
    let end = match outcome {
        BuildOutcome::Completed {
            iso_sha256,
            iso_size_bytes,
            result: summary,
        } => {
            result = summary.to_string();
            BuildEnd::Completed {
                iso_sha256,
                iso_size_bytes: *iso_size_bytes,
                result_json: &result,
            }
        }
        BuildOutcome::Failed { error, failed_step } => BuildEnd::Failed {
            error,
            failed_step: failed_step.as_deref(),
        },
        BuildOutcome::Cancelled => BuildEnd::Cancelled,
    };
    Ok(app.store.finish_build(lease, end).await?)
}

/// Record a test run's end (for local and remote workers alike).
pub async fn finish_test_run(app: &App, lease: &Lease, outcome: &TestOutcome) -> Reply<()> {
    let status = outcome
        .status
        .parse()
        .map_err(|e: String| ControlError::Refused(format!("status: {e}")))?;
    let status: openfactory_store::TestRunStatus = status;
    if status.is_active() {
        return Err(ControlError::Refused(format!(
            "status: `{status}` is not how a run ends; use passed, failed, error, stopped or timed_out"
        )));
    }
    app.metrics.test_run_finished(status.as_str());
    let report = outcome.report.to_string();
    let end = TestRunEnd {
        status,
        message: &outcome.message,
        passed: outcome.passed,
        total: outcome.total,
        report_json: &report,
    };
    Ok(app.store.finish_test_run(lease, end).await?)
}
