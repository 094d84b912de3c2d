//! The build tools' logic: queue a build, read its state, its log and its
//! download link. Every lookup goes through the owner-scoped store, so one
//! caller never sees another's builds (not even that they exist).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use openfactory_build::pipeline::{ISO_FILE, LOG_FILE, PACKAGES_FILE, SBOM_FILE};
use openfactory_build::progress::Stage;
use openfactory_core::plan::Plan;
use openfactory_core::rules;
use openfactory_store::{BuildRecord, BuildStatus, CancelOutcome, Needs, NewBuild, OwnerId};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::app::App;
use crate::error::{Error, Result};
use crate::ids::{BuildId, RecipeId};
use crate::links::{LINK_LIFETIME_SECONDS, rfc3339, unix_now};
use crate::next::{Action, Next};
use crate::recipes;

/// Longest wait for a build's progress: under the 60 s many clients allow a call.
pub const MAX_WAIT_SECONDS: u64 = 50;

/// The architecture images are built for (Debian's name): a worker must
/// run it to build them.
pub const BUILD_ARCH: &str = "amd64";
/// Scratch disk a build may need on its worker (the base, the image tree,
/// the squashfs and the ISO).
pub const BUILD_DISK_BYTES: u64 = 4 << 30;

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildCreated {
    pub build_id: String,
    pub status: BuildStatus,
    /// The recipe's content digest: the same recipe and plugins, the same digest.
    pub recipe_digest: String,
    pub recipe_name: String,
    pub features: Vec<String>,
    /// Recipe warnings (the build goes ahead with them).
    pub warnings: Vec<openfactory_core::Diagnostic>,
    /// What to do next.
    pub message: Next,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildSummary {
    pub build_id: String,
    pub recipe_name: String,
    /// The recipe's content digest: the same recipe and plugins, the same digest.
    pub recipe_digest: String,
    pub features: Vec<String>,
    pub status: BuildStatus,
    pub stage: Option<Stage>,
    pub progress: u8,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildList {
    pub builds: Vec<BuildSummary>,
    pub count: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildStatusOut {
    pub build_id: String,
    pub status: BuildStatus,
    /// bootstrap, apply, image or finish.
    pub stage: Option<Stage>,
    /// Overall percentage.
    pub progress: u8,
    /// What the build is doing now, e.g. `step 12/31: docker: install docker.io`.
    pub message: String,
    pub elapsed_seconds: Option<u64>,
    pub error: Option<String>,
    /// The step that failed, as `source: step`.
    pub failed_step: Option<String>,
    /// Which attempt this is: a job whose worker was lost goes back to the
    /// queue (at most 3 attempts in all); 0 while it waits for its first.
    pub attempt: u32,
    /// Why an earlier attempt ended before the job did, if one did.
    pub requeued_because: Option<String>,
    /// The last lines of the build log.
    pub log_tail: Vec<String>,
    /// What to do next, for this status.
    pub next: Next,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildDetails {
    pub build_id: String,
    pub status: BuildStatus,
    pub stage: Option<Stage>,
    pub progress: u8,
    pub message: String,
    pub error: Option<String>,
    pub failed_step: Option<String>,
    /// Which attempt this is: a job whose worker was lost goes back to the
    /// queue (at most 3 attempts in all); 0 while it waits for its first.
    pub attempt: u32,
    /// Why an earlier attempt ended before the job did, if one did.
    pub requeued_because: Option<String>,
    /// The recipe's content digest: the same recipe and plugins, the same digest.
    pub recipe_digest: String,
    /// The recipe as it was given (an object, as for validating a recipe).
    #[schemars(schema_with = "crate::schema::object")]
    pub recipe: Value,
    pub plan_summary: Option<recipes::PlanSummary>,
    pub retry_of: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub elapsed_seconds: Option<u64>,
    pub iso_sha256: Option<String>,
    pub iso_size_bytes: Option<u64>,
    /// Seconds per stage, squashfs layer sizes, the base used (completed builds).
    pub result: Option<Value>,
    /// Installed packages (completed builds).
    pub package_count: Option<usize>,
    pub artifacts: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DownloadLink {
    pub build_id: String,
    pub url: Option<String>,
    pub expires_at: String,
    pub filename: String,
    pub iso_sha256: String,
    pub iso_size_bytes: u64,
    /// For `sha256sum -c`.
    pub sha256sum_line: String,
    /// The ISO on the server's disk (for a local stdio server).
    pub path: String,
    pub note: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CancelOut {
    pub build_id: String,
    pub status: BuildStatus,
    pub message: Next,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildLog {
    pub build_id: String,
    pub status: BuildStatus,
    /// Lines returned (the last `tail_lines` of the log).
    pub lines: Vec<String>,
    /// The log's line count when the read reached its start (only the end of
    /// a long log is read, at most a few MiB): `null` for such a log.
    pub total_lines: Option<usize>,
    /// Whether the log has lines before `lines`.
    pub truncated: bool,
    /// The whole log's size.
    pub log_size_bytes: u64,
}

fn not_found(id: &BuildId) -> Error {
    Error::not_found(format!("build `{id}` not found")).see(Action::ListBuilds)
}

/// A value that should always serialise; if not, a logged internal error.
fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "{what}");
    Error::internal(format!("{what}: {e}"))
}

/// One of the caller's builds, or "not found" (also for other owners' builds).
pub async fn find(app: &App, owner: &OwnerId, id: &BuildId) -> Result<BuildRecord> {
    app.store
        .build(owner, id.as_str())
        .await?
        .ok_or_else(|| not_found(id))
}

/// What an owner's builds use of the server, against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Builds queued or running.
    pub active: u32,
    pub max_active: u32,
    /// Bytes the owner's finished builds keep on disk.
    pub disk_bytes: u64,
    /// 0: no quota.
    pub max_disk_bytes: u64,
}

/// The owner's active builds and disk use, with this server's limits.
pub async fn usage(app: &App, owner: &OwnerId) -> Result<Usage> {
    Ok(Usage {
        active: app.store.active_builds(owner).await?,
        max_active: app.settings.max_active_builds,
        disk_bytes: app.store.owner_disk_bytes(owner).await?,
        max_disk_bytes: app.settings.max_disk_bytes,
    })
}

/// Queue a build of `recipe`: a recipe object, or the id of a template or of
/// one of the caller's recipes. Nothing is queued if the recipe is invalid.
pub async fn create(
    app: &App,
    owner: &OwnerId,
    recipe: Value,
    retry_of: Option<&BuildId>,
) -> Result<BuildCreated> {
    let value = match recipe {
        Value::String(id) => {
            let suffix = |e: Error| {
                let e = e.prefixed("recipe: ");
                Error {
                    message: format!("{} (or pass a full recipe object)", e.message),
                    ..e
                }
            };
            let id = RecipeId::parse("recipe", &id).map_err(suffix)?;
            let details = recipes::find(app, owner, &id).await.map_err(suffix)?;
            serde_json::to_value(details.recipe)
                .map_err(|e| internal("recipe unserialisable", e))?
        }
        // A recipe without a name is named after its base and features.
        Value::Object(_) => {
            let mut recipe = recipe;
            if let Some(name) = openfactory_core::validate::suggested_name(&recipe) {
                recipe["name"] = Value::String(name);
            }
            recipe
        }
        other => {
            return Err(Error::invalid(
                "recipe",
                format!(
                    "recipe: expected a recipe object or a recipe id string, got {}",
                    rules::json_kind(&other)
                ),
            ));
        }
    };
    let Usage {
        active,
        max_active,
        disk_bytes,
        max_disk_bytes,
    } = usage(app, owner).await?;
    if active >= max_active {
        return Err(Error::limit_reached(format!(
            "you already have {active} builds queued or running (the limit is {max_active}); wait for one to finish, or stop one"
        ))
        .see(Action::CancelBuild));
    }
    if max_disk_bytes > 0 && disk_bytes >= max_disk_bytes {
        return Err(Error::limit_reached(format!(
            "disk quota: your builds keep {} of your {} on this server; to build again, delete builds you no longer need",
            openfactory_build::cache::human_bytes(disk_bytes),
            openfactory_build::cache::human_bytes(max_disk_bytes)
        ))
        .see(Action::DeleteBuild));
    }
    let recipe_json =
        serde_json::to_string(&value).map_err(|e| internal("recipe unserialisable", e))?;
    let outcome = app.planner.plan(value).await?;
    let (errors, warnings) = recipes::split(outcome.diagnostics);
    let Some(plan) = outcome.plan.filter(|_| errors.is_empty()) else {
        return Err(Error::invalid(
            "recipe",
            format!(
                "the recipe is invalid; nothing was built. Fix every error and build again:\n{}",
                recipes::render(&errors)
            ),
        ));
    };
    let id = BuildId::generate();
    let features: Vec<String> = plan.features.iter().map(|f| f.name.clone()).collect();
    let plan_json = serde_json::to_string(&plan).map_err(|e| internal("plan unserialisable", e))?;
    let record = app
        .store
        .create_build(
            owner,
            &NewBuild {
                id: id.as_str(),
                recipe_digest: plan.recipe_digest.as_str(),
                recipe_name: &plan.recipe_name,
                recipe_json: &recipe_json,
                plan_json: &plan_json,
                features: &features,
                retry_of: retry_of.map(BuildId::as_str),
                needs: Needs {
                    arch: BUILD_ARCH,
                    disk_bytes: BUILD_DISK_BYTES,
                },
            },
        )
        .await?;
    app.wake.builds.notify_one();
    Ok(BuildCreated {
        build_id: record.id,
        status: record.status,
        recipe_digest: record.recipe_digest,
        recipe_name: record.recipe_name,
        features,
        warnings,
        message: Next::new(
            "The build is queued",
            [
                Action::GetBuildStatus { wait: true },
                Action::GetIsoDownloadUrl,
            ],
        ),
    })
}

/// A stage as stored (`None` for a name this version does not know).
fn stage(stored: Option<&str>) -> Option<Stage> {
    stored.and_then(|s| s.parse().ok())
}

fn summary(b: BuildRecord) -> BuildSummary {
    BuildSummary {
        stage: stage(b.stage.as_deref()),
        build_id: b.id,
        recipe_name: b.recipe_name,
        recipe_digest: b.recipe_digest,
        features: b.features,
        status: b.status,
        progress: b.progress,
        created_at: b.created_at,
        finished_at: b.finished_at,
        error: b.error,
    }
}

/// The caller's builds, newest first, only those with `status` if given.
pub async fn list(
    app: &App,
    owner: &OwnerId,
    status: Option<BuildStatus>,
    limit: Option<i64>,
) -> Result<BuildList> {
    let limit = match limit {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            return Err(Error::invalid(
                "limit",
                format!("limit: {n} is out of range; use 1 to 100 (default 20)"),
            ));
        }
    };
    let builds: Vec<BuildSummary> = app
        .store
        .builds(owner, status, limit)
        .await?
        .into_iter()
        .map(summary)
        .collect();
    Ok(BuildList {
        count: builds.len(),
        builds,
    })
}

fn elapsed(b: &BuildRecord) -> Option<u64> {
    let start = b.started_unix?;
    let end = b.finished_unix.unwrap_or_else(unix_now);
    Some((end - start).max(0) as u64)
}

/// The end of a text file, read backwards in chunks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The last lines (each cut to 400 characters), oldest first.
    pub lines: Vec<String>,
    /// The file's line count, when the read reached its start.
    pub total_lines: Option<usize>,
    /// Whether the file has lines before `lines`.
    pub truncated: bool,
    /// The file's size.
    pub size_bytes: u64,
    /// How much was read to find them.
    pub read_bytes: u64,
}

/// Most a tail reads back from the end of a file, whatever `n` is.
pub const MAX_TAIL_BYTES: u64 = 4 << 20;
const TAIL_CHUNK: u64 = 64 << 10;

/// The last `n` lines of the file at `path`: reads chunks backwards from its
/// end until it has them, the file's start, or [`MAX_TAIL_BYTES`]. Lines as
/// [`str::lines`] splits them; a missing file is empty. Blocking.
pub fn tail_file(path: &Path, n: usize) -> std::io::Result<Tail> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    tail_of(file, size, n)
}

/// [`tail_file`] of anything readable backwards: a file, or the end of a
/// log fetched from object storage.
pub fn tail_of<R: Read + Seek>(mut file: R, size: u64, n: usize) -> std::io::Result<Tail> {
    let floor = size.saturating_sub(MAX_TAIL_BYTES);
    let mut start = size;
    let mut buf: Vec<u8> = Vec::new();
    // Newlines that end a line before the last one: n + 1 of them mean the
    // buffer holds n whole lines after the first (maybe partial) one.
    let mut newlines = 0usize;
    while start > floor && newlines <= n {
        let from = start.saturating_sub(TAIL_CHUNK).max(floor);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        let last = if start == size {
            chunk.len().saturating_sub(1)
        } else {
            chunk.len()
        };
        newlines += chunk[..last].iter().filter(|&&b| b == b'\n').count();
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let mut segments: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
    if buf.last() == Some(&b'\n') || buf.is_empty() {
        segments.pop();
    }
    let at_start = start == 0;
    if !at_start && !segments.is_empty() {
        // The first segment may begin mid-line.
        segments.remove(0);
    }
    let skip = segments.len().saturating_sub(n);
    let lines = segments[skip..]
        .iter()
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            rules::truncate(&String::from_utf8_lossy(l), 400)
        })
        .collect();
    Ok(Tail {
        lines,
        total_lines: at_start.then_some(segments.len()),
        truncated: !at_start || skip > 0,
        size_bytes: size,
        read_bytes: size - start,
    })
}

/// The last `n` lines of a build's log (a bounded read from its end, off the
/// async runtime). An unreadable log is empty, and logged.
pub async fn log_tail(app: &App, id: &str, n: usize) -> Tail {
    let dir = match app.artifacts.local_dir(id) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            // In object storage: its end, once the build has published it.
            return match app.artifacts.tail(id, LOG_FILE, MAX_TAIL_BYTES).await {
                Ok(Some(bytes)) => {
                    let size = bytes.len() as u64;
                    tail_of(std::io::Cursor::new(bytes), size, n).unwrap_or_default()
                }
                Ok(None) => Tail::default(),
                Err(e) => {
                    tracing::warn!(build = %id, error = %e, "could not read a build log");
                    Tail::default()
                }
            };
        }
        Err(e) => {
            tracing::warn!(build = %id, error = %e, "not a build id for the artifact store");
            return Tail::default();
        }
    };
    let path = dir.join(LOG_FILE);
    let read = tokio::task::spawn_blocking(move || tail_file(&path, n)).await;
    match read {
        Ok(Ok(tail)) => tail,
        Ok(Err(e)) => {
            tracing::warn!(build = %id, error = %e, "could not read a build log");
            Tail::default()
        }
        Err(e) => {
            tracing::error!(build = %id, error = %e, "the log reader failed");
            Tail::default()
        }
    }
}

/// What to do with a build in `status`.
pub fn next_for(status: BuildStatus) -> Next {
    match status {
        BuildStatus::Queued => Next::new(
            "queued behind other builds",
            [Action::GetBuildStatus { wait: true }],
        ),
        BuildStatus::Running => Next::new(
            "running",
            [Action::GetBuildStatus { wait: true }, Action::GetBuildLog],
        ),
        BuildStatus::Completed => Next::new("completed", [Action::GetIsoDownloadUrl]),
        BuildStatus::Failed => Next::new(
            "failed; read `error` and the log tail, fix the recipe",
            [Action::RetryBuild],
        ),
        BuildStatus::Cancelled => Next::new("cancelled", [Action::RetryBuild]),
    }
}

pub async fn status_of(app: &App, b: &BuildRecord) -> BuildStatusOut {
    let tail = log_tail(app, &b.id, 10).await;
    BuildStatusOut {
        build_id: b.id.clone(),
        status: b.status,
        stage: stage(b.stage.as_deref()),
        progress: b.progress,
        message: b.message.clone(),
        elapsed_seconds: elapsed(b),
        error: b.error.clone(),
        failed_step: b.failed_step.clone(),
        attempt: b.attempt,
        requeued_because: b.requeued_because.clone(),
        log_tail: tail.lines,
        next: next_for(b.status),
    }
}

pub async fn details(app: &App, owner: &OwnerId, id: &BuildId) -> Result<BuildDetails> {
    let b = find(app, owner, id).await?;
    let plan: Option<Plan> = serde_json::from_str(&b.plan_json).ok();
    let plan_summary = plan.as_ref().map(recipes::PlanSummary::of);
    let package_count = app
        .artifacts
        .read_small(&b.id, PACKAGES_FILE, 64 << 20)
        .await
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
        .map(|p| p.len());
    let mut artifacts = Vec::new();
    for name in [ISO_FILE, LOG_FILE, PACKAGES_FILE, SBOM_FILE] {
        if matches!(app.artifacts.head(&b.id, name).await, Ok(Some(_))) {
            artifacts.push(name.to_owned());
        }
    }
    Ok(BuildDetails {
        elapsed_seconds: elapsed(&b),
        stage: stage(b.stage.as_deref()),
        build_id: b.id,
        status: b.status,
        progress: b.progress,
        message: b.message,
        error: b.error,
        failed_step: b.failed_step,
        attempt: b.attempt,
        requeued_because: b.requeued_because,
        recipe_digest: b.recipe_digest,
        recipe: serde_json::from_str(&b.recipe_json).unwrap_or(Value::Null),
        plan_summary,
        retry_of: b.retry_of,
        created_at: b.created_at,
        started_at: b.started_at,
        finished_at: b.finished_at,
        iso_sha256: b.iso_sha256,
        iso_size_bytes: b.iso_size_bytes,
        result: b.result_json.and_then(|j| serde_json::from_str(&j).ok()),
        package_count,
        artifacts,
    })
}

pub fn iso_filename(b: &BuildRecord) -> String {
    format!("{}-{}.iso", b.recipe_name, b.id)
}

pub async fn download_link(app: &App, owner: &OwnerId, id: &BuildId) -> Result<DownloadLink> {
    let b = find(app, owner, id).await?;
    if b.status != BuildStatus::Completed {
        return Err(Error::conflict(format!(
            "build `{id}` is {}, not completed: only completed builds have an ISO",
            b.status
        )));
    }
    let sha256 = b.iso_sha256.clone().unwrap_or_default();
    let expires = unix_now() + LINK_LIFETIME_SECONDS;
    let token = app.signer.sign("iso", &b.id, owner, expires);
    let filename = iso_filename(&b);
    let url = app.settings.public_url.as_ref().map(|base| {
        format!(
            "{}/api/builds/{}/iso?token={token}",
            base.trim_end_matches('/'),
            b.id
        )
    });
    Ok(DownloadLink {
        url,
        expires_at: rfc3339(expires),
        sha256sum_line: format!("{sha256}  {filename}"),
        filename,
        iso_sha256: sha256,
        iso_size_bytes: b.iso_size_bytes.unwrap_or(0),
        path: match app.artifacts.local_dir(&b.id) {
            Ok(Some(dir)) => dir.join(ISO_FILE).display().to_string(),
            _ => format!("{}/{}/{ISO_FILE}", app.artifacts.location(), b.id),
        },
        note: format!(
            "The link works for {} minutes and supports HTTP Range (resumable downloads). Check the file with sha256sum.",
            LINK_LIFETIME_SECONDS / 60
        ),
        build_id: b.id,
    })
}

pub async fn retry(app: &App, owner: &OwnerId, id: &BuildId) -> Result<BuildCreated> {
    let b = find(app, owner, id).await?;
    if !matches!(b.status, BuildStatus::Failed | BuildStatus::Cancelled) {
        return Err(Error::conflict(format!(
            "build `{id}` is {}; only failed or cancelled builds can be retried (a new build of its recipe starts afresh)",
            b.status
        )));
    }
    let recipe: Value = serde_json::from_str(&b.recipe_json).map_err(|e| {
        tracing::error!(build = %id, error = %e, "stored recipe unreadable");
        Error::internal("the stored recipe of this build is unreadable; create a new build")
    })?;
    create(app, owner, recipe, Some(id)).await
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildDeleted {
    pub build_id: String,
    /// Bytes freed on the server (the ISO, its log, manifest and SBOM).
    pub freed_bytes: u64,
    pub message: String,
}

/// Delete a finished build: its files and its record. Refused while it runs,
/// while a VM boots it, or while a test run uses it.
pub async fn delete(app: &App, owner: &OwnerId, id: &BuildId) -> Result<BuildDeleted> {
    let b = find(app, owner, id).await?;
    if b.status.is_active() {
        return Err(
            Error::conflict(format!("build `{id}` is {}; stop it", b.status))
                .see(Action::CancelBuild),
        );
    }
    let vms = app.store.vms(owner, Some(id.as_str())).await?;
    if !vms.is_empty() {
        let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        return Err(Error::conflict(format!(
            "build `{id}` is booted by your VMs {}; delete them",
            names.join(", ")
        ))
        .see(Action::DeleteVm));
    }
    let runs = app.store.test_runs(owner, Some(id.as_str()), 100).await?;
    if runs.iter().any(|r| r.status.is_active()) {
        return Err(Error::conflict(format!(
            "a test run of build `{id}` is queued or running; stop it"
        ))
        .see(Action::StopTestRun));
    }
    let freed = match app.artifacts.local_dir(id.as_str()) {
        Ok(Some(dir)) => tokio::task::spawn_blocking(move || dir_bytes(&dir)).await?,
        _ => {
            let mut bytes = 0;
            for name in [ISO_FILE, LOG_FILE, PACKAGES_FILE, SBOM_FILE] {
                if let Ok(Some(meta)) = app.artifacts.head(id.as_str(), name).await {
                    bytes += meta.size_bytes;
                }
            }
            bytes
        }
    };
    if !app.store.delete_build(owner, id.as_str()).await? {
        return Err(not_found(id));
    }
    if let Err(e) = app.artifacts.delete_build(id.as_str()).await {
        tracing::error!(build = %id, error = %e, "could not remove a deleted build's files");
    }
    Ok(BuildDeleted {
        build_id: id.to_string(),
        freed_bytes: freed,
        message: format!(
            "Deleted: its ISO and files are gone ({} freed); its test runs' results stay.",
            openfactory_build::cache::human_bytes(freed)
        ),
    })
}

/// The bytes of the files directly in `dir`. Blocking.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub async fn cancel(app: &App, owner: &OwnerId, id: &BuildId) -> Result<CancelOut> {
    let outcome = app.store.cancel_build(owner, id.as_str()).await?;
    let (status, message) = match outcome {
        CancelOutcome::Cancelled => (
            BuildStatus::Cancelled,
            Next::say("The build was queued and will not run."),
        ),
        CancelOutcome::Requested => (
            BuildStatus::Running,
            Next::new(
                "Cancellation requested: the running step is being stopped and the build's scratch space removed; its status becomes `cancelled` within seconds",
                [Action::GetBuildStatus { wait: false }],
            ),
        ),
        CancelOutcome::AlreadyFinished(status) => {
            return Err(Error::conflict(format!(
                "build `{id}` already finished ({status}); there is nothing to cancel"
            )));
        }
        CancelOutcome::NotFound => return Err(not_found(id)),
    };
    Ok(CancelOut {
        build_id: id.to_string(),
        status,
        message,
    })
}

/// A `tail_lines` argument: 1 to 5000, `default` when absent.
pub(crate) fn tail_lines_arg(value: Option<i64>, default: usize) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(n) if (1..=5000).contains(&n) => Ok(n as usize),
        Some(n) => Err(Error::invalid(
            "tail_lines",
            format!("tail_lines: {n} is out of range; use 1 to 5000 (default {default})"),
        )),
    }
}

pub async fn log(
    app: &App,
    owner: &OwnerId,
    id: &BuildId,
    tail_lines: Option<i64>,
) -> Result<BuildLog> {
    let b = find(app, owner, id).await?;
    let n = tail_lines_arg(tail_lines, 200)?;
    let tail = log_tail(app, &b.id, n).await;
    Ok(BuildLog {
        build_id: b.id,
        status: b.status,
        lines: tail.lines,
        total_lines: tail.total_lines,
        truncated: tail.truncated,
        log_size_bytes: tail.size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("log");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_short_log_is_read_whole_with_its_count() {
        let dir = tempfile::tempdir().unwrap();
        for (text, n, lines, total, truncated) in [
            ("", 5, vec![], Some(0), false),
            ("a\nb\nc\n", 5, vec!["a", "b", "c"], Some(3), false),
            ("a\nb\nc", 2, vec!["b", "c"], Some(3), true),
            ("a\r\nb\r\n", 1, vec!["b"], Some(2), true),
            ("\n\nx\n", 3, vec!["", "", "x"], Some(3), false),
        ] {
            let tail = tail_file(&write(dir.path(), text), n).unwrap();
            assert_eq!(tail.lines, lines, "{text:?}");
            assert_eq!(tail.total_lines, total, "{text:?}");
            assert_eq!(tail.total_lines, Some(text.lines().count()), "{text:?}");
            assert_eq!(tail.truncated, truncated, "{text:?}");
        }
        assert_eq!(
            tail_file(&dir.path().join("missing"), 3).unwrap(),
            Tail::default()
        );
    }

    #[test]
    fn lines_across_chunk_boundaries_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let line = "é".repeat(150); // 300 bytes, not a divisor of the chunk
        let text: String = (0..1000).map(|i| format!("{i} {line}\n")).collect();
        let tail = tail_file(&write(dir.path(), &text), 500).unwrap();
        let want: Vec<String> = text
            .lines()
            .skip(500)
            .map(|l| rules::truncate(l, 400))
            .collect();
        assert_eq!(tail.lines, want);
        assert!(tail.truncated);
    }

    #[test]
    fn a_50_mb_log_gives_its_last_lines_without_being_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.log");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut i = 0u64;
        let mut written = 0u64;
        while written < 50 << 20 {
            let line = format!("line {i:08} of the build log, padded to look like apt output\n");
            out.write_all(line.as_bytes()).unwrap();
            written += line.len() as u64;
            i += 1;
        }
        out.flush().unwrap();
        drop(out);

        let tail = tail_file(&path, 200).unwrap();
        assert_eq!(tail.lines.len(), 200);
        assert_eq!(
            tail.lines[0],
            format!(
                "line {:08} of the build log, padded to look like apt output",
                i - 200
            )
        );
        assert!(tail.lines[199].starts_with(&format!("line {:08} ", i - 1)));
        assert!(tail.truncated);
        assert_eq!(tail.total_lines, None, "only the end was read");
        assert_eq!(tail.size_bytes, written);
        assert!(
            tail.read_bytes <= 2 * TAIL_CHUNK,
            "read {} bytes",
            tail.read_bytes
        );

        // Asking for more lines than fit the window still stops at the window.
        let tail = tail_file(&path, 5000).unwrap();
        assert_eq!(tail.lines.len(), 5000);
        let tail = tail_file(&path, usize::MAX).unwrap();
        assert!(
            tail.read_bytes <= MAX_TAIL_BYTES,
            "read {} bytes",
            tail.read_bytes
        );
        assert!(tail.lines.len() < 100_000 && tail.truncated);
    }

    #[test]
    fn next_steps_name_actions_not_tools() {
        for status in BuildStatus::ALL {
            let next = next_for(*status);
            assert!(!next.actions.is_empty());
            assert!(!next.sentence.contains('_'), "{}", next.sentence);
        }
        assert_eq!(
            next_for(BuildStatus::Running).actions,
            [Action::GetBuildStatus { wait: true }, Action::GetBuildLog]
        );
    }
}
