//! A worker's slots: each claims a job of its kind, runs it, and claims the
//! next, until shutdown. The same loop runs inside `serve` and in
//! `openfactory worker`; only the [`Control`] differs.

use std::sync::Arc;
use std::time::Duration;

use openfactory_build::Builder;
use openfactory_store::JobKind;
use openfactory_vm::VmBackend;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, ControlError, Task};

/// What this worker runs jobs with.
pub struct Executors<B> {
    pub builder: Arc<Builder>,
    pub vms: Arc<B>,
}

/// Run `concurrency` slots that take jobs of `kind` until `shutdown`; jobs
/// running then are handed back before this returns.
pub async fn run<C: Control, B: VmBackend + 'static>(
    control: Arc<C>,
    executors: Arc<Executors<B>>,
    kind: JobKind,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let mut slots = Vec::new();
    for slot in 0..concurrency {
        let (control, executors, shutdown) = (control.clone(), executors.clone(), shutdown.clone());
        slots.push(tokio::spawn(async move {
            let kinds = [kind];
            loop {
                let claimed = tokio::select! {
                    claimed = control.claim(&kinds) => claimed,
                    _ = shutdown.cancelled() => return,
                };
                match claimed {
                    Ok(Some(Task::Build(task))) => {
                        tracing::info!(slot, build = %task.lease.id, attempt = task.lease.attempt, "build started");
                        crate::build::run(&*control, &executors.builder, task, &shutdown).await;
                    }
                    Ok(Some(Task::TestRun(task))) => {
                        tracing::info!(slot, run = %task.lease.id, build = %task.spec.build_id, attempt = task.lease.attempt, "test run started");
                        crate::test::run(&*control, &*executors.vms, task, &shutdown).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let refused = matches!(e, ControlError::Refused(_));
                        tracing::error!(error = %e, %kind, "could not take a job from the queue");
                        let pause = if refused { 30 } else { 5 };
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(pause)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
        }));
    }
    for slot in slots {
        let _ = slot.await;
    }
}
