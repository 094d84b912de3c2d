//! VMs: the owner's list, one VM with its screen (noVNC in the page, on the
//! same token-guarded websocket bridge as `get_vm_console_url`) and its
//! serial console, and the lifecycle actions of the VM tools.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use openfactory_service::vms::{self, VmOut, VmState};
use openfactory_service::{Action, BuildId, Error, VmName};
use openfactory_store::OwnerId;
use serde::Deserialize;

use super::{Part, from_path};
use crate::Web;
use crate::form::{Empty, SignedForm, number};
use crate::layout::{self, Nav, action, when};
use crate::session::{SignedIn, redirect_with};

/// Serial console lines the VM page shows.
const SERIAL_LINES: i64 = 80;

fn actions(viewer: &crate::session::Viewer, v: &VmOut) -> Markup {
    let base = format!("/vms/{}", v.name);
    html! {
        div.actions {
            @if v.state == VmState::Running {
                (action(viewer, &format!("{base}/stop"), "Stop", "", None))
                form.inline method="post" action={ (base) "/stop" } data-confirm="Stop the VM at once, without shutting its system down?" {
                    (layout::csrf(viewer))
                    input type="hidden" name="force" value="true";
                    button.btn.small.danger type="submit" { "Force stop" }
                }
            } @else {
                (action(viewer, &format!("{base}/start"), "Start", "primary", None))
            }
            (action(viewer, &format!("{base}/delete"), "Delete", "danger",
                Some("Delete this VM? It is stopped if needed and its files are removed.")))
        }
    }
}

pub async fn index(State(web): State<Arc<Web>>, user: SignedIn) -> Response {
    let SignedIn { viewer, owner, .. } = user;
    let listed = vms::list(&web.app, &owner, None).await;
    let limits = &web.app.vms;
    let body = html! {
        div.page-head {
            div {
                h1 { "VMs" }
                p { "Virtual machines booting your completed builds. Open one to see its screen and serial console." }
            }
            span.small.muted { "Up to " (limits.max_vms) " VMs, " (limits.max_memory_mb) " MiB and " (limits.max_vcpus) " vCPUs each" }
        }
        @match &listed {
            Err(e) => div.flash.bad role="alert" { (layout::say(e)) }
            Ok(list) if list.vms.is_empty() => div.card {
                (layout::empty("No VMs",
                    "Open a completed build and create a VM from it: it boots the build's ISO, and its screen opens here.",
                    Some(("/builds?status=completed", "Your completed builds"))))
            }
            Ok(list) => div.card { div.table-wrap role="region" aria-label="Your VMs" tabindex="0" { table.data {
                caption.sr-only { "Your VMs" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Build" }
                    th scope="col" { "Size" } th scope="col" { "Runs on" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } }
                } }
                tbody { @for v in &list.vms { tr {
                    td { a href={ "/vms/" (v.name) } { strong { (v.name) } } }
                    td {
                        (layout::vm_state(v.state))
                        @if let Some(t) = &v.stopped_unexpectedly_at { br; span.small.text-bad { "stopped unexpectedly " (when(t)) } }
                    }
                    td { a.mono href={ "/builds/" (v.build_id) } { (v.build_id) } }
                    td.small { (v.memory_mb) " MiB · " (v.vcpus) " vCPU" }
                    td.small { (v.backend) @if let Some(a) = &v.accelerator { " · " (a) } }
                    td.small.nowrap { (when(&v.created_at)) }
                    td { (actions(&viewer, v)) }
                } } }
            } } }
        }
    };
    layout::page(&viewer, "VMs", Nav::Vms, body)
}

/// The serial console's last lines; refreshes itself while the VM runs.
fn serial(name: &str, state: VmState, lines: Result<Vec<String>, Error>) -> Markup {
    let live = state == VmState::Running;
    html! {
        section.card #serial aria-labelledby="serial-title"
            data-live=[live.then(|| format!("/vms/{name}?part=serial"))] data-final[!live] {
            div.card-head {
                h2 #serial-title { "Serial console" }
                span.small.muted { "the guest's ttyS0: boot messages and the login prompt" }
            }
            @match lines {
                Ok(lines) if lines.is_empty() => p.muted { "Nothing yet: the guest writes here as it boots." }
                Ok(lines) => pre.log tabindex="0" aria-label="Serial console output" { @for l in &lines { (l) "\n" } }
                Err(e) => p.muted { (layout::say(&e)) }
            }
        }
    }
}

async fn serial_lines(web: &Web, owner: &OwnerId, name: &VmName) -> Result<Vec<String>, Error> {
    vms::serial_log(&web.app, owner, name, Some(SERIAL_LINES))
        .await
        .map(|s| s.lines)
}

pub async fn show(
    State(web): State<Arc<Web>>,
    user: SignedIn,
    Path(name): Path<String>,
    Query(part): Query<Part>,
) -> Response {
    let SignedIn { viewer, owner, .. } = user;
    let found = async {
        let name = from_path(VmName::parse("vm_name", &name))?;
        let vm = vms::get(&web.app, &owner, &name).await?;
        Ok::<_, Error>((name, vm))
    };
    let (name, vm) = match found.await {
        Ok(found) => found,
        Err(e) => return layout::service_error(&viewer, "VM", &e),
    };
    match part.part.as_deref() {
        Some("serial") => {
            let lines = serial_lines(&web, &owner, &name).await;
            return layout::fragment(serial(&vm.name, vm.state, lines));
        }
        Some(_) => return (StatusCode::NOT_FOUND, "no such part\n").into_response(),
        None => {}
    }
    let console = if vm.state == VmState::Running {
        Some(vms::console_token(&web.app, &owner, &name).await)
    } else {
        None
    };
    let lines = serial_lines(&web, &owner, &name).await;
    let body = html! {
        div.crumbs { a href="/vms" { "VMs" } " / " (vm.name) }
        div.page-head {
            div {
                h1 { (vm.name) " " (layout::vm_state(vm.state)) }
                p {
                    "Boots build " a.mono href={ "/builds/" (vm.build_id) } { (vm.build_id) }
                    " · " (vm.memory_mb) " MiB, " (vm.vcpus) " vCPU · " (vm.backend)
                    @if let Some(a) = &vm.accelerator { " (" (a) ")" }
                    " · created " (when(&vm.created_at))
                }
                @if let Some(t) = &vm.stopped_unexpectedly_at {
                    div.flash.bad role="alert" { "This VM stopped unexpectedly " (when(t)) " (its hypervisor process ended without being asked to). Start it again, or delete it." }
                }
            }
            (actions(&viewer, &vm))
        }
        section.card aria-labelledby="screen-title" {
            div.screen-bar {
                h2 #screen-title.m0 { "Screen" }
                @if console.as_ref().is_some_and(|c| c.is_ok()) {
                    p.m0 #status role="status" aria-live="polite" { "Connecting…" }
                    button.btn.small #ctrl-alt-del type="button" disabled { "Send Ctrl+Alt+Del" }
                }
            }
            @match &console {
                None => p.muted { "The VM is stopped. Start it to see its screen." }
                Some(Err(e)) => p.muted { (layout::say(e)) }
                Some(Ok(token)) => {
                    div.screen #screen data-ws=(token.websocket_path()) aria-label="VM screen" {}
                    noscript { p.muted { "The screen needs JavaScript (noVNC runs in this page). The serial console below works without it." } }
                    p.small.muted.mt-s { "Click the screen to type into the VM. The connection is yours alone and opens only within 10 minutes of loading this page." }
                    script type="module" src="/console/assets/console.js" {}
                }
            }
        }
        (serial(&vm.name, vm.state, lines))
    };
    layout::page(&viewer, &format!("VM {}", vm.name), Nav::Vms, body)
}

#[derive(Debug, Deserialize)]
pub struct NewVm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    memory_mb: String,
    #[serde(default)]
    vcpus: String,
}

pub async fn create(
    State(web): State<Arc<Web>>,
    Path(build_id): Path<String>,
    SignedForm { user, form }: SignedForm<NewVm>,
) -> Response {
    let back = format!("/builds/{}#boot", crate::form::encode(&build_id));
    let (memory, vcpus) = match (
        number("memory_mb", &form.memory_mb),
        number("vcpus", &form.vcpus),
    ) {
        (Ok(m), Ok(v)) => (m, v),
        (m, v) => {
            let errors: Vec<String> = [m.err(), v.err()].into_iter().flatten().collect();
            return redirect_with(&web, &back, false, &errors.join("; "));
        }
    };
    let created = async {
        let build_id = from_path(BuildId::parse("build_id", &build_id))?;
        let name = VmName::parse("name", form.name.trim())?;
        vms::create(&web.app, &user.owner, &build_id, &name, memory, vcpus).await
    };
    match created.await {
        Ok(vm) => redirect_with(
            &web,
            &format!("/vms/{}", vm.name),
            true,
            &format!("VM {} is booting build {}.", vm.name, vm.build_id),
        ),
        Err(e) if e.is_not_found() => layout::service_error(&user.viewer, "Build", &e),
        Err(e) => redirect_with(&web, &back, false, &layout::say(&e)),
    }
}

#[derive(Debug, Deserialize)]
pub struct Stop {
    #[serde(default)]
    force: Option<String>,
}

async fn lifecycle(
    web: &Web,
    user: SignedIn,
    name: &str,
    outcome: Result<vms::VmAction, Error>,
    to: &str,
) -> Response {
    match outcome {
        Ok(done) => {
            // Only an ACPI stop the guest ignored did not do what was asked:
            // its answer points to a forced stop.
            let ok = !done
                .message
                .actions
                .contains(&Action::StopVm { force: true });
            let said = layout::say_next(&done.message);
            redirect_with(web, to, ok, &format!("{}: {said}", done.name))
        }
        Err(e) if e.is_not_found() => layout::service_error(&user.viewer, "VM", &e),
        Err(e) => redirect_with(
            web,
            &format!("/vms/{}", crate::form::encode(name)),
            false,
            &layout::say(&e),
        ),
    }
}

pub async fn start(
    State(web): State<Arc<Web>>,
    Path(name): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let outcome = async {
        let name = from_path(VmName::parse("vm_name", &name))?;
        vms::start(&web.app, &user.owner, &name).await
    }
    .await;
    lifecycle(&web, user, &name, outcome, &format!("/vms/{name}")).await
}

pub async fn stop(
    State(web): State<Arc<Web>>,
    Path(name): Path<String>,
    SignedForm { user, form }: SignedForm<Stop>,
) -> Response {
    let force = form.force.as_deref() == Some("true");
    let outcome = async {
        let name = from_path(VmName::parse("vm_name", &name))?;
        vms::stop(&web.app, &user.owner, &name, force).await
    }
    .await;
    lifecycle(&web, user, &name, outcome, &format!("/vms/{name}")).await
}

pub async fn delete(
    State(web): State<Arc<Web>>,
    Path(name): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let outcome = async {
        let name = from_path(VmName::parse("vm_name", &name))?;
        vms::delete(&web.app, &user.owner, &name).await
    }
    .await;
    lifecycle(&web, user, &name, outcome, "/vms").await
}
