//! The test worker inside `openfactory serve`: leases queued test runs from
//! the store's job queue and runs each (a throwaway VM, the checks, the VM
//! removed), reporting progress and finished checks through the lease as they
//! come; a stop request (which a heartbeat returns), a lost lease, or the host
//! shutting down ends a run early.

use std::sync::Arc;
use std::time::Duration;

use openfactory_build::pipeline::ISO_FILE;
use openfactory_core::plan::PlannedCheck;
use openfactory_service::App;
use openfactory_store::{Lease, StoreError, TestRunEnd, TestRunRecord, TestRunStatus};
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

/// After a restart: the VMs of runs this host had going go (the runs went
/// back to the queue with the other interrupted jobs).
pub async fn remove_vms(app: &App, vms: &[String]) {
    for vm in vms {
        match app.vms.backend.delete(vm).await {
            Ok(()) => {
                tracing::warn!(%vm, "removed the VM of a test run interrupted by the last shutdown")
            }
            Err(VmError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(%vm, error = %e, "could not remove an interrupted test run's VM")
            }
        }
    }
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
                match app.store.claim_test_run(&worker).await {
                    Ok(Some((lease, run))) => {
                        tracing::info!(slot, run = %run.id, build = %run.build_id, attempt = lease.attempt, "test run started");
                        run_one(&app, lease, run, &shutdown).await;
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
    lease: &Lease,
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
            lease,
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
        tracing::error!(run = %lease.id, error = %e, "could not record a finished test run");
    }
}

async fn run_one(app: &App, lease: Lease, run: TestRunRecord, shutdown: &CancellationToken) {
    let id = run.id.clone();
    // Recorded before the VM exists, so that whoever cleans up after a lost
    // worker knows what to remove.
    let vm_id = new_vm_id();
    if let Err(e) = app.store.set_test_run_vm(&lease, &vm_id).await {
        tracing::warn!(run = %id, error = %e, "could not record the test VM; leaving the run");
        return;
    }
    let checks: Vec<PlannedCheck> = match serde_json::from_str(&run.checks_json) {
        Ok(checks) => checks,
        Err(e) => {
            let message = format!("the stored checks are unreadable ({e}); start a new run");
            finish(app, &lease, TestRunStatus::Error, &message, 0, 0, "{}").await;
            return;
        }
    };
    let build = match app.store.build(&run.owner, &run.build_id).await {
        Ok(Some(build)) => build,
        _ => {
            let message = "the build is gone; its ISO cannot be tested";
            finish(
                app,
                &lease,
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
        vm_id,
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
    let mut lost = false;
    let report = loop {
        let signal = tokio::select! {
            report = &mut testing => break report,
            changed = rx.changed() => {
                if changed.is_ok() {
                    let (stage, percent, message, done) = rx.borrow_and_update().clone();
                    let partial = serde_json::json!({ "checks": done }).to_string();
                    let signal = app.store.job_progress(&lease, stage.as_str(), percent, &message).await;
                    if signal.is_ok() {
                        if let Err(e) = app.store.test_run_report(&lease, &partial).await {
                            tracing::warn!(run = %id, error = %e, "could not record the checks so far");
                        }
                    }
                    Some(signal)
                } else {
                    None
                }
            }
            _ = tokio::time::sleep(crate::worker::HEARTBEAT) => Some(app.store.heartbeat(&lease).await),
            _ = shutdown.cancelled(), if !stop.is_cancelled() => {
                by_host = true;
                stop.cancel();
                None
            }
        };
        match signal {
            Some(Ok(signal)) if signal.cancel => stop.cancel(),
            Some(Err(StoreError::LeaseLost { .. })) if !lost => {
                tracing::warn!(run = %id, "the run's lease was lost (it was requeued): stopping it");
                lost = true;
                stop.cancel();
            }
            Some(Err(e)) => tracing::warn!(run = %id, error = %e, "could not report progress"),
            _ => {}
        }
    };
    if lost {
        return;
    }
    if by_host {
        let reason = "handed back: the OpenFactory host shut down during the run; it runs again when a worker is free";
        if let Err(e) = app.store.release(&lease, reason).await {
            tracing::warn!(run = %id, error = %e, "could not hand the run back");
        }
        return;
    }
    let json = serde_json::to_string(&report).expect("serialisable");
    let (status, message) = match report.status {
        RunStatus::Passed => (TestRunStatus::Passed, report.message.clone()),
        RunStatus::Failed => (TestRunStatus::Failed, report.message.clone()),
        RunStatus::Error => (TestRunStatus::Error, report.message.clone()),
        RunStatus::Stopped => (TestRunStatus::Stopped, report.message.clone()),
        RunStatus::TimedOut => (TestRunStatus::TimedOut, report.message.clone()),
    };
    tracing::info!(run = %id, %status, passed = report.passed(), total = report.checks.len(), "test run finished");
    finish(
        app,
        &lease,
        status,
        &message,
        report.passed(),
        report.checks.len() as u32,
        &json,
    )
    .await;
}
