//! The installed plugins: each feature's version, signer, WIT contract,
//! plugin digest, what it may see and touch, and its privileges; the sandbox every call runs in.
//! Operators also see where bundles live and those that failed to load.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::html;
use openfactory_plugin_host::Signer;

use crate::Web;
use crate::layout::{self, Nav};
use crate::session::Viewer;

pub async fn page(State(web): State<Arc<Web>>, viewer: Viewer) -> Response {
    let host = &web.app.planner.plugins;
    let limits = host.limits();
    let operator = viewer.is_operator();
    let plugins: Vec<_> = host.plugins().collect();
    let body = html! {
        div.page-head {
            div {
                h1 { "Plugins" }
                p { "Features are WebAssembly components that describe build steps and checks; they never run anything themselves. Each is verified against its signature and digests when it is installed and again at every start." }
            }
        }
        section.card aria-labelledby="sandbox-title" {
            h2 #sandbox-title { "Sandbox" }
            p.small { "Every plugin call runs in a fresh wasmtime instance with nothing granted: no network, no host files, no environment, no clock beyond WASI's." }
            dl.kv {
                dt { "CPU per call" } dd { (format!("{:.1}", limits.cpu.as_secs_f64())) " s (then interrupted)" }
                dt { "CPU per plan" } dd { (format!("{:.1}", limits.plan.as_secs_f64())) " s for all of one feature's calls for one recipe" }
                dt { "Memory per instance" } dd { (layout::bytes(limits.memory_bytes as u64)) }
                dt { "Steps or checks per call" } dd { "at most " (limits.max_items) }
                dt { "What a plugin sees" } dd { "only the recipe fields it declares it reads, plus the recipe's name and base image" }
                dt { "What a plugin may do" } dd { "only what its signed bundle declares (below); privileged steps only where an operator granted them" }
            }
        }
        @if operator && !host.problems().is_empty() {
            section.card.bad-edge aria-labelledby="problems-title" {
                h2 #problems-title { "Bundles that did not load" }
                ul { @for p in host.problems() { li { code { (p.bundle) } ": " (p.reason) } } }
            }
        }
        section.card aria-labelledby="installed-title" {
            div.card-head {
                h2 #installed-title { "Installed features" }
                span.small.muted { (plugins.len()) " loaded" }
            }
            div.table-wrap role="region" aria-label="Installed features" tabindex="0" { table.data {
                caption.sr-only { "Installed features" }
                thead { tr {
                    th scope="col" { "Feature" } th scope="col" { "Version" } th scope="col" { "Signed by" }
                    th scope="col" { "Reads" } th scope="col" { "Needs" } th scope="col" { "May touch" } th scope="col" { "Contract" } th scope="col" { "Bundle" }
                } }
                tbody { @for p in &plugins {
                    @let info = &p.feature.info;
                    tr {
                        td {
                            strong { (info.name) } " " span.chip.grey { (info.category) }
                            br; span.small.muted { (info.summary) }
                            @if operator { br; span.small.mono.muted { (p.bundle.dir.display().to_string()) } }
                        }
                        td { (info.version) }
                        td.small {
                            @match &p.signer {
                                Signer::Trusted { key_id, comment } => {
                                    span.badge.s-completed { "verified" } br;
                                    (comment) br; code.break { (key_id) }
                                }
                                Signer::Unverified { reason } => {
                                    span.badge.s-failed { "unsigned" } br; span.muted { (reason) }
                                }
                            }
                        }
                        td.small { @if info.reads.is_empty() { span.muted { "nothing else" } } @for r in &info.reads { code { (r) } " " } }
                        td.small {
                            @for r in &info.requires { "requires " code { (r) } br; }
                            @for c in &info.conflicts { "conflicts with " code { (c) } br; }
                        }
                        td.small {
                            @let caps = &p.feature.capabilities;
                            @for (what, items) in caps.summary() { span.muted { (what) ": " } (items) br; }
                            @for privilege in caps.privileges() {
                                @if p.feature.granted.contains(&privilege) {
                                    span.badge.s-running title=(privilege.meaning()) { (privilege.name()) " — granted" } " "
                                } @else {
                                    span.badge.s-failed title=(privilege.meaning()) { (privilege.name()) " — not granted" } " "
                                }
                            }
                            @if caps.summary().is_empty() { span.muted { "nothing (declares no capabilities)" } }
                        }
                        td.small.mono { (p.bundle.manifest.wit) }
                        td.small.mono.break title=(p.feature.digest) { "sha256:" (p.feature.digest.get(..16).unwrap_or(&p.feature.digest)) "…" }
                    }
                } }
            } }
        }
    };
    layout::page(&viewer, "Plugins", Nav::Plugins, body)
}
