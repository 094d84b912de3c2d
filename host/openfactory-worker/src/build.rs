//! Run one build: the pipeline on a blocking thread, progress reported
//! through the lease (each report is a heartbeat, and says whether the owner
//! asked to cancel), the outputs published, the end reported. A lease lost
//! meanwhile stops the build and discards its result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openfactory_build::pipeline::BuildOutput;
use openfactory_build::{BuildError, BuildJob, Builder, CancelFlag, Observer, Stage};
use openfactory_store::Lease;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::{BuildOutcome, BuildTask, Control, ControlError};

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

/// How the executor's loop ended.
enum Stopped {
    /// The build ran to its end (whatever that was).
    Ran,
    /// This worker is shutting down: hand the job back.
    ByHost,
    /// The lease is gone: say nothing more.
    Lost,
}

pub async fn run<C: Control>(
    control: &C,
    builder: &Arc<Builder>,
    task: BuildTask,
    shutdown: &CancellationToken,
) {
    let BuildTask { lease, plan } = task;
    let id = lease.id.clone();
    let started = Instant::now();
    let cancel = CancelFlag::new();
    let (tx, mut rx) = watch::channel((Stage::Bootstrap, 0u8, "starting".to_owned()));
    let out_dir = control.build_dir(&id);
    let preface = preface(&lease);
    let thread = {
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
    tokio::pin!(thread);
    let mut stopped = Stopped::Ran;
    let result = loop {
        let reply = tokio::select! {
            result = &mut thread => break result,
            changed = rx.changed() => {
                let reply = if changed.is_ok() {
                    let (stage, percent, message) = rx.borrow_and_update().clone();
                    Some(control.progress(&lease, stage.as_str(), percent, &message, None).await)
                } else {
                    None
                };
                // Do not report more than a few times a second.
                tokio::time::sleep(Duration::from_millis(250)).await;
                reply
            }
            _ = tokio::time::sleep(HEARTBEAT) => Some(control.heartbeat(&lease).await),
            _ = shutdown.cancelled(), if !cancel.is_cancelled() => {
                stopped = Stopped::ByHost;
                cancel.cancel();
                None
            }
        };
        match reply {
            Some(Ok(signal)) if signal.cancel => cancel.cancel(),
            Some(Err(ControlError::LeaseLost { .. })) if !matches!(stopped, Stopped::Lost) => {
                tracing::warn!(build = %id, "the build's lease was lost (it was requeued): stopping it");
                stopped = Stopped::Lost;
                cancel.cancel();
            }
            Some(Err(e)) => tracing::warn!(build = %id, error = %e, "could not report progress"),
            _ => {}
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let outcome = match (stopped, result) {
        (Stopped::Lost, _) => return,
        (Stopped::ByHost, Ok(Err(BuildError::Cancelled))) => {
            let reason = "handed back: its worker shut down during the build; it runs again when a worker is free";
            if let Err(e) = control.release(&lease, reason).await {
                tracing::warn!(build = %id, error = %e, "could not hand the build back");
            }
            return;
        }
        (_, Ok(Ok(output))) => match control.publish(&lease).await {
            Ok(()) => completed(&output),
            Err(ControlError::LeaseLost { .. }) => return,
            Err(e) => BuildOutcome::Failed {
                error: format!("the build's outputs could not be stored: {e}"),
                failed_step: None,
            },
        },
        (_, Ok(Err(BuildError::Cancelled))) => BuildOutcome::Cancelled,
        (_, Ok(Err(e))) => {
            tracing::info!(build = %id, error = %e, "build failed");
            // The log tells why: publish it (the rest may not exist).
            let _ = control.publish(&lease).await;
            BuildOutcome::Failed {
                error: e.to_string(),
                failed_step: e.failed_step(),
            }
        }
        (_, Err(e)) => {
            tracing::error!(build = %id, error = %e, "build thread panicked");
            BuildOutcome::Failed {
                error: "the build stopped unexpectedly (an internal error); the worker's log has details".into(),
                failed_step: None,
            }
        }
    };
    if let Err(e) = control.finish_build(&lease, outcome, seconds).await {
        tracing::error!(build = %id, error = %e, "could not record the end of a build");
    }
}

fn completed(output: &BuildOutput) -> BuildOutcome {
    let result = serde_json::json!({
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
    tracing::info!(sha256 = %output.iso_sha256, size = output.iso_size_bytes, "build completed");
    BuildOutcome::Completed {
        iso_sha256: output.iso_sha256.clone(),
        iso_size_bytes: output.iso_size_bytes,
        result,
    }
}
