//! The build tools' logic: queue a build, read its state, its log and its
//! download link. Every lookup goes through the owner-scoped store, so one
//! caller never sees another's builds (not even that they exist).

use std::path::PathBuf;

use openfactory_build::pipeline::{ISO_FILE, LOG_FILE, PACKAGES_FILE, SBOM_FILE};
use openfactory_core::plan::{self, Plan};
use openfactory_core::rules;
use openfactory_store::{BuildRecord, BuildStatus, CancelOutcome, NewBuild, OwnerId};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::app::{App, store_error};
use crate::links::{LINK_LIFETIME_SECONDS, LinkSigner, rfc3339, unix_now};
use crate::recipes;

/// What the build tools need besides the store.
pub struct BuildSettings {
    /// `<home>/builds`: one directory per build with its ISO, log, manifest, SBOM.
    pub dir: PathBuf,
    pub links: LinkSigner,
    /// Base of download URLs, e.g. `http://127.0.0.1:8080`; `None` over stdio.
    pub public_url: Option<String>,
    /// Queued + running builds one owner may have.
    pub max_active_per_owner: u32,
    /// Bytes one owner's finished builds may keep on disk; 0: no limit.
    pub max_disk_bytes_per_owner: u64,
    /// Wakes the workers when a build is queued.
    pub wake: tokio::sync::Notify,
}

impl BuildSettings {
    pub fn build_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

/// Longest `get_build_status` wait: under the 60 s many clients allow a call.
pub const MAX_WAIT_SECONDS: u64 = 50;

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildCreated {
    pub build_id: String,
    pub status: String,
    pub recipe_id: String,
    pub recipe_name: String,
    pub features: Vec<String>,
    /// Recipe warnings (the build goes ahead with them).
    pub warnings: Vec<openfactory_core::Diagnostic>,
    pub message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildSummary {
    pub build_id: String,
    pub recipe_name: String,
    pub recipe_id: String,
    pub features: Vec<String>,
    pub status: String,
    pub stage: Option<String>,
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
    pub status: String,
    /// bootstrap, apply, image or finish.
    pub stage: Option<String>,
    /// Overall percentage.
    pub progress: u8,
    /// What the build is doing now, e.g. `step 12/31: docker: install docker.io`.
    pub message: String,
    pub elapsed_seconds: Option<u64>,
    pub error: Option<String>,
    /// The step that failed, as `source: step`.
    pub failed_step: Option<String>,
    /// The last lines of the build log.
    pub log_tail: Vec<String>,
    pub next: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildDetails {
    pub build_id: String,
    pub status: String,
    pub stage: Option<String>,
    pub progress: u8,
    pub message: String,
    pub error: Option<String>,
    pub failed_step: Option<String>,
    pub recipe_id: String,
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
    pub sha256: String,
    pub size_bytes: u64,
    /// For `sha256sum -c`.
    pub sha256sum_line: String,
    /// The ISO on the server's disk (for a local stdio server).
    pub path: String,
    pub note: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CancelOut {
    pub build_id: String,
    pub status: String,
    pub message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BuildLog {
    pub build_id: String,
    pub status: String,
    /// Lines returned (the last `tail_lines` of the log).
    pub lines: Vec<String>,
    pub total_lines: usize,
    pub truncated: bool,
}

/// Build ids are 12 lowercase hex digits.
pub fn new_build_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

fn check_build_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "build_id `{}` is not a build id; list_builds shows yours (12 hex digits, e.g. 3f9c2a1d4e5b)",
            rules::truncate(id, 40).escape_debug()
        ));
    }
    Ok(())
}

fn not_found(id: &str) -> String {
    format!("build `{id}` not found; list_builds shows your builds")
}

/// One of the caller's builds, or "not found" (also for other owners' builds).
pub async fn find(app: &App, owner: &OwnerId, id: &str) -> Result<BuildRecord, String> {
    check_build_id(id)?;
    app.store
        .build(owner, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))
}

/// Queue a build of `recipe`: a recipe object, or the id of a template or of
/// one of the caller's recipes. Nothing is queued if the recipe is invalid.
pub async fn create(
    app: &App,
    owner: &OwnerId,
    recipe: Value,
    retry_of: Option<&str>,
) -> Result<BuildCreated, String> {
    let value = match recipe {
        Value::String(id) => {
            let details = recipes::find(app, owner, &id)
                .await
                .map_err(|e| format!("recipe: {e} (or pass a full recipe object)"))?;
            serde_json::to_value(details.recipe).map_err(|e| e.to_string())?
        }
        Value::Object(_) => recipe,
        other => {
            return Err(format!(
                "recipe: expected a recipe object or a recipe id string, got {}",
                rules::json_kind(&other)
            ));
        }
    };
    let active = app.store.active_builds(owner).await.map_err(store_error)?;
    let limit = app.builds.max_active_per_owner;
    if active >= limit {
        return Err(format!(
            "you already have {active} builds queued or running (the limit is {limit}); wait for one to finish, or stop one with cancel_build"
        ));
    }
    let quota = app.builds.max_disk_bytes_per_owner;
    if quota > 0 {
        let used = app
            .store
            .owner_disk_bytes(owner)
            .await
            .map_err(store_error)?;
        if used >= quota {
            return Err(format!(
                "disk quota: your builds keep {} of your {} on this server; delete builds you no longer need with delete_build (list_builds shows them with their sizes), then build again",
                openfactory_build::cache::human_bytes(used),
                openfactory_build::cache::human_bytes(quota)
            ));
        }
    }
    let recipe_json = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    let outcome = recipes::run_planner(app, move |set| plan::plan_value(value, set, true)).await?;
    let (errors, warnings) = recipes::split(outcome.diagnostics);
    let Some(plan) = outcome.plan.filter(|_| errors.is_empty()) else {
        return Err(format!(
            "the recipe is invalid; nothing was built. Fix every error and call create_build again:\n{}",
            recipes::render(&errors)
        ));
    };
    let id = new_build_id();
    let features: Vec<String> = plan.features.iter().map(|f| f.name.clone()).collect();
    let plan_json = serde_json::to_string(&plan).map_err(|e| e.to_string())?;
    let record = app
        .store
        .create_build(
            owner,
            &NewBuild {
                id: &id,
                recipe_id: plan.recipe_id.as_str(),
                recipe_name: &plan.recipe_name,
                recipe_json: &recipe_json,
                plan_json: &plan_json,
                features: &features,
                retry_of,
            },
        )
        .await
        .map_err(store_error)?;
    app.builds.wake.notify_one();
    Ok(BuildCreated {
        build_id: record.id,
        status: record.status.to_string(),
        recipe_id: record.recipe_id,
        recipe_name: record.recipe_name,
        features,
        warnings,
        message: "The build is queued. Follow it with get_build_status (pass wait_seconds to wait for progress); \
                  when it is completed, get_iso_download_url gives the ISO."
            .into(),
    })
}

fn summary(b: BuildRecord) -> BuildSummary {
    BuildSummary {
        build_id: b.id,
        recipe_name: b.recipe_name,
        recipe_id: b.recipe_id,
        features: b.features,
        status: b.status.to_string(),
        stage: b.stage,
        progress: b.progress,
        created_at: b.created_at,
        finished_at: b.finished_at,
        error: b.error,
    }
}

pub async fn list(
    app: &App,
    owner: &OwnerId,
    status: Option<String>,
    limit: Option<i64>,
) -> Result<BuildList, String> {
    let status = status
        .map(|s| {
            s.parse::<BuildStatus>()
                .map_err(|e| format!("status_filter: {e}"))
        })
        .transpose()?;
    let limit = match limit {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            return Err(format!(
                "limit: {n} is out of range; use 1 to 100 (default 20)"
            ));
        }
    };
    let builds: Vec<BuildSummary> = app
        .store
        .builds(owner, status, limit)
        .await
        .map_err(store_error)?
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

/// The last `n` lines of a build's log (bounded read from the end).
pub fn log_tail(app: &App, id: &str, n: usize) -> (Vec<String>, usize) {
    let path = app.builds.build_dir(id).join(LOG_FILE);
    let Ok(text) = std::fs::read(&path) else {
        return (Vec::new(), 0);
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    let tail = lines[total.saturating_sub(n)..]
        .iter()
        .map(|l| rules::truncate(l, 400))
        .collect();
    (tail, total)
}

fn next_hint(b: &BuildRecord) -> String {
    match b.status {
        BuildStatus::Queued => "queued behind other builds; call get_build_status again (wait_seconds up to 50)".into(),
        BuildStatus::Running => "running; call get_build_status again (wait_seconds up to 50) or get_build_log for the full log".into(),
        BuildStatus::Completed => "completed; get_iso_download_url gives the ISO".into(),
        BuildStatus::Failed => "failed; read `error` and the log tail, fix the recipe, or call retry_build".into(),
        BuildStatus::Cancelled => "cancelled; retry_build starts it again".into(),
    }
}

pub fn status_of(app: &App, b: &BuildRecord) -> BuildStatusOut {
    let (log_tail, _) = log_tail(app, &b.id, 10);
    BuildStatusOut {
        build_id: b.id.clone(),
        status: b.status.to_string(),
        stage: b.stage.clone(),
        progress: b.progress,
        message: b.message.clone(),
        elapsed_seconds: elapsed(b),
        error: b.error.clone(),
        failed_step: b.failed_step.clone(),
        log_tail,
        next: next_hint(b),
    }
}

pub async fn details(app: &App, owner: &OwnerId, id: &str) -> Result<BuildDetails, String> {
    let b = find(app, owner, id).await?;
    let plan: Option<Plan> = serde_json::from_str(&b.plan_json).ok();
    let plan_summary = plan.as_ref().map(recipes::PlanSummary::of);
    let dir = app.builds.build_dir(&b.id);
    let package_count = std::fs::read(dir.join(PACKAGES_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
        .map(|p| p.len());
    let artifacts = [ISO_FILE, LOG_FILE, PACKAGES_FILE, SBOM_FILE]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .map(String::from)
        .collect();
    Ok(BuildDetails {
        elapsed_seconds: elapsed(&b),
        build_id: b.id,
        status: b.status.to_string(),
        stage: b.stage,
        progress: b.progress,
        message: b.message,
        error: b.error,
        failed_step: b.failed_step,
        recipe_id: b.recipe_id,
        recipe: serde_json::from_str(&b.recipe_json).unwrap_or(Value::Null),
        plan_summary,
        retry_of: b.retry_of,
        created_at: b.created_at,
        started_at: b.started_at,
        finished_at: b.finished_at,
        iso_sha256: b.iso_sha256,
        iso_size_bytes: b.iso_size,
        result: b.result_json.and_then(|j| serde_json::from_str(&j).ok()),
        package_count,
        artifacts,
    })
}

pub fn iso_filename(b: &BuildRecord) -> String {
    format!("{}-{}.iso", b.recipe_name, b.id)
}

pub async fn download_link(app: &App, owner: &OwnerId, id: &str) -> Result<DownloadLink, String> {
    let b = find(app, owner, id).await?;
    if b.status != BuildStatus::Completed {
        return Err(format!(
            "build `{id}` is {}, not completed: only completed builds have an ISO. {}",
            b.status,
            next_hint(&b)
        ));
    }
    let sha256 = b.iso_sha256.clone().unwrap_or_default();
    let expires = unix_now() + LINK_LIFETIME_SECONDS;
    let token = app.builds.links.sign("iso", &b.id, owner, expires);
    let filename = iso_filename(&b);
    let url = app.builds.public_url.as_ref().map(|base| {
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
        sha256,
        size_bytes: b.iso_size.unwrap_or(0),
        path: app
            .builds
            .build_dir(&b.id)
            .join(ISO_FILE)
            .display()
            .to_string(),
        note: format!(
            "The link works for {} minutes and supports HTTP Range (resumable downloads). Check the file with sha256sum.",
            LINK_LIFETIME_SECONDS / 60
        ),
        build_id: b.id,
    })
}

pub async fn retry(app: &App, owner: &OwnerId, id: &str) -> Result<BuildCreated, String> {
    let b = find(app, owner, id).await?;
    if !matches!(b.status, BuildStatus::Failed | BuildStatus::Cancelled) {
        return Err(format!(
            "build `{id}` is {}; only failed or cancelled builds can be retried (create_build makes a new one)",
            b.status
        ));
    }
    let recipe: Value = serde_json::from_str(&b.recipe_json).map_err(|_| {
        "the stored recipe of this build is unreadable; create a new build".to_owned()
    })?;
    create(app, owner, recipe, Some(&b.id)).await
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
pub async fn delete(app: &App, owner: &OwnerId, id: &str) -> Result<BuildDeleted, String> {
    let b = find(app, owner, id).await?;
    if b.status.is_active() {
        return Err(format!(
            "build `{id}` is {}; stop it with cancel_build first",
            b.status
        ));
    }
    let vms = app.store.vms(owner, Some(id)).await.map_err(store_error)?;
    if !vms.is_empty() {
        let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        return Err(format!(
            "build `{id}` is booted by your VMs {}; delete them with delete_vm first",
            names.join(", ")
        ));
    }
    let runs = app
        .store
        .test_runs(owner, Some(id), 100)
        .await
        .map_err(store_error)?;
    if runs.iter().any(|r| r.status.is_active()) {
        return Err(format!(
            "a test run of build `{id}` is queued or running; stop it with stop_test_run first"
        ));
    }
    let dir = app.builds.build_dir(id);
    let freed = dir_bytes(&dir);
    if !app
        .store
        .delete_build(owner, id)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(id));
    }
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(build = %id, error = %e, "could not remove a deleted build's files");
    }
    Ok(BuildDeleted {
        build_id: id.to_owned(),
        freed_bytes: freed,
        message: format!(
            "Deleted: its ISO and files are gone ({} freed); its test runs' results stay.",
            openfactory_build::cache::human_bytes(freed)
        ),
    })
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
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

pub async fn cancel(app: &App, owner: &OwnerId, id: &str) -> Result<CancelOut, String> {
    check_build_id(id)?;
    let outcome = app
        .store
        .cancel_build(owner, id)
        .await
        .map_err(store_error)?;
    let (status, message) = match outcome {
        CancelOutcome::Cancelled => ("cancelled", "The build was queued and will not run.".to_owned()),
        CancelOutcome::Requested => (
            "running",
            "Cancellation requested: the running step is being stopped and the build's scratch space removed; get_build_status shows `cancelled` within seconds.".to_owned(),
        ),
        CancelOutcome::AlreadyFinished(status) => {
            return Err(format!("build `{id}` already finished ({status}); there is nothing to cancel"));
        }
        CancelOutcome::NotFound => return Err(not_found(id)),
    };
    Ok(CancelOut {
        build_id: id.to_owned(),
        status: status.into(),
        message,
    })
}

/// A `tail_lines` argument: 1 to 5000, `default` when absent.
pub(crate) fn tail_lines_arg(value: Option<i64>, default: usize) -> Result<usize, String> {
    match value {
        None => Ok(default),
        Some(n) if (1..=5000).contains(&n) => Ok(n as usize),
        Some(n) => Err(format!(
            "tail_lines: {n} is out of range; use 1 to 5000 (default {default})"
        )),
    }
}

pub async fn log(
    app: &App,
    owner: &OwnerId,
    id: &str,
    tail_lines: Option<i64>,
) -> Result<BuildLog, String> {
    let b = find(app, owner, id).await?;
    let n = tail_lines_arg(tail_lines, 200)?;
    let (lines, total) = log_tail(app, &b.id, n);
    Ok(BuildLog {
        build_id: b.id,
        status: b.status.to_string(),
        truncated: total > lines.len(),
        total_lines: total,
        lines,
    })
}
