//! The test worker inside `openfactory serve`: takes queued test runs from
//! the database and runs each (a throwaway VM, the checks, the VM removed),
//! writing progress and finished checks back as they come; a stop request in
//! the database, or the host shutting down, ends a run early.

use std::sync::Arc;
use std::time::Duration;

use openfactory_build::pipeline::ISO_FILE;
use openfactory_core::plan::PlannedCheck;
use openfactory_service::App;
use openfactory_store::{TestRunEnd, TestRunRecord, TestRunStatus};
use openfactory_testrun::{CheckResult, RunObserver, RunSettings, RunStatus, Stage};
use openfactory_vm::{VmBackend, VmError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

type Snapshot = (Stage, u8, String, Vec<CheckResult>);

/// Progress from the run, latest wins.
struct Progress {
    tx: watch::Sender<Snapshot>,
}

impl RunObserver for Progress {
    fn progress(&self, stage: Stage, percent: u8, message: &str, done: &[CheckResult]) {
        let _ = self
            .tx
            .send((stage, percent, message.to_owned(), done.to_vec()));
    }
}

fn new_vm_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// After a restart: runs this host had going end in error, and their VMs go.
pub async fn recover(app: &App, worker: &str) -> anyhow::Result<()> {
    for vm in app.store.fail_interrupted_test_runs(worker).await? {
        match app.vms.backend.delete(&vm).await {
            Ok(()) => {
                tracing::warn!(%vm, "removed the VM of a test run interrupted by the last shutdown")
            }
            Err(VmError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(%vm, error = %e, "could not remove an interrupted test run's VM")
            }
        }
    }
    Ok(())
}

/// Run `concurrency` test slots (each at most one VM) until `shutdown`.
pub async fn run(app: Arc<App>, worker: String, concurrency: usize, shutdown: CancellationToken) {
    let mut slots = Vec::new();
    for slot in 0..concurrency.max(1) {
        let (app, worker, shutdown) = (app.clone(), worker.clone(), shutdown.clone());
        slots.push(tokio::spawn(async move {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                match app.store.claim_test_run(&worker, &new_vm_id()).await {
                    Ok(Some(run)) => {
                        tracing::info!(slot, run = %run.id, build = %run.build_id, "test run started");
                        run_one(&app, run, &shutdown).await;
                    }
                    Ok(None) => {
                        tokio::select! {
                            _ = app.wake.test_runs.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not take a test run from the queue");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        }));
    }
    for slot in slots {
        let _ = slot.await;
    }
}

async fn finish(
    app: &App,
    id: &str,
    status: TestRunStatus,
    message: &str,
    passed: u32,
    total: u32,
    report_json: &str,
) {
    app.metrics.test_run_finished(status.as_str());
    if let Err(e) = app
        .store
        .finish_test_run(
            id,
            TestRunEnd {
                status,
                message,
                passed,
                total,
                report_json,
            },
        )
        .await
    {
        tracing::error!(run = %id, error = %e, "could not record a finished test run");
    }
}

async fn run_one(app: &App, run: TestRunRecord, shutdown: &CancellationToken) {
    let id = run.id.clone();
    let checks: Vec<PlannedCheck> = match serde_json::from_str(&run.checks_json) {
        Ok(checks) => checks,
        Err(e) => {
            let message = format!("the stored checks are unreadable ({e}); start a new run");
            finish(app, &id, TestRunStatus::Error, &message, 0, 0, "{}").await;
            return;
        }
    };
    let build = match app.store.build(&run.owner, &run.build_id).await {
        Ok(Some(build)) => build,
        _ => {
            let message = "the build is gone; its ISO cannot be tested";
            finish(
                app,
                &id,
                TestRunStatus::Error,
                message,
                0,
                checks.len() as u32,
                "{}",
            )
            .await;
            return;
        }
    };
    let settings = RunSettings {
        vm_id: run.vm_id.clone().unwrap_or_else(new_vm_id),
        iso: app.settings.build_dir(&build.id).join(ISO_FILE),
        memory_mb: run.memory_mb,
        vcpus: run.vcpus,
        timeout: Duration::from_secs(u64::from(run.timeout_seconds)),
    };
    let stop = CancellationToken::new();
    let (tx, mut rx) = watch::channel((
        Stage::Boot,
        0u8,
        "starting the test VM".to_owned(),
        Vec::new(),
    ));
    let observer = Progress { tx };
    let testing = openfactory_testrun::run(
        &app.vms.backend,
        &settings,
        &checks,
        &observer,
        stop.clone(),
    );
    tokio::pin!(testing);
    let mut by_host = false;
    let report = loop {
        tokio::select! {
            report = &mut testing => break report,
            changed = rx.changed() => {
                if changed.is_ok() {
                    let (stage, percent, message, done) = rx.borrow_and_update().clone();
                    let partial = serde_json::json!({ "checks": done }).to_string();
                    match app.store.test_run_progress(&id, stage.as_str(), percent, &message, Some(&partial)).await {
                        Ok(true) => stop.cancel(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(run = %id, error = %e, "could not record progress"),
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if app.store.test_run(&run.owner, &id).await.ok().flatten().is_some_and(|r| r.stop_requested) {
                    stop.cancel();
                }
            }
            _ = shutdown.cancelled(), if !stop.is_cancelled() => {
                by_host = true;
                stop.cancel();
            }
        }
    };
    let json = serde_json::to_string(&report).expect("serialisable");
    let (status, message) = match report.status {
        _ if by_host => (
            TestRunStatus::Error,
            "interrupted: the OpenFactory host shut down during the run; start a new one with run_tests".to_owned(),
        ),
        RunStatus::Passed => (TestRunStatus::Passed, report.message.clone()),
        RunStatus::Failed => (TestRunStatus::Failed, report.message.clone()),
        RunStatus::Error => (TestRunStatus::Error, report.message.clone()),
        RunStatus::Stopped => (TestRunStatus::Stopped, report.message.clone()),
        RunStatus::TimedOut => (TestRunStatus::TimedOut, report.message.clone()),
    };
    tracing::info!(run = %id, %status, passed = report.passed(), total = report.checks.len(), "test run finished");
    finish(
        app,
        &id,
        status,
        &message,
        report.passed(),
        report.checks.len() as u32,
        &json,
    )
    .await;
}
