//! The build worker inside `openfactory serve`: takes queued builds from the
//! database, runs each through the pipeline on a blocking thread, and writes
//! its progress back; a cancel request in the database stops it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openfactory_build::pipeline::BuildOutput;
use openfactory_build::{BuildError, BuildJob, Builder, CancelFlag, Observer, Stage};
use openfactory_core::Plan;
use openfactory_service::App;
use openfactory_store::{BuildEnd, BuildRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// This host's name in the `worker` column.
pub fn worker_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Progress from the build thread, latest wins.
struct Progress {
    tx: watch::Sender<(Stage, u8, String)>,
}

impl Observer for Progress {
    fn progress(&self, stage: Stage, percent: u8, message: &str) {
        let _ = self.tx.send((stage, percent, message.to_owned()));
    }
}

/// Make the database agree with the disk after a restart: builds this host
/// was running failed, and their scratch space and mounts are gone.
pub async fn recover(app: &App, builder: &Builder, worker: &str) -> anyhow::Result<()> {
    let failed = app.store.fail_interrupted_builds(worker).await?;
    if !failed.is_empty() {
        tracing::warn!(builds = ?failed, "builds interrupted by the last shutdown were marked failed");
    }
    let removed = builder.recover()?;
    if !removed.is_empty() {
        tracing::warn!(scratch = ?removed, "removed scratch space of interrupted builds");
    }
    Ok(())
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
                    Ok(Some(build)) => {
                        tracing::info!(slot, build = %build.id, recipe = %build.recipe_name, "build started");
                        run_one(&app, &builder, build, &shutdown).await;
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
    build: BuildRecord,
    shutdown: &CancellationToken,
) {
    let id = build.id.clone();
    let plan: Plan = match serde_json::from_str(&build.plan_json) {
        Ok(plan) => plan,
        Err(e) => {
            finish(
                app,
                &id,
                BuildEnd::Failed {
                    error: &format!("the stored plan is unreadable ({e}); create the build again"),
                    failed_step: None,
                },
            )
            .await;
            return;
        }
    };
    let started = std::time::Instant::now();
    app.metrics.builds_running.inc();
    let cancel = CancelFlag::new();
    let (tx, mut rx) = watch::channel((Stage::Bootstrap, 0u8, "starting".to_owned()));
    let out_dir = app.settings.build_dir(&id);
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
            })
        })
    };
    tokio::pin!(task);
    let stopped_by_host = Mutex::new(false);
    let result = loop {
        tokio::select! {
            result = &mut task => break result,
            changed = rx.changed() => {
                if changed.is_ok() {
                    let (stage, percent, message) = rx.borrow_and_update().clone();
                    match app.store.build_progress(&id, stage.as_str(), percent, &message).await {
                        Ok(true) => cancel.cancel(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(build = %id, error = %e, "could not record progress"),
                    }
                }
                // Do not write more than a few times a second.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if app.store.cancel_requested(&id).await.unwrap_or(false) {
                    cancel.cancel();
                }
            }
            _ = shutdown.cancelled(), if !cancel.is_cancelled() => {
                *stopped_by_host.lock().expect("not poisoned") = true;
                cancel.cancel();
            }
        }
    };
    let by_host = *stopped_by_host.lock().expect("not poisoned");
    app.metrics.builds_running.dec();
    let seconds = started.elapsed().as_secs_f64();
    let status = match &result {
        Ok(Ok(_)) => "completed",
        Ok(Err(BuildError::Cancelled)) if !by_host => "cancelled",
        _ => "failed",
    };
    app.metrics.build_finished(status, seconds);
    match result {
        Ok(Ok(output)) => completed(app, &id, &output).await,
        Ok(Err(BuildError::Cancelled)) if by_host => {
            finish(
                app,
                &id,
                BuildEnd::Failed {
                    error: "interrupted: the OpenFactory host shut down during the build",
                    failed_step: None,
                },
            )
            .await
        }
        Ok(Err(BuildError::Cancelled)) => finish(app, &id, BuildEnd::Cancelled).await,
        Ok(Err(e)) => {
            tracing::info!(build = %id, error = %e, "build failed");
            finish(
                app,
                &id,
                BuildEnd::Failed {
                    error: &e.to_string(),
                    failed_step: e.failed_step().as_deref(),
                },
            )
            .await
        }
        Err(e) => {
            tracing::error!(build = %id, error = %e, "build thread panicked");
            finish(app, &id, BuildEnd::Failed {
                error: "the build stopped unexpectedly (an internal error); the server log has details",
                failed_step: None,
            })
            .await
        }
    }
}

async fn completed(app: &App, id: &str, output: &BuildOutput) {
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
    finish(
        app,
        id,
        BuildEnd::Completed {
            iso_sha256: &output.iso_sha256,
            iso_size_bytes: output.iso_size_bytes,
            result_json: &summary.to_string(),
        },
    )
    .await
}

async fn finish(app: &App, id: &str, end: BuildEnd<'_>) {
    if let Err(e) = app.store.finish_build(id, end).await {
        tracing::error!(build = %id, error = %e, "could not record the end of a build");
    }
}
