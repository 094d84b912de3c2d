//! The catalog: categories, search, and each template in full with the
//! plan its build would run. Open to everyone; a signed-in visitor also sees
//! their own recipes, and can build with one click.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use openfactory_core::Recipe;
use openfactory_core::plan::Plan;
use openfactory_core::proof;
use openfactory_service::recipes::{self, FeatureOut, ProofOut, RecipeSummary};
use serde::Deserialize;
use serde_json::Value;

use crate::Web;
use crate::layout::{self, Nav, csrf, snippet};
use crate::session::Viewer;

/// Longest search the page takes (the service bounds it too).
const MAX_QUERY: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct Browse {
    q: Option<String>,
    category: Option<String>,
}

fn tile(r: &RecipeSummary) -> Markup {
    html! {
        article.tile {
            h3 { a href={ "/catalog/" (r.id) } { (r.name) } }
            p { (first_sentence(&r.description)) }
            div.meta {
                @if r.source == recipes::CUSTOM { span.chip { "yours" } }
                @if let Some(p) = &r.proof { (proof_badge(p)) }
                span.chip.grey { (r.base_image) }
                @for f in &r.features { span.chip { (f) } }
            }
        }
    }
}

/// What the catalog's last run says of a template: proven (when, with how
/// many checks), failed (what failed first), or not proven yet.
fn proof_badge(p: &ProofOut) -> Markup {
    let day = p.proven_at.as_deref().map(|t| t.get(..10).unwrap_or(t));
    html! {
        @match p.status {
            proof::Status::Proven => span.badge."s-proven" title={ "Built, booted and checked by the catalog run of " (p.proven_at.as_deref().unwrap_or_default()) } {
                "proven " (day.unwrap_or_default()) @if let Some(c) = &p.checks { " · " (c) " checks" }
            },
            proof::Status::Failed => span.badge."s-failed" title=(p.first_failure.as_deref().unwrap_or("its last catalog run failed")) {
                "failed its catalog run" @if let Some(c) = &p.checks { " · " (c) " checks" }
            },
            proof::Status::Unproven => span.badge."s-unproven" title="Changed since its last catalog run, or never run: not yet built and booted as it is now" {
                "not yet proven"
            },
        }
    }
}

/// A description's first sentence, for a tile.
fn first_sentence(text: &str) -> String {
    let sentence = match text.find(". ") {
        Some(i) => &text[..=i],
        None => text,
    };
    openfactory_core::rules::truncate(sentence, 200)
}

pub async fn index(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<Browse>,
) -> Response {
    let owner = viewer.owner();
    let search =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| openfactory_core::rules::truncate(s, MAX_QUERY));
    let category = q.category.as_deref().filter(|c| !c.is_empty());
    let categories = recipes::categories(&web.app, owner.as_ref()).await;
    let listed = recipes::list(&web.app, owner.as_ref(), category, search.as_deref()).await;
    let all: usize = web.app.planner.catalog.templates.len();
    let current = category.and_then(|c| {
        web.app
            .planner
            .catalog
            .categories
            .iter()
            .find(|k| k.name.eq_ignore_ascii_case(c))
    });
    let body = html! {
        div.page-head {
            div {
                h1 { (current.map_or("Template catalog", |c| c.title.as_str())) }
                p { (current.map_or("Ready-made recipes for bootable Debian images. Open one to see its features, packages and the exact build plan, then build it here or from your assistant.", |c| c.description.as_str())) }
            }
        }
        div.layout-side {
            nav.side aria-label="Categories" {
                h2 { "Categories" }
                @let all_href = match &search { Some(s) => format!("/catalog?q={}", crate::form::encode(s)), None => "/catalog".into() };
                a href=(all_href) aria-current=[current.is_none().then_some("page")] { span { "All templates" } span.count { (all) } }
                @if let Ok(c) = &categories {
                    @for k in &c.categories {
                        @let href = match &search {
                            Some(s) => format!("/catalog?category={}&q={}", k.name, crate::form::encode(s)),
                            None => format!("/catalog?category={}", k.name),
                        };
                        a href=(href) aria-current=[(current.map(|c| &c.name) == Some(&k.name)).then_some("page")] {
                            span { (k.title) } span.count { (k.count) }
                        }
                    }
                }
            }
            div {
                form.search role="search" method="get" action="/catalog" {
                    @if let Some(c) = current { input type="hidden" name="category" value=(c.name); }
                    label.sr-only for="q" { "Search templates" }
                    input #q type="search" name="q" value=[search.as_deref()] maxlength=(MAX_QUERY)
                        placeholder="Search by name, package, feature or tag: docker, nginx, gxp…";
                    button.btn.primary type="submit" { "Search" }
                }
                @match &listed {
                    Err(e) => div.flash.bad role="alert" { (layout::say(e)) }
                    Ok(list) if list.recipes.is_empty() => {
                        div.card { (layout::empty("No templates match",
                            "Try fewer or other words: the search looks at names, descriptions, tags, packages and features.",
                            Some(("/catalog", "Show all templates")))) }
                    }
                    Ok(list) => {
                        p.muted.small role="status" {
                            (list.total) " template" @if list.total != 1 { "s" }
                            @if let Some(s) = &search { " matching “" (s) "”" }
                        }
                        div.grid.grid-3 { @for r in &list.recipes { (tile(r)) } }
                    }
                }
            }
        }
    };
    layout::page(
        &viewer,
        current.map_or("Catalog", |c| c.title.as_str()),
        Nav::Catalog,
        body,
    )
}

pub async fn show(State(web): State<Arc<Web>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let owner = viewer.owner();
    let found = async {
        let id = super::from_path(openfactory_service::RecipeId::parse("recipe_id", &id))?;
        recipes::get(&web.app, owner.as_ref(), &id).await
    };
    let details = match found.await {
        Ok(d) => d,
        Err(e) if !e.is_not_found() => {
            return layout::error_page(&viewer, e.kind.http_status(), "Template", &layout::say(&e));
        }
        Err(_) => {
            return layout::error_page(
                &viewer,
                StatusCode::NOT_FOUND,
                "Template not found",
                "There is no template (or recipe of yours) with this id. The catalog lists them all.",
            );
        }
    };
    let planned = match serde_json::to_value(&details.recipe) {
        Ok(value) => recipes::plan_value(&web.app, value).await,
        Err(e) => Err(openfactory_service::Error::internal(e.to_string())),
    };
    let features = recipes::features(&web.app);
    let r = &details.recipe;
    let category = web
        .app
        .planner
        .catalog
        .categories
        .iter()
        .find(|c| c.name == details.category);
    let toml_text = toml::to_string(r).unwrap_or_default();
    let body = html! {
        div.crumbs {
            a href="/catalog" { "Catalog" } " / "
            @if let Some(c) = category { a href={ "/catalog?category=" (c.name) } { (c.title) } }
        }
        div.page-head {
            div {
                h1 { (r.name) }
                div.actions.tags {
                    @if details.source == recipes::CUSTOM { span.chip { "your recipe" } }
                    @if let Some(p) = &details.proof { (proof_badge(p)) }
                    span.chip.grey { (r.base_image) }
                    @for t in &r.tags { span.chip.grey { "#" (t) } }
                }
            }
            div.actions {
                @if viewer.account.is_some() {
                    form method="post" action="/builds" {
                        (csrf(&viewer))
                        input type="hidden" name="recipe" value=(details.id);
                        button.btn.primary type="submit" { "Build this image" }
                    }
                } @else {
                    a.btn.primary href={ "/signin?next=" (crate::form::encode(&format!("/catalog/{}", details.id))) } { "Sign in to build" }
                }
            }
        }
        div.grid.grid-2 {
            div {
                section.card aria-labelledby="about" {
                    h2 #about { "About" }
                    @for para in r.description.split("\n\n") { p { (para) } }
                    (system(r))
                }
                section.card aria-labelledby="features" {
                    h2 #features { "Features" }
                    @if r.features.is_empty() { p.muted { "No features: a plain Debian base with the recipe's own packages and files." } }
                    @for f in &r.features {
                        (feature(f.name.as_str(), &f.options, features.features.iter().find(|i| i.name == f.name)))
                    }
                }
                section.card aria-labelledby="contents" {
                    h2 #contents { "Contents" }
                    (contents(r))
                }
            }
            div {
                section.card aria-labelledby="build-it" {
                    h2 #build-it { "Build it from your assistant" }
                    p.muted.small { "With OpenFactory connected over MCP, ask in plain words, or call the tool yourself." }
                    (snippet("ask", "Ask", &format!("Build the {} template and tell me when the ISO is ready.", details.id)))
                    (snippet("tool", "MCP tool call", &format!("create_build {{\"recipe\": \"{}\"}}", details.id)))
                    (snippet("cli", "On this machine (as root)", &format!("openfactory build {} -o {}.iso", details.id, details.id)))
                }
                section.card aria-labelledby="plan" {
                    h2 #plan { "Plan preview" }
                    @match &planned {
                        Ok(out) => @match &out.plan {
                            Some(plan) => (plan_preview(plan)),
                            None => {
                                div.flash.bad role="alert" {
                                    "This recipe does not plan with the installed plugins:"
                                    ul { @for e in &out.errors { li { code { (e.path.to_string()) } ": " (e.message) } } }
                                }
                            }
                        },
                        Err(e) => div.flash.bad role="alert" { (layout::say(e)) }
                    }
                }
                section.card {
                    details {
                        summary { "Recipe as TOML" }
                        (snippet("toml", "recipe.toml", &toml_text))
                    }
                }
            }
        }
    };
    layout::page(&viewer, &r.name, Nav::Catalog, body)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn system(r: &Recipe) -> Markup {
    html! {
        dl.kv {
            dt { "Base image" } dd { (r.base_image) " (" (r.architecture) ")" }
            dt { "Host name" } dd { code { (r.effective_hostname()) } }
            dt { "Time zone" } dd { (r.timezone) }
            dt { "Locale" } dd { (r.locale) }
            dt { "Guest agent" } dd { (yes_no(r.guest_agent)) @if r.guest_agent { span.muted { " (test runs can reach inside)" } } }
        }
    }
}

fn feature(
    name: &str,
    options: &std::collections::BTreeMap<String, Value>,
    info: Option<&FeatureOut>,
) -> Markup {
    html! {
        div.check {
            div.check-head {
                h3 { (name) }
                @if let Some(i) = info { span.muted.small { "v" (i.version) " · " (i.category) } }
                @else { span.badge.s-failed { "not installed" } }
            }
            @if let Some(i) = info { p.small { (i.summary) } }
            @if !options.is_empty() {
                dl.kv.small.mt-s {
                    @for (k, v) in options {
                        dt { code { (k) } }
                        dd { (option_value(v)) }
                    }
                }
            }
            @if let Some(i) = info {
                @let props = schema_options(&i.options_schema);
                @if !props.is_empty() {
                    details.mt-s {
                        summary.small { "All " (props.len()) " options" }
                        div.table-wrap role="region" aria-label="Options" tabindex="0" {
                            table.data {
                                thead { tr { th scope="col" { "Option" } th scope="col" { "Type" } th scope="col" { "Default" } th scope="col" { "What it does" } } }
                                tbody {
                                    @for (k, kind, default, about) in &props {
                                        tr { td { code { (k) } } td.small { (kind) } td.small { code { (default) } } td.small { (about) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn option_value(v: &Value) -> String {
    match v {
        Value::String(s) => openfactory_core::rules::truncate(s, 300),
        other => openfactory_core::rules::truncate(&other.to_string(), 300),
    }
}

/// A feature's options from its JSON Schema: name, type, default, description.
fn schema_options(schema: &Value) -> Vec<(String, String, String, String)> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, p)| {
            let kind = match p.get("type") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
                _ if p.get("enum").is_some() => "one of".into(),
                _ => String::new(),
            };
            let kind = match p.get("enum").and_then(Value::as_array) {
                Some(values) => format!(
                    "{kind}: {}",
                    values
                        .iter()
                        .map(option_value)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => kind,
            };
            let default = p.get("default").map(option_value).unwrap_or_default();
            let about = p
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (name.clone(), kind, default, about)
        })
        .collect()
}

fn contents(r: &Recipe) -> Markup {
    html! {
        h3 { "Packages" }
        @if r.packages.is_empty() { p.muted.small { "None beyond the base and what features install." } }
        @else { p.actions { @for p in &r.packages { span.chip.grey { (p) } } } }
        @if !r.services.is_empty() {
            h3 { "Services enabled" }
            p.actions { @for s in &r.services { span.chip.grey { (s) } } }
        }
        @if !r.users.is_empty() {
            h3 { "Users" }
            div.table-wrap role="region" aria-label="Users" tabindex="0" { table.data {
                thead { tr { th scope="col" { "User" } th scope="col" { "sudo" } th scope="col" { "Groups" } th scope="col" { "SSH keys" } } }
                tbody { @for u in &r.users {
                    tr { td { code { (u.name) } } td { (yes_no(u.sudo)) } td.small { (u.groups.join(", ")) } td { (u.ssh_authorized_keys.len()) } }
                } }
            } }
        }
        @if !r.files.is_empty() {
            h3 { "Files written" }
            ul.small { @for f in &r.files { li { code { (f.path) } " " span.muted { "(" (f.mode) ", " (f.content.len()) " bytes)" } } } }
        }
        h3 { "Networking and security" }
        dl.kv.small {
            dt { "DHCP" } dd { (yes_no(r.networking.dhcp)) }
            @if !r.networking.nameservers.is_empty() { dt { "Name servers" } dd { (r.networking.nameservers.join(", ")) } }
            dt { "Allowed ports" } dd {
                @if r.networking.allowed_ports.is_empty() { "only those features open" }
                @for p in &r.networking.allowed_ports { span.chip.grey { (p.port) "/" (p.protocol.to_string()) } " " }
            }
            dt { "SSH root login" } dd { (yes_no(r.security.root_login)) }
            dt { "SSH passwords" } dd { (yes_no(r.security.password_authentication)) }
            @if !r.kernel_args.is_empty() { dt { "Kernel arguments" } dd { code { (r.kernel_args.join(" ")) } } }
        }
    }
}

/// The plan: its steps in order, by where each comes from, and its checks.
pub fn plan_preview(plan: &Plan) -> Markup {
    html! {
        p.small.muted {
            (plan.steps.len()) " steps and " (plan.checks.len()) " boot checks, on " (plan.suite) "/" (plan.architecture)
            ". Recipe digest " code.break { (plan.recipe_digest.short()) } "."
        }
        ol.steps {
            @for s in &plan.steps {
                li { span { span.chip.grey { (s.source) } } span.break { (s.step.to_string()) } }
            }
        }
        h3.mt { "Boot checks" }
        ol.steps {
            @for c in &plan.checks {
                li { span { span.chip.grey { (c.source) } } span.break { code { (c.name) } " " span.muted { (c.description) } } }
            }
        }
    }
}
