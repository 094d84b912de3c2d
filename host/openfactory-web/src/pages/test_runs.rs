//! Test runs: the owner's list, one run's checks with their evidence and the
//! VM's serial console (live while it runs), starting a run of a completed
//! build, stopping one, and its JUnit XML.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use openfactory_service::test_runs::{self, RunArgs, TestResults};
use openfactory_service::{BuildId, RunId};
use openfactory_testrun::{CheckResult, CheckStatus};
use serde::Deserialize;

use super::{Part, from_path};
use crate::Web;
use crate::form::{Empty, SignedForm};
use crate::layout::{self, Nav, action, status, when};
use crate::session::{SignedIn, redirect_with};

pub async fn index(State(web): State<Arc<Web>>, user: SignedIn) -> Response {
    let SignedIn { viewer, owner, .. } = user;
    let listed = test_runs::list(&web.app, &owner, None, Some(100)).await;
    let body = html! {
        div.page-head {
            div {
                h1 { "Test runs" }
                p { "Each run boots a build in a throwaway VM, runs its checks inside the guest, and removes the VM." }
            }
        }
        @match &listed {
            Err(e) => div.flash.bad role="alert" { (layout::say(e)) }
            Ok(list) if list.runs.is_empty() => div.card {
                (layout::empty("No test runs yet",
                    "Open a completed build and press Run tests, or ask your assistant to run_tests on a build.",
                    Some(("/builds?status=completed", "Your completed builds"))))
            }
            Ok(list) => div.card { div.table-wrap role="region" aria-label="Your test runs" tabindex="0" { table.data {
                caption.sr-only { "Your test runs" }
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Build" } th scope="col" { "Status" }
                    th scope="col" { "Checks" } th scope="col" { "Progress" } th scope="col" { "Started" }
                } }
                tbody { @for r in &list.runs {
                    @let live = r.status.is_active();
                    tr {
                        td { a.mono href={ "/test-runs/" (r.run_id) } { (r.run_id) } }
                        td { a.mono href={ "/builds/" (r.build_id) } { (r.build_id) } }
                        td { (status(r.status)) }
                        td { @if let (Some(p), Some(t)) = (r.passed, r.total) { (p) " / " (t) " passed" } }
                        td.small.minw {
                            @if live { (layout::progress(r.progress, &format!("Test run {} progress", r.run_id))) }
                            span.muted { (openfactory_core::rules::truncate(&r.message, 80)) }
                        }
                        td.small.nowrap { (when(&r.created_at)) }
                    }
                } }
            } } }
        }
    };
    layout::live_page(
        &viewer,
        "Test runs",
        Nav::TestRuns,
        listed
            .as_ref()
            .is_ok_and(|l| l.runs.iter().any(|r| r.status.is_active())),
        body,
    )
}

fn check(c: &CheckResult) -> Markup {
    let settled = matches!(c.status, CheckStatus::Passed | CheckStatus::Skipped);
    html! {
        article.check {
            div.check-head {
                h3 { (c.name) }
                div.actions {
                    span.small.muted { (format!("{:.1}", c.duration_seconds)) " s · " (c.attempts) " attempt" @if c.attempts != 1 { "s" } }
                    (status(c.status.as_str()))
                }
            }
            p.small.muted { (c.description) }
            p { (c.message) }
            @if !c.command.is_empty() {
                details open[!settled] {
                    summary.small { "Evidence" }
                    dl.kv.small {
                        dt { "Command" } dd { code.break { (c.command) } }
                        @if let Some(code) = c.exit_code { dt { "Exit code" } dd { (code) } }
                    }
                    @if !c.stdout.trim().is_empty() { pre.log tabindex="0" aria-label={ "Output of " (c.name) } { (c.stdout) } }
                    @if !c.stderr.trim().is_empty() { pre.log tabindex="0" aria-label={ "Errors of " (c.name) } { (c.stderr) } }
                }
            }
        }
    }
}

/// Totals, every check so far, and the serial console; refreshes itself
/// while the run is queued or running, and reloads the page at its end.
fn results(r: &TestResults) -> Markup {
    let live = r.status.is_active();
    html! {
        div #results data-live=[live.then(|| format!("/test-runs/{}?part=results", r.run_id))] data-final[!live] data-reload[live] {
            section.card aria-labelledby="summary-title" {
                div.card-head {
                    h2 #summary-title { "Summary" }
                    span role="status" aria-live="polite" { (status(r.status)) }
                }
                @if live {
                    (layout::progress(r.progress, "Test run progress"))
                }
                p.mt-s { (r.message) }
                div.totals {
                    div { strong { (r.passed) } "passed" }
                    div { strong { (r.failed) } "failed" }
                    div { strong { (r.total) } "checks" }
                    @if let Some(b) = r.boot_seconds { div { strong { (format!("{b:.0}")) " s" } "to boot" } }
                    @if let Some(d) = r.duration_seconds { div { strong { (format!("{d:.0}")) " s" } "in all" } }
                    @if let Some(a) = &r.accelerator { div { strong { (a) } "accelerator" } }
                }
            }
            section.card aria-labelledby="checks-title" {
                h2 #checks-title { "Checks" }
                @if r.checks.is_empty() { p.muted { "No check has finished yet." } }
                @for c in &r.checks { (check(c)) }
            }
            section.card aria-labelledby="serial-title" {
                h2 #serial-title { "Serial console" }
                @if r.serial_log.is_empty() { p.muted { "Kept when the run ends." } }
                @else { pre.log tabindex="0" aria-label="The VM's serial console" { @for l in &r.serial_log { (l) "\n" } } }
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
        let id = from_path(RunId::parse("run_id", &id))?;
        test_runs::find(&web.app, &owner, &id).await
    };
    let run = match found.await {
        Ok(run) => run,
        Err(e) => return layout::service_error(&viewer, "Test run", &e),
    };
    let r = test_runs::results(&run, false);
    match part.part.as_deref() {
        Some("results") => return layout::fragment(results(&r)),
        Some(_) => return (StatusCode::NOT_FOUND, "no such part\n").into_response(),
        None => {}
    }
    let active = r.status.is_active();
    let body = html! {
        div.crumbs { a href="/test-runs" { "Test runs" } " / " span.mono { (r.run_id) } }
        div.page-head {
            div {
                h1 { "Test run " span.mono { (r.run_id) } }
                p { "Of build " a.mono href={ "/builds/" (r.build_id) } { (r.build_id) } " · queued " (when(&r.created_at)) }
            }
            div.actions {
                @if active {
                    (action(&viewer, &format!("/test-runs/{}/stop", r.run_id), "Stop run", "danger", Some("Stop this test run? Its VM is removed; finished checks are kept.")))
                } @else {
                    a.btn.small href={ "/test-runs/" (r.run_id) "/junit.xml" } download { "JUnit XML" }
                }
            }
        }
        (results(&r))
    };
    layout::live_page(
        &viewer,
        &format!("Test run {}", r.run_id),
        Nav::TestRuns,
        active,
        body,
    )
}

#[derive(Debug, Deserialize)]
pub struct NewRun {}

pub async fn create(
    State(web): State<Arc<Web>>,
    Path(build_id): Path<String>,
    SignedForm { user, .. }: SignedForm<NewRun>,
) -> Response {
    let args = RunArgs {
        tests: None,
        memory_mb: None,
        vcpus: None,
        timeout_seconds: None,
    };
    let created = async {
        let id = from_path(BuildId::parse("build_id", &build_id))?;
        test_runs::create(&web.app, &user.owner, &id, args).await
    };
    match created.await {
        Ok(run) => redirect_with(
            &web,
            &format!("/test-runs/{}", run.run_id),
            true,
            &format!(
                "Test run {} is queued with {} checks.",
                run.run_id,
                run.checks.len()
            ),
        ),
        Err(e) if e.is_not_found() => layout::service_error(&user.viewer, "Build", &e),
        Err(e) => redirect_with(
            &web,
            &format!("/builds/{}#test", crate::form::encode(&build_id)),
            false,
            &layout::say(&e),
        ),
    }
}

pub async fn stop(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let stopped = async {
        let id = from_path(RunId::parse("run_id", &id))?;
        test_runs::stop(&web.app, &user.owner, &id).await
    };
    match stopped.await {
        Ok(stopped) => redirect_with(
            &web,
            &format!("/test-runs/{id}"),
            true,
            &layout::say_next(&stopped.message),
        ),
        Err(e) => layout::service_error(&user.viewer, "Test run", &e),
    }
}

pub async fn junit(
    State(web): State<Arc<Web>>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        let id = from_path(RunId::parse("run_id", &id))?;
        test_runs::find(&web.app, &user.owner, &id).await
    };
    let run = match found.await {
        Ok(run) => run,
        Err(e) => return layout::service_error(&user.viewer, "Test run", &e),
    };
    match test_runs::results(&run, true).junit_xml {
        Some(xml) => {
            let disposition = format!("attachment; filename=\"test-run-{}.xml\"", run.id);
            let mut response = (
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                xml,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, v);
            }
            response
        }
        None => layout::error_page(
            &user.viewer,
            StatusCode::CONFLICT,
            "Not finished yet",
            "The JUnit report is written when the run ends. Come back when it has.",
        ),
    }
}
