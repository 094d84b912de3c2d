//! The overview: for a visitor, what OpenFactory is and how to connect an
//! assistant; for a signed-in account, its recent builds, VMs and test runs.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use openfactory_service::{auth, builds, recipes, test_runs, vms};
use openfactory_store::OwnerId;

use crate::Web;
use crate::layout::{self, Nav, snippet, status, when};
use crate::session::Viewer;

pub async fn page(State(web): State<Arc<Web>>, viewer: Viewer) -> Response {
    match viewer.owner() {
        Some(owner) => dashboard(&web, &viewer, &owner).await,
        None => landing(&web, &viewer).await,
    }
}

fn sse_snippet(web: &Web) -> Markup {
    let config = serde_json::to_string_pretty(&serde_json::json!({
        "mcpServers": { "openfactory": { "url": web.sse_url() } }
    }))
    .unwrap_or_default();
    snippet("connect", "MCP client configuration", &config)
}

async fn landing(web: &Web, viewer: &Viewer) -> Response {
    let categories = recipes::categories(&web.app, None).await.ok();
    let body = html! {
        section.hero {
            div {
                h1 { "Bootable Debian images, from a recipe or a sentence." }
                p.lead {
                    "OpenFactory builds real ISOs from real Debian packages, boots them as VMs and tests them. "
                    "Ask your AI assistant over MCP, or use this console."
                }
                div.actions {
                    a.btn.primary href="/catalog" { "Browse the catalog" }
                    a.btn href="/signup" { "Create an account" }
                }
            }
            div.card {
                h2 { "Connect your assistant" }
                p.small.muted { "Claude, Cursor, MCP Inspector… point any MCP client at the SSE endpoint:" }
                (sse_snippet(web))
                p.small.muted { "With an account, add an API key so your builds follow you; " a href="/signup" { "sign up" } " and create one in Settings." }
            }
        }
        @if let Some(c) = categories {
            h2 { "Start from a template" }
            div.grid.grid-3.mt {
                @for k in &c.categories {
                    article.tile {
                        h3 { a href={ "/catalog?category=" (k.name) } { (k.title) } }
                        p { (k.description) }
                        div.meta { span.chip.grey { (k.count) " templates" } }
                    }
                }
            }
        }
    };
    layout::page(viewer, "Image factory", Nav::Overview, body)
}

async fn dashboard(web: &Web, viewer: &Viewer, owner: &OwnerId) -> Response {
    let app = &web.app;
    let recent = builds::list(app, owner, None, Some(6)).await.ok();
    let active = builds::usage(app, owner).await.map_or(0, |u| u.active);
    let machines = vms::list(app, owner, None).await.ok();
    let runs = test_runs::list(app, owner, None, Some(5)).await.ok();
    let has_key = match &viewer.account {
        Some(a) => auth::keys(&app.store, &a.id)
            .await
            .map(|keys| keys.iter().any(|k| k.revoked_at.is_none()))
            .unwrap_or(true),
        None => true,
    };
    let running = machines.as_ref().map_or(0, |m| {
        m.vms
            .iter()
            .filter(|v| v.state == openfactory_service::vms::VmState::Running)
            .count()
    });
    let body = html! {
        div.page-head {
            div {
                h1 { "Overview" }
                p { "Your builds, VMs and test runs, whether you started them here or from your assistant." }
            }
            div.actions { a.btn.primary href="/catalog" { "New build" } }
        }
        @if !has_key {
            div.flash.info role="status" {
                strong { "Connect your assistant. " }
                "Create an MCP API key in " a href="/settings" { "Settings" } " and paste its configuration into Claude, Cursor or Claude Code."
            }
        }
        div.stats {
            div.stat { a href="/builds?status=running" { strong { (active) } span { "builds queued or running" } } }
            div.stat { a href="/builds" { strong { (recent.as_ref().map_or(0, |r| r.count)) } span { "recent builds" } } }
            div.stat { a href="/vms" { strong { (running) } span { "VMs running" } } }
            div.stat { a href="/test-runs" { strong { (runs.as_ref().map_or(0, |r| r.count)) } span { "recent test runs" } } }
        }
        div.grid.grid-2 {
            section.card aria-labelledby="recent-builds" {
                div.card-head { h2 #recent-builds { "Recent builds" } a.small href="/builds" { "All builds" } }
                @match &recent {
                    Some(r) if !r.builds.is_empty() => div.table-wrap role="region" aria-label="Recent builds" tabindex="0" { table.data {
                        caption.sr-only { "Recent builds" }
                        thead { tr { th scope="col" { "Build" } th scope="col" { "Recipe" } th scope="col" { "Status" } th scope="col" { "Started" } } }
                        tbody { @for b in &r.builds { tr {
                            td { a.mono href={ "/builds/" (b.build_id) } { (b.build_id) } }
                            td { (b.recipe_name) }
                            td { (status(b.status)) @if b.status == openfactory_store::BuildStatus::Running { " " span.small.muted { (b.progress) "%" } } }
                            td.small.nowrap { (when(&b.created_at)) }
                        } } }
                    } },
                    _ => (layout::empty("No builds yet", "Pick a template and build it.", Some(("/catalog", "Browse the catalog")))),
                }
            }
            div {
                section.card aria-labelledby="vms-title" {
                    div.card-head { h2 #vms-title { "VMs" } a.small href="/vms" { "All VMs" } }
                    @match &machines {
                        Some(m) if !m.vms.is_empty() => ul.plain.stack { @for v in &m.vms { li { a href={ "/vms/" (v.name) } { (v.name) } " " (layout::vm_state(v.state)) } } },
                        _ => p.muted { "No VMs. A completed build's page creates one." },
                    }
                }
                section.card aria-labelledby="runs-title" {
                    div.card-head { h2 #runs-title { "Test runs" } a.small href="/test-runs" { "All test runs" } }
                    @match &runs {
                        Some(r) if !r.runs.is_empty() => ul.plain.stack { @for t in &r.runs { li {
                            a.mono href={ "/test-runs/" (t.run_id) } { (t.run_id) } " " (status(t.status))
                            @if let (Some(p), Some(n)) = (t.passed, t.total) { span.small.muted { " " (p) "/" (n) } }
                        } } },
                        _ => p.muted { "No test runs. A completed build's page starts one." },
                    }
                }
            }
        }
    };
    layout::page(viewer, "Overview", Nav::Overview, body)
}
