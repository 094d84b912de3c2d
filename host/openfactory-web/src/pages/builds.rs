//! Builds: the owner's list with live status, one build in full (stages,
//! progress, log tail, timings, downloads with checksums), and the actions
//! the build tools offer: queue, retry, cancel, delete.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use openfactory_build::progress::Stage;
use openfactory_service::builds::{self, BuildDetails, BuildStatusOut, BuildSummary};
use openfactory_service::{BuildId, Error, test_runs, vms};
use openfactory_store::{BuildStatus, OwnerId};
use serde::Deserialize;
use serde_json::Value;

use super::{Part, from_path};
use crate::Web;
use crate::downloads::{self, Artifact};
use crate::form::{Empty, SignedForm};
use crate::layout::{self, Nav, action, csrf, snippet, status, when};
use crate::session::{SignedIn, redirect_with};

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    status: Option<String>,
}

const FILTERS: [&str; 6] = [
    "all",
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
];

/// The builds table's rows; while any build is queued or running, they
/// refresh themselves (one request for the whole table).
fn rows(builds: &[BuildSummary], filter: Option<&str>) -> Markup {
    let live = builds.iter().any(|b| b.status.is_active());
    let url = format!(
        "/builds?part=rows{}",
        filter.map(|f| format!("&status={f}")).unwrap_or_default()
    );
    html! {
        tbody data-live=[live.then_some(url)] data-final[!live] {
            @for b in builds { (row(b)) }
        }
    }
}

fn row(b: &BuildSummary) -> Markup {
    let live = b.status.is_active();
    html! {
        tr {
            td { a.mono href={ "/builds/" (b.build_id) } { (b.build_id) } }
            td { (b.recipe_name) }
            td { (status(b.status)) }
            td.minw {
                @if live {
                    (layout::progress(b.progress, &format!("Build {} progress", b.build_id)))
                    @if let Some(stage) = &b.stage { span.small.muted { (stage) } }
                } @else if let Some(e) = &b.error {
                    span.small.muted title=(e) { (openfactory_core::rules::truncate(e, 60)) }
                }
            }
            td { @for f in &b.features { span.chip.grey { (f) } " " } }
            td.nowrap.small { (when(&b.created_at)) }
        }
    }
}

pub async fn index(
    State(web): State<Arc<Web>>,
    user: SignedIn,
    Query(filter): Query<Filter>,
    Query(part): Query<Part>,
) -> Response {
    let SignedIn { viewer, owner, .. } = user;
    let wanted = filter
        .status
        .as_deref()
        .filter(|s| *s != "all" && !s.is_empty());
    let listed = match wanted.map(str::parse::<BuildStatus>).transpose() {
        Ok(status) => builds::list(&web.app, &owner, status, Some(100)).await,
        Err(e) => Err(openfactory_service::Error::invalid(
            "status",
            format!("status: {e}"),
        )),
    };
    match (part.part.as_deref(), &listed) {
        (Some("rows"), Ok(list)) => return layout::fragment(rows(&list.builds, wanted)),
        (Some(_), _) => return (StatusCode::NOT_FOUND, "no such part\n").into_response(),
        (None, _) => {}
    }
    let any_active = listed
        .as_ref()
        .is_ok_and(|l| l.builds.iter().any(|b| b.status.is_active()));
    let usage = builds::usage(&web.app, &owner).await.ok();
    let body = html! {
        div.page-head {
            div {
                h1 { "Builds" }
                p { "Every build you started, here or from your assistant, newest first. Running builds update as you watch." }
            }
            div.actions { a.btn.primary href="/catalog" { "New build from the catalog" } }
        }
        nav.actions.mb aria-label="Filter by status" {
            @for f in FILTERS {
                @let on = wanted.unwrap_or("all") == f;
                a.btn.small.primary[on] href={ "/builds?status=" (f) } aria-current=[on.then_some("page")] { (f) }
            }
            @if let Some(u) = &usage {
                span.small.muted.ml-auto {
                    "Disk used by your builds: " (layout::bytes(u.disk_bytes))
                    @if u.max_disk_bytes > 0 { " of " (layout::bytes(u.max_disk_bytes)) }
                }
            }
        }
        @match &listed {
            Err(e) => div.flash.bad role="alert" { (layout::say(e)) }
            Ok(list) if list.builds.is_empty() => div.card {
                (layout::empty("No builds yet",
                    "Pick a template in the catalog and build it, or ask your assistant to build one over MCP.",
                    Some(("/catalog", "Browse the catalog"))))
            }
            Ok(list) => div.card {
                div.table-wrap role="region" aria-label="Your builds" tabindex="0" {
                    table.data {
                        caption.sr-only { "Your builds" }
                        thead { tr {
                            th scope="col" { "Build" } th scope="col" { "Recipe" } th scope="col" { "Status" }
                            th scope="col" { "Progress" } th scope="col" { "Features" } th scope="col" { "Started" }
                        } }
                        (rows(&list.builds, wanted))
                    }
                }
            }
        }
    };
    layout::live_page(&viewer, "Builds", Nav::Builds, any_active, body)
}

#[derive(Debug, Deserialize)]
pub struct NewBuild {
    #[serde(default)]
    recipe: String,
}

pub async fn create(
    State(web): State<Arc<Web>>,
    SignedForm { user, form }: SignedForm<NewBuild>,
) -> Response {
    let recipe = form.recipe.trim().to_owned();
    let back = format!("/catalog/{}", crate::form::encode(&recipe));
    match builds::create(&web.app, &user.owner, Value::String(recipe), None).await {
        Ok(created) => redirect_with(
            &web,
            &format!("/builds/{}", created.build_id),
            true,
            &format!(
                "Build {} of {} is queued. This page follows it.",
                created.build_id, created.recipe_name
            ),
        ),
        Err(e) => redirect_with(
            &web,
            &back,
            false,
            &openfactory_core::rules::truncate(&layout::say(&e), 900),
        ),
    }
}

/// The status panel: stages, progress, what runs now, the log's last lines.
/// It refreshes itself while the build is queued or running, and reloads
/// the page when the build ends (downloads and actions change then).
fn status_panel(b: &BuildStatusOut) -> Markup {
    let live = b.status.is_active();
    let failed = matches!(b.status, BuildStatus::Failed | BuildStatus::Cancelled);
    let reached = b
        .stage
        .and_then(|c| Stage::ALL.iter().position(|s| *s == c));
    html! {
        section.card #status-panel aria-labelledby="status-title"
            data-live=[live.then(|| format!("/builds/{}?part=status", b.build_id))]
            data-final[!live] data-reload[live] {
            div.card-head {
                h2 #status-title { "Status" }
                span role="status" aria-live="polite" { (status(b.status)) }
            }
            (layout::progress(b.progress, "Build progress"))
            ol.stages aria-label="Stages" {
                @for (i, stage) in Stage::ALL.iter().enumerate() {
                    @let class = match (reached, b.status) {
                        (_, BuildStatus::Completed) => "done",
                        (Some(r), _) if i < r => "done",
                        (Some(r), _) if i == r && failed => "failed",
                        (Some(r), BuildStatus::Running) if i == r => "now",
                        _ => "",
                    };
                    li class=(class) { (stage.as_str()) }
                }
            }
            p.mt {
                (b.message)
                @if let Some(s) = b.elapsed_seconds { span.muted { " · " (layout::duration(s)) } }
            }
            @if let Some(e) = &b.error {
                div.flash.bad role="alert" {
                    strong { "Error: " } (e)
                    @if let Some(step) = &b.failed_step { br; "Failed step: " code { (step) } }
                }
            }
            @if !b.log_tail.is_empty() {
                h3 { "Log " span.muted.small { "(last lines)" } }
                pre.log tabindex="0" aria-label="Last lines of the build log" { @for l in &b.log_tail { (l) "\n" } }
            }
        }
    }
}

fn downloads_card(d: &BuildDetails) -> Markup {
    let sha = d.iso_sha256.clone().unwrap_or_default();
    html! {
        section.card aria-labelledby="downloads" {
            h2 #downloads { "Downloads" }
            ul.stack.plain {
                @for a in Artifact::ALL {
                    @if d.artifacts.iter().any(|f| f == a.file()) {
                        li.actions {
                            a.btn.small.primary[a == Artifact::Iso] href={ "/builds/" (d.build_id) "/files/" (a.slug()) } download {
                                "Download"
                            }
                            span { (a.title()) }
                            @if a == Artifact::Iso { @if let Some(n) = d.iso_size_bytes { span.muted.small { (layout::bytes(n)) } } }
                            @if a == Artifact::Packages { @if let Some(n) = d.package_count { span.muted.small { (n) " packages" } } }
                        }
                    }
                }
            }
            @if !sha.is_empty() {
                (snippet("sha256", "SHA-256 of the ISO", &sha))
                p.small.muted { "Check a download with " code { "sha256sum -c" } " and this line:" }
                (snippet("sha256sum", "sha256sum line", &format!("{sha}  {}-{}.iso", d.recipe.get("name").and_then(Value::as_str).unwrap_or("image"), d.build_id)))
            }
        }
    }
}

async fn boot_and_test(
    web: &Web,
    owner: &OwnerId,
    id: &BuildId,
    d: &BuildDetails,
    csrf_field: Markup,
) -> Markup {
    let vms = vms::list(&web.app, owner, Some(id)).await;
    let runs = test_runs::list(&web.app, owner, Some(id), Some(10)).await;
    let limits = &web.app.vms;
    let suggested = format!(
        "{}-1",
        d.recipe
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("vm")
            .chars()
            .take(50)
            .collect::<String>()
    );
    html! {
        section.card aria-labelledby="boot" {
            h2 #boot { "Boot it" }
            form method="post" action={ "/builds/" (d.build_id) "/vms" } {
                (csrf_field.clone())
                div.row {
                    div.field {
                        label for="vm-name" { "VM name" }
                        input #vm-name name="name" type="text" required value=(suggested) maxlength="63"
                            pattern="[a-z0-9][a-z0-9\\-]*" aria-describedby="vm-name-help";
                    }
                    div.field.w-m {
                        label for="vm-memory" { "Memory (MiB)" }
                        input #vm-memory name="memory_mb" type="number" min="256" max=(limits.max_memory_mb) step="256" value="1024";
                    }
                    div.field.w-s {
                        label for="vm-vcpus" { "vCPUs" }
                        input #vm-vcpus name="vcpus" type="number" min="1" max=(limits.max_vcpus) value="1";
                    }
                    button.btn.primary type="submit" { "Create VM" }
                }
                p.help #vm-name-help { "Lowercase letters, digits and -. The VM boots the ISO at once; its screen opens in the VM's page." }
            }
            @if let Ok(list) = &vms { @if !list.vms.is_empty() {
                h3.mt { "VMs of this build" }
                ul { @for v in &list.vms { li { a href={ "/vms/" (v.name) } { (v.name) } " " (layout::vm_state(v.state)) } } }
            } }
        }
        section.card aria-labelledby="test" {
            h2 #test { "Test it" }
            p.small.muted { "Boot the ISO in a throwaway VM, run every check its recipe and features declare, then remove the VM." }
            form method="post" action={ "/builds/" (d.build_id) "/test-runs" } {
                (csrf_field)
                button.btn.primary type="submit" { "Run tests" }
            }
            @if let Ok(list) = &runs { @if !list.runs.is_empty() {
                h3.mt { "Test runs of this build" }
                ul { @for r in &list.runs {
                    li {
                        a.mono href={ "/test-runs/" (r.run_id) } { (r.run_id) } " " (status(r.status))
                        @if let (Some(p), Some(t)) = (r.passed, r.total) { span.small.muted { " " (p) "/" (t) " passed" } }
                    }
                } }
            } }
        }
    }
}

fn details_card(d: &BuildDetails) -> Markup {
    let stage_seconds = d
        .result
        .as_ref()
        .and_then(|r| r.get("stage_seconds"))
        .and_then(Value::as_object);
    html! {
        section.card aria-labelledby="details" {
            h2 #details { "Details" }
            dl.kv {
                dt { "Recipe digest" } dd.mono.break { (d.recipe_digest) }
                dt { "Queued" } dd { (when(&d.created_at)) }
                @if let Some(t) = &d.started_at { dt { "Started" } dd { (when(t)) } }
                @if let Some(t) = &d.finished_at { dt { "Finished" } dd { (when(t)) } }
                @if let Some(r) = &d.retry_of { dt { "Retry of" } dd { a.mono href={ "/builds/" (r) } { (r) } } }
                @if let Some(p) = &d.plan_summary {
                    dt { "Plan" } dd { (p.steps) " steps, " (p.checks) " boot checks" }
                    dt { "Features" } dd { @if p.features.is_empty() { "none" } @for f in &p.features { span.chip.grey { (f) } " " } }
                }
                @if let Some(stages) = stage_seconds {
                    dt { "Time per stage" }
                    dd { @for stage in Stage::ALL { @if let Some(s) = stages.get(stage.as_str()).and_then(Value::as_f64) {
                        span.chip.grey { (stage.as_str()) " " (s) " s" } " "
                    } } }
                }
                @if let Some(reused) = d.result.as_ref().and_then(|r| r.get("base_reused")).and_then(Value::as_bool) {
                    dt { "Base" } dd { @if reused { "from the cache" } @else { "bootstrapped for this build" } }
                }
            }
            details.mt {
                summary { "Recipe as built (JSON)" }
                (snippet("recipe-json", "recipe.json", &serde_json::to_string_pretty(&d.recipe).unwrap_or_default()))
            }
        }
    }
}

pub async fn show(
    State(web): State<Arc<Web>>,
    user: SignedIn,
    Path(id): Path<String>,
    Query(part): Query<Part>,
) -> Response {
    let SignedIn { viewer, owner, .. } = user;
    let found = async {
        let id = from_path(BuildId::parse("build_id", &id))?;
        let record = builds::find(&web.app, &owner, &id).await?;
        Ok::<_, Error>((id, record))
    };
    let (build_id, record) = match found.await {
        Ok(found) => found,
        Err(e) => return layout::service_error(&viewer, "Build", &e),
    };
    let current = builds::status_of(&web.app, &record).await;
    match part.part.as_deref() {
        Some("status") => return layout::fragment(status_panel(&current)),
        Some(_) => return (StatusCode::NOT_FOUND, "no such part\n").into_response(),
        None => {}
    }
    let d = match builds::details(&web.app, &owner, &build_id).await {
        Ok(d) => d,
        Err(e) => return layout::service_error(&viewer, "Build", &e),
    };
    let completed = record.status == BuildStatus::Completed;
    let active = record.status.is_active();
    let tests = if completed {
        Some(boot_and_test(&web, &owner, &build_id, &d, csrf(&viewer)).await)
    } else {
        None
    };
    let body = html! {
        div.crumbs { a href="/builds" { "Builds" } " / " span.mono { (d.build_id) } }
        div.page-head {
            div {
                h1 { (record.recipe_name) " " span.muted.mono.sub { (d.build_id) } }
                p {
                    "Recipe "
                    @if web.app.planner.catalog.template(&record.recipe_name).is_some() {
                        a href={ "/catalog/" (record.recipe_name) } { (record.recipe_name) }
                    } @else { (record.recipe_name) }
                    " · queued " (when(&d.created_at))
                }
            }
            div.actions {
                @if active { (action(&viewer, &format!("/builds/{id}/cancel"), "Cancel build", "danger", Some("Cancel this build? Its scratch space is removed."))) }
                @if matches!(record.status, BuildStatus::Failed | BuildStatus::Cancelled) {
                    (action(&viewer, &format!("/builds/{id}/retry"), "Retry", "primary", None))
                }
                @if !active {
                    (action(&viewer, &format!("/builds/{id}/delete"), "Delete", "danger", Some("Delete this build and its ISO? This cannot be undone.")))
                }
                a.btn.small href={ "/builds/" (d.build_id) "/files/log" } { "Full log" }
            }
        }
        div.grid.grid-2 {
            div {
                (status_panel(&current))
                @if let Some(t) = tests { (t) }
            }
            div {
                @if completed { (downloads_card(&d)) }
                (details_card(&d))
            }
        }
    };
    layout::live_page(
        &viewer,
        &format!("Build {} · {}", d.build_id, record.recipe_name),
        Nav::Builds,
        active,
        body,
    )
}

/// `/builds/{id}/files/{iso|log|packages|sbom}`, for the signed-in owner.
pub async fn file(
    State(web): State<Arc<Web>>,
    user: SignedIn,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(artifact) = Artifact::from_slug(&name) else {
        return layout::error_page(
            &user.viewer,
            StatusCode::NOT_FOUND,
            "No such file",
            "A build has an iso, a log, a packages manifest and an sbom.",
        );
    };
    let found = async {
        let id = from_path(BuildId::parse("build_id", &id))?;
        builds::find(&web.app, &user.owner, &id).await
    };
    match found.await {
        Ok(build) => downloads::serve(&web.app, &build, artifact, request).await,
        Err(e) => layout::service_error(&user.viewer, "Build", &e),
    }
}

/// What a build action leads to: on to `to`, saying `done`; back to the
/// build, saying why not; or "not found".
fn answer(
    web: &Web,
    user: &SignedIn,
    id: &str,
    outcome: Result<String, Error>,
    done: &str,
) -> Response {
    match outcome {
        Ok(to) => redirect_with(web, &to, true, done),
        Err(e) if e.is_not_found() => layout::service_error(&user.viewer, "Build", &e),
        Err(e) => redirect_with(web, &format!("/builds/{id}"), false, &layout::say(&e)),
    }
}

pub async fn cancel(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let outcome = async {
        let build_id = from_path(BuildId::parse("build_id", &id))?;
        builds::cancel(&web.app, &user.owner, &build_id).await
    }
    .await
    .map(|_| format!("/builds/{id}"));
    answer(
        &web,
        &user,
        &id,
        outcome,
        &format!("Cancelling build {id}."),
    )
}

pub async fn retry(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let outcome = async {
        let build_id = from_path(BuildId::parse("build_id", &id))?;
        builds::retry(&web.app, &user.owner, &build_id).await
    }
    .await
    .map(|b| format!("/builds/{}", b.build_id));
    answer(
        &web,
        &user,
        &id,
        outcome,
        &format!("Build {id} is queued again, as a new build."),
    )
}

pub async fn delete(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let outcome = async {
        let build_id = from_path(BuildId::parse("build_id", &id))?;
        builds::delete(&web.app, &user.owner, &build_id).await
    }
    .await
    .map(|_| "/builds".to_owned());
    answer(
        &web,
        &user,
        &id,
        outcome,
        &format!("Build {id} and its files are deleted."),
    )
}
