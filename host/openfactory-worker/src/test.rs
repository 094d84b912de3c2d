//! Run one test run: a throwaway VM from the build's ISO, the checks, the VM
//! removed; progress and the checks so far reported through the lease as they
//! come. A stop request (which a heartbeat returns), a lost lease, or this
//! worker shutting down ends the run early.

use std::time::Duration;

use openfactory_testrun::{CheckResult, RunObserver, RunSettings, RunStatus, Stage};
use openfactory_vm::VmBackend;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::build::HEARTBEAT;
use crate::control::{Control, ControlError, TestOutcome, TestTask};

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

/// A new VM id: 64 random bits in hex.
pub fn new_vm_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

pub async fn run<C: Control, B: VmBackend>(
    control: &C,
    backend: &B,
    task: TestTask,
    shutdown: &CancellationToken,
) {
    let TestTask { lease, spec } = task;
    let id = lease.id.clone();
    // Recorded before the VM exists, so that whoever cleans up after a lost
    // worker knows what to remove.
    let vm_id = new_vm_id();
    if let Err(e) = control.set_vm(&lease, &vm_id).await {
        tracing::warn!(run = %id, error = %e, "could not record the test VM; leaving the run");
        return;
    }
    let total = spec.checks.len() as u32;
    let iso = match control
        .iso(&TestTask {
            lease: lease.clone(),
            spec: spec.clone(),
        })
        .await
    {
        Ok(iso) => iso,
        Err(ControlError::LeaseLost { .. }) => return,
        Err(e) => {
            let outcome = TestOutcome {
                status: "error".into(),
                message: format!("the build's ISO is not available to this worker: {e}"),
                passed: 0,
                total,
                report: serde_json::json!({}),
            };
            finish(control, &lease, outcome).await;
            return;
        }
    };
    let settings = RunSettings {
        vm_id,
        iso,
        memory_mb: spec.memory_mb,
        vcpus: spec.vcpus,
        timeout: Duration::from_secs(u64::from(spec.timeout_seconds)),
    };
    let stop = CancellationToken::new();
    let (tx, mut rx) = watch::channel((
        Stage::Boot,
        0u8,
        "starting the test VM".to_owned(),
        Vec::new(),
    ));
    let observer = Progress { tx };
    let testing =
        openfactory_testrun::run(backend, &settings, &spec.checks, &observer, stop.clone());
    tokio::pin!(testing);
    let mut by_host = false;
    let mut lost = false;
    let report = loop {
        let reply = tokio::select! {
            report = &mut testing => break report,
            changed = rx.changed() => {
                if changed.is_ok() {
                    let (stage, percent, message, done) = rx.borrow_and_update().clone();
                    let partial = serde_json::json!({ "checks": done }).to_string();
                    Some(control.progress(&lease, stage.as_str(), percent, &message, Some(&partial)).await)
                } else {
                    None
                }
            }
            _ = tokio::time::sleep(HEARTBEAT) => Some(control.heartbeat(&lease).await),
            _ = shutdown.cancelled(), if !stop.is_cancelled() => {
                by_host = true;
                stop.cancel();
                None
            }
        };
        match reply {
            Some(Ok(signal)) if signal.cancel => stop.cancel(),
            Some(Err(ControlError::LeaseLost { .. })) if !lost => {
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
        let reason =
            "handed back: its worker shut down during the run; it runs again when a worker is free";
        if let Err(e) = control.release(&lease, reason).await {
            tracing::warn!(run = %id, error = %e, "could not hand the run back");
        }
        return;
    }
    let status = match report.status {
        RunStatus::Passed => "passed",
        RunStatus::Failed => "failed",
        RunStatus::Error => "error",
        RunStatus::Stopped => "stopped",
        RunStatus::TimedOut => "timed_out",
    };
    tracing::info!(run = %id, status, passed = report.passed(), total = report.checks.len(), "test run finished");
    let outcome = TestOutcome {
        status: status.into(),
        message: report.message.clone(),
        passed: report.passed(),
        total: report.checks.len() as u32,
        report: serde_json::to_value(&report).expect("serialisable"),
    };
    finish(control, &lease, outcome).await;
}

async fn finish<C: Control>(control: &C, lease: &openfactory_store::Lease, outcome: TestOutcome) {
    if let Err(e) = control.finish_test_run(lease, outcome).await {
        tracing::error!(run = %lease.id, error = %e, "could not record a finished test run");
    }
}
