//! The control plane's housekeeping around workers: its own in-process
//! worker (the same executors as `openfactory worker`, through the store),
//! recovery after a restart, the sweep that requeues silent workers' jobs,
//! and the relay that wakes claimers when another control plane queues work.

use std::sync::Arc;
use std::time::Duration;

use openfactory_build::Builder;
use openfactory_service::App;
use openfactory_store::{JobKind, LeaseSettings};
use openfactory_vm::{VmBackend, VmError};
use openfactory_worker::{Executors, LocalControl};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// This service's in-process worker, in the `worker` column: the host's name
/// and its home directory (so that two services on one machine are two
/// workers, and a restarted one knows its own leases).
pub fn worker_id(home: &std::path::Path) -> String {
    use sha2::Digest;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let home = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    format!("{host}/{}", &hex::encode(home)[..8])
}

/// Make the store agree with the disk after a restart: jobs this worker held
/// go back to the queue (their attempt counted), and the scratch space,
/// mounts and VMs of interrupted jobs and unfinished uploads are gone.
pub async fn recover(
    app: &App,
    builder: &Builder,
    worker: &str,
    leases: LeaseSettings,
) -> anyhow::Result<()> {
    let requeued = app
        .store
        .requeue_worker(
            worker,
            leases,
            "the OpenFactory host restarted during the job",
        )
        .await?;
    if !requeued.is_empty() {
        tracing::warn!(jobs = ?requeued, "jobs interrupted by the last shutdown went back to the queue");
    }
    let removed = builder.recover()?;
    if !removed.is_empty() {
        tracing::warn!(scratch = ?removed, "removed scratch space of interrupted builds");
    }
    // An upload cut off by the last shutdown (a worker's, or this host's own
    // publish) left a staging file that no reader ever saw.
    let unfinished = app.artifacts.remove_unfinished_uploads()?;
    if !unfinished.is_empty() {
        tracing::warn!(files = ?unfinished, "removed uploads the last shutdown left unfinished");
    }
    for vm in requeued.iter().filter_map(|r| r.vm_id.as_deref()) {
        match app.vms.backend.delete(vm).await {
            Ok(()) => tracing::warn!(%vm, "removed the VM of an interrupted test run"),
            Err(VmError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(%vm, error = %e, "could not remove an interrupted test run's VM")
            }
        }
    }
    Ok(())
}

/// Now and then, requeue jobs whose worker stopped sending heartbeats (here
/// or on another machine); every control plane does, each job is handled once.
pub async fn sweep_leases(app: Arc<App>, leases: LeaseSettings, shutdown: CancellationToken) {
    let every =
        (leases.heartbeat_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        match app.store.requeue_silent(leases).await {
            Ok(requeued) if !requeued.is_empty() => {
                tracing::warn!(jobs = ?requeued, "jobs of silent workers were requeued");
                app.wake.builds.notify_waiters();
                app.wake.test_runs.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep expired leases"),
        }
    }
}

/// On PostgreSQL, wake this process's claimers when any control plane
/// queues or requeues a job (`LISTEN`); they also look every few seconds.
pub async fn relay_job_changes(app: Arc<App>, shutdown: CancellationToken) {
    loop {
        let mut listener = match app.store.job_listener().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for new jobs; claimers poll instead");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        loop {
            tokio::select! {
                changed = listener.changed() => match changed {
                    Ok(()) => {
                        app.wake.builds.notify_waiters();
                        app.wake.test_runs.notify_waiters();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the job listener stopped; starting it again");
                        break;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The in-process worker's slots: `builds` build slots and `tests` test slots.
pub fn run_local(
    app: &Arc<App>,
    builder: Arc<Builder>,
    worker: String,
    builds: usize,
    tests: usize,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let control = Arc::new(LocalControl {
        app: app.clone(),
        worker,
    });
    let executors = Arc::new(Executors {
        builder,
        vms: app.vms.backend.clone(),
    });
    [(JobKind::Build, builds), (JobKind::TestRun, tests)]
        .into_iter()
        .filter(|(_, slots)| *slots > 0)
        .map(|(kind, slots)| {
            tokio::spawn(openfactory_worker::slots::run(
                control.clone(),
                executors.clone(),
                kind,
                slots,
                shutdown.clone(),
            ))
        })
        .collect()
}
