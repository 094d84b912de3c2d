//! The build worker inside `openfactory serve`: leases queued builds from the
//! store's job queue, runs each through the pipeline on a blocking thread, and
//! reports progress through the lease (each report is a heartbeat, and says
//! whether the owner asked to cancel). A lease lost meanwhile (the job was
//! requeued) stops the build and discards its result.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openfactory_build::pipeline::BuildOutput;
use openfactory_build::{BuildError, BuildJob, Builder, CancelFlag, Observer, Stage};
use openfactory_core::Plan;
use openfactory_service::App;
use openfactory_store::{BuildEnd, BuildRecord, Lease, LeaseSettings, StoreError};
use tokio::sync::watch;
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

/// How often a running job's worker says it is alive (and learns of a cancel).
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Progress from the build thread, latest wins.
struct Progress {
    tx: watch::Sender<(Stage, u8, String)>,
}

impl Observer for Progress {
    fn progress(&self, stage: Stage, percent: u8, message: &str) {
        let _ = self.tx.send((stage, percent, message.to_owned()));
    }
}

/// Make the database agree with the disk after a restart: jobs this worker
/// held go back to the queue (their attempt counted), and the scratch space
/// and mounts of interrupted builds are gone. The ids of the VMs of its
/// interrupted test runs, to remove.
pub async fn recover(
    app: &App,
    builder: &Builder,
    worker: &str,
    leases: LeaseSettings,
) -> anyhow::Result<Vec<String>> {
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
    Ok(requeued.into_iter().filter_map(|r| r.vm_id).collect())
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

/// Run `concurrency` build slots until `shutdown`; running builds are
/// cancelled then, and marked failed so that they can be retried.
pub async fn run(
    app: Arc<App>,
    builder: Arc<Builder>,
    worker: String,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let mut slots = Vec::new();
    for slot in 0..concurrency.max(1) {
        let (app, builder, worker, shutdown) = (
            app.clone(),
            builder.clone(),
            worker.clone(),
            shutdown.clone(),
        );
        slots.push(tokio::spawn(async move {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                match app.store.claim_build(&worker).await {
                    Ok(Some((lease, build))) => {
                        tracing::info!(slot, build = %build.id, recipe = %build.recipe_name, attempt = lease.attempt, "build started");
                        run_one(&app, &builder, lease, build, &shutdown).await;
                    }
                    Ok(None) => {
                        tokio::select! {
                            _ = app.wake.builds.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not take a build from the queue");
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

async fn run_one(
    app: &App,
    builder: &Arc<Builder>,
    lease: Lease,
    build: BuildRecord,
    shutdown: &CancellationToken,
) {
    let id = build.id.clone();
    let plan: Plan = match serde_json::from_str(&build.plan_json) {
        Ok(plan) => plan,
        Err(e) => {
            let error = format!("the stored plan is unreadable ({e}); create the build again");
            let end = BuildEnd::Failed {
                error: &error,
                failed_step: None,
            };
            finish(app, &lease, end).await;
            return;
        }
    };
    let started = std::time::Instant::now();
    app.metrics.builds_running.inc();
    let cancel = CancelFlag::new();
    let (tx, mut rx) = watch::channel((Stage::Bootstrap, 0u8, "starting".to_owned()));
    let out_dir = app.settings.build_dir(&id);
    let preface = preface(&lease);
    let task = {
        let (builder, cancel, id) = (builder.clone(), cancel.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let observer = Progress { tx };
            builder.build(&BuildJob {
                build_id: &id,
                plan: &plan,
                out_dir: &out_dir,
                observer: &observer,
                cancel: &cancel,
                preface: &preface,
            })
        })
    };
    tokio::pin!(task);
    let stopped_by_host = Mutex::new(false);
    let mut lost = false;
    let result = loop {
        let signal = tokio::select! {
            result = &mut task => break result,
            changed = rx.changed() => {
                let signal = if changed.is_ok() {
                    let (stage, percent, message) = rx.borrow_and_update().clone();
                    Some(app.store.job_progress(&lease, stage.as_str(), percent, &message).await)
                } else {
                    None
                };
                // Do not write more than a few times a second.
                tokio::time::sleep(Duration::from_millis(250)).await;
                signal
            }
            _ = tokio::time::sleep(HEARTBEAT) => Some(app.store.heartbeat(&lease).await),
            _ = shutdown.cancelled(), if !cancel.is_cancelled() => {
                *stopped_by_host.lock().expect("not poisoned") = true;
                cancel.cancel();
                None
            }
        };
        match signal {
            Some(Ok(signal)) if signal.cancel => cancel.cancel(),
            Some(Err(StoreError::LeaseLost { .. })) if !lost => {
                tracing::warn!(build = %id, "the build's lease was lost (it was requeued): stopping it");
                lost = true;
                cancel.cancel();
            }
            Some(Err(e)) => tracing::warn!(build = %id, error = %e, "could not report progress"),
            _ => {}
        }
    };
    let by_host = *stopped_by_host.lock().expect("not poisoned");
    app.metrics.builds_running.dec();
    if lost {
        return;
    }
    let seconds = started.elapsed().as_secs_f64();
    let status = match &result {
        Ok(Ok(_)) => "completed",
        Ok(Err(BuildError::Cancelled)) if by_host => "handed_back",
        Ok(Err(BuildError::Cancelled)) => "cancelled",
        _ => "failed",
    };
    app.metrics.build_finished(status, seconds);
    match result {
        Ok(Ok(output)) => completed(app, &lease, &output).await,
        Ok(Err(BuildError::Cancelled)) if by_host => {
            let reason = "handed back: the OpenFactory host shut down during the build; it runs again when a worker is free";
            if let Err(e) = app.store.release(&lease, reason).await {
                tracing::warn!(build = %id, error = %e, "could not hand the build back");
            }
        }
        Ok(Err(BuildError::Cancelled)) => finish(app, &lease, BuildEnd::Cancelled).await,
        Ok(Err(e)) => {
            tracing::info!(build = %id, error = %e, "build failed");
            let (error, failed_step) = (e.to_string(), e.failed_step());
            let end = BuildEnd::Failed {
                error: &error,
                failed_step: failed_step.as_deref(),
            };
            finish(app, &lease, end).await
        }
        Err(e) => {
            tracing::error!(build = %id, error = %e, "build thread panicked");
            let end = BuildEnd::Failed {
                error: "the build stopped unexpectedly (an internal error); the server log has details",
                failed_step: None,
            };
            finish(app, &lease, end).await
        }
    }
}

/// What the log says first on a job's later attempts.
pub fn preface(lease: &Lease) -> Vec<String> {
    match &lease.requeued_because {
        Some(why) if lease.attempt > 1 => vec![format!(
            "attempt {} (worker {}): requeued after {why}",
            lease.attempt, lease.worker
        )],
        _ => Vec::new(),
    }
}

async fn completed(app: &App, lease: &Lease, output: &BuildOutput) {
    let id = &lease.id;
    let summary = serde_json::json!({
        "base": output.base_key,
        "base_reused": output.base_reused,
        "packages": output.packages,
        "source_date_epoch": output.source_date_epoch,
        "stage_seconds": output
            .stage_seconds
            .iter()
            .map(|(stage, s)| (stage.as_str().to_owned(), serde_json::json!((s * 10.0).round() / 10.0)))
            .collect::<serde_json::Map<_, _>>(),
        "layers": output
            .layers
            .iter()
            .map(|(name, size)| serde_json::json!({"name": name, "size_bytes": size}))
            .collect::<Vec<_>>(),
    });
    tracing::info!(build = %id, sha256 = %output.iso_sha256, size = output.iso_size_bytes, "build completed");
    let end = BuildEnd::Completed {
        iso_sha256: &output.iso_sha256,
        iso_size_bytes: output.iso_size_bytes,
        result_json: &summary.to_string(),
    };
    finish(app, lease, end).await
}

async fn finish(app: &App, lease: &Lease, end: BuildEnd<'_>) {
    if let Err(e) = app.store.finish_build(lease, end).await {
        tracing::error!(build = %lease.id, error = %e, "could not record the end of a build");
    }
}
