//! The VM tools' logic: VMs from the caller's completed builds, by name.
//! Names are per owner; another owner's VM is "not found", like a missing one.

use std::time::Duration;

use openfactory_build::pipeline::ISO_FILE;
use openfactory_core::rules;
use openfactory_store::{BuildStatus, OwnerId, VmRow};
use openfactory_vm::{StopOutcome, VmBackend, VmSpec, VmState as Power};
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::App;
use crate::builds;
use crate::error::{Error, Result};
use crate::ids::{BuildId, VmName};
use crate::next::{Action, Next};

/// How long a stop waits for an ACPI power-down before saying so.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(30);

/// Where a VM is: running or stopped; `deleted` in the answer to a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Stopped,
    Deleted,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&Power> for VmState {
    fn from(p: &Power) -> VmState {
        match p {
            Power::Running { .. } => VmState::Running,
            Power::Stopped => VmState::Stopped,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmOut {
    pub name: String,
    pub build_id: String,
    /// running or stopped.
    pub state: VmState,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub created_at: String,
    /// kvm or tcg.
    pub accelerator: Option<String>,
    /// qemu or libvirt: what runs this server's VMs.
    pub backend: String,
    /// Set when the VM died without being asked to stop (its hypervisor
    /// process crashed or was killed); cleared by starting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_unexpectedly_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmList {
    pub vms: Vec<VmOut>,
    pub count: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmAction {
    pub name: String,
    pub state: VmState,
    pub message: Next,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConsoleLink {
    pub name: String,
    /// Open in a browser: the VM's screen and keyboard (noVNC).
    pub url: String,
    pub expires_at: String,
    pub note: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SerialLog {
    pub name: String,
    pub state: VmState,
    /// The last lines the guest wrote to its serial console (escape codes removed).
    pub lines: Vec<String>,
    pub total_lines: usize,
}

fn backend_error(e: openfactory_vm::VmError) -> Error {
    tracing::warn!(error = %e, "VM backend");
    Error::unavailable(format!(
        "the VM backend failed: {}",
        rules::truncate(&e.to_string(), 300)
    ))
}

/// Where a running VM's screen is (its VNC server, for the console bridge):
/// `row` is the VM a console token named. A stopped VM has no screen.
pub async fn screen(app: &App, row: &VmRow) -> Result<std::net::SocketAddr> {
    if app.vms.backend.state(&row.id).await == Power::Stopped {
        return Err(
            Error::conflict(format!("VM `{}` is stopped; start it", row.name)).see(Action::StartVm),
        );
    }
    match app.vms.backend.vnc_address(&row.id).await {
        Ok(address) => Ok(address),
        Err(openfactory_vm::VmError::NotFound(_)) => Err(Error::not_found(format!(
            "VM `{}` no longer exists",
            row.name
        ))),
        Err(e) => Err(backend_error(e)),
    }
}

fn not_found(name: &VmName) -> Error {
    Error::not_found(format!("VM `{name}` not found")).see(Action::ListVms)
}

pub async fn find(app: &App, owner: &OwnerId, name: &VmName) -> Result<VmRow> {
    app.store
        .vm(owner, name.as_str())
        .await?
        .ok_or_else(|| not_found(name))
}

/// One of the owner's VMs by its id (what a console token names), or "not
/// found" (also for another owner's).
pub async fn by_id(app: &App, owner: &OwnerId, id: &str) -> Result<VmRow> {
    app.store.vm_by_id(owner, id).await?.ok_or_else(|| {
        Error::not_found(format!("VM `{}` not found", rules::truncate(id, 40))).see(Action::ListVms)
    })
}

async fn out(app: &App, row: VmRow) -> VmOut {
    let state = app.vms.backend.state(&row.id).await;
    let record = app.vms.backend.record(&row.id).ok();
    VmOut {
        accelerator: record.as_ref().map(|r| r.accel.to_string()),
        backend: app.vms.backend.kind().into(),
        stopped_unexpectedly_at: record
            .and_then(|r| r.unexpected_stop)
            .filter(|_| state == Power::Stopped)
            .map(|secs| crate::links::rfc3339(secs as i64)),
        state: VmState::from(&state),
        name: row.name,
        build_id: row.build_id,
        memory_mb: row.memory_mb,
        vcpus: row.vcpus,
        created_at: row.created_at,
    }
}

fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

pub async fn create(
    app: &App,
    owner: &OwnerId,
    build_id: &BuildId,
    name: &VmName,
    memory_mb: Option<i64>,
    vcpus: Option<i64>,
) -> Result<VmOut> {
    let limits = &app.vms;
    let memory_mb = match memory_mb.unwrap_or(1024) {
        m if (256..=i64::from(limits.max_memory_mb)).contains(&m) => m as u32,
        m => {
            return Err(Error::invalid(
                "memory_mb",
                format!(
                    "memory_mb: {m} is out of range; use 256 to {} (this server's limit)",
                    limits.max_memory_mb
                ),
            ));
        }
    };
    let vcpus = match vcpus.unwrap_or(1) {
        v if (1..=i64::from(limits.max_vcpus)).contains(&v) => v as u32,
        v => {
            return Err(Error::invalid(
                "vcpus",
                format!(
                    "vcpus: {v} is out of range; use 1 to {} (this server's limit)",
                    limits.max_vcpus
                ),
            ));
        }
    };
    let build = builds::find(app, owner, build_id).await?;
    if build.status != BuildStatus::Completed {
        return Err(Error::conflict(format!(
            "build `{build_id}` is {}, not completed: a VM boots a completed build's ISO",
            build.status
        )));
    }
    let existing = app.store.vms(owner, None).await?;
    if existing.len() as u32 >= limits.max_vms {
        return Err(Error::limit_reached(format!(
            "you have {} VMs (the limit is {}); delete one",
            existing.len(),
            limits.max_vms
        ))
        .see(Action::DeleteVm));
    }
    let row = VmRow {
        id: new_id(),
        name: name.to_string(),
        build_id: build.id.clone(),
        memory_mb,
        vcpus,
        created_at: String::new(),
    };
    // On this machine's disk: the file itself, or a verified copy from object storage.
    let iso = match app
        .artifacts
        .local_copy(&build.id, ISO_FILE, build.iso_sha256.as_deref())
        .await
    {
        Ok(iso) => iso,
        Err(e) => {
            return Err(Error::unavailable(format!(
                "the ISO of build `{}` is not available to this server ({e}); try again",
                build.id
            )));
        }
    };
    app.store.insert_vm(owner, &row).await?;
    let spec = VmSpec {
        id: row.id.clone(),
        iso,
        memory_mb,
        vcpus,
        disk_gb: None,
        forwards: Vec::new(),
    };
    if let Err(e) = app.vms.backend.create(&spec).await {
        // Nothing half-made: a backend may have recorded the VM before its
        // hypervisor refused to start, so it is deleted, and the row goes too.
        match app.vms.backend.delete(&spec.id).await {
            Ok(()) | Err(openfactory_vm::VmError::NotFound(_)) => {}
            Err(cleanup) => {
                tracing::error!(vm = %spec.id, error = %cleanup, "could not remove a VM that failed to start")
            }
        }
        let _ = app.store.delete_vm(owner, name.as_str()).await;
        return Err(backend_error(e));
    }
    let row = find(app, owner, name).await?;
    Ok(out(app, row).await)
}

pub async fn list(app: &App, owner: &OwnerId, build_id: Option<&BuildId>) -> Result<VmList> {
    let rows = app.store.vms(owner, build_id.map(BuildId::as_str)).await?;
    let mut vms = Vec::with_capacity(rows.len());
    for row in rows {
        vms.push(out(app, row).await);
    }
    Ok(VmList {
        count: vms.len(),
        vms,
    })
}

/// One of the caller's VMs, as `list` shows it.
pub async fn get(app: &App, owner: &OwnerId, name: &VmName) -> Result<VmOut> {
    let row = find(app, owner, name).await?;
    Ok(out(app, row).await)
}

pub async fn start(app: &App, owner: &OwnerId, name: &VmName) -> Result<VmAction> {
    let row = find(app, owner, name).await?;
    let was = app.vms.backend.state(&row.id).await;
    if let Power::Running { .. } = was {
        return Ok(VmAction {
            name: row.name,
            state: VmState::Running,
            message: Next::say("The VM was already running."),
        });
    }
    app.vms
        .backend
        .start(&row.id)
        .await
        .map_err(backend_error)?;
    Ok(VmAction {
        name: row.name,
        state: VmState::Running,
        message: Next::new(
            "Started; it boots in about a minute",
            [Action::GetVmSerialLog],
        ),
    })
}

pub async fn stop(app: &App, owner: &OwnerId, name: &VmName, force: bool) -> Result<VmAction> {
    let row = find(app, owner, name).await?;
    let outcome = app
        .vms
        .backend
        .stop(&row.id, force, GRACEFUL_STOP)
        .await
        .map_err(backend_error)?;
    let (state, message) = match outcome {
        StopOutcome::PoweredOff => (VmState::Stopped, Next::say("The guest powered off (ACPI).")),
        StopOutcome::Killed => (VmState::Stopped, Next::say("Stopped at once (force).")),
        StopOutcome::AlreadyStopped => (VmState::Stopped, Next::say("The VM was not running.")),
        StopOutcome::StillRunning => (
            VmState::Running,
            Next::new(
                format!(
                    "The guest did not power off within {} s of the ACPI request and is still running",
                    GRACEFUL_STOP.as_secs()
                ),
                [Action::StopVm { force: true }],
            ),
        ),
    };
    Ok(VmAction {
        name: row.name,
        state,
        message,
    })
}

pub async fn delete(app: &App, owner: &OwnerId, name: &VmName) -> Result<VmAction> {
    let row = find(app, owner, name).await?;
    match app.vms.backend.delete(&row.id).await {
        Ok(()) | Err(openfactory_vm::VmError::NotFound(_)) => {}
        Err(e) => return Err(backend_error(e)),
    }
    app.store.delete_vm(owner, name.as_str()).await?;
    Ok(VmAction {
        name: row.name,
        state: VmState::Deleted,
        message: Next::say("The VM was stopped if needed, and its files and ports released."),
    })
}

/// How long a console token works: the page connects once, at load.
pub const CONSOLE_LINK_SECONDS: i64 = 600;

/// A signed, expiring token for one running VM's screen, for its owner alone.
pub struct ConsoleToken {
    pub vm_id: String,
    pub name: String,
    pub token: String,
    pub expires: i64,
}

impl ConsoleToken {
    /// The console page (`/console/{vm}?token=…`), relative to the server.
    pub fn page_path(&self) -> String {
        format!("/console/{}?token={}", self.vm_id, self.token)
    }

    /// The websocket bridged to the VM's VNC server, relative to the server.
    pub fn websocket_path(&self) -> String {
        format!("/console/{}/ws?token={}", self.vm_id, self.token)
    }
}

/// A console token for the caller's running VM, or why there is no console.
pub async fn console_token(app: &App, owner: &OwnerId, name: &VmName) -> Result<ConsoleToken> {
    let row = find(app, owner, name).await?;
    if app.vms.novnc_dir.is_none() {
        return Err(Error::unavailable(
            "the browser console is not installed on this server (noVNC is missing; operators install it with `cargo xtask install` or --novnc-dir)",
        )
        .see(Action::GetVmSerialLog));
    }
    if app.vms.backend.state(&row.id).await == Power::Stopped {
        return Err(
            Error::conflict(format!("VM `{name}` is stopped; start it")).see(Action::StartVm)
        );
    }
    let expires = crate::links::unix_now() + CONSOLE_LINK_SECONDS;
    Ok(ConsoleToken {
        token: app.signer.sign("console", &row.id, owner, expires),
        vm_id: row.id,
        name: row.name,
        expires,
    })
}

pub async fn console_url(app: &App, owner: &OwnerId, name: &VmName) -> Result<ConsoleLink> {
    let Some(base) = app.settings.public_url.clone() else {
        return Err(Error::unavailable(
            "this server has no HTTP address (stdio mode); the browser console needs `openfactory serve`",
        )
        .see(Action::GetVmSerialLog));
    };
    let console = console_token(app, owner, name).await?;
    Ok(ConsoleLink {
        url: format!("{}{}", base.trim_end_matches('/'), console.page_path()),
        expires_at: crate::links::rfc3339(console.expires),
        note: format!(
            "Open the link within {} minutes; it is yours alone, so do not share it.",
            CONSOLE_LINK_SECONDS / 60
        ),
        name: console.name,
    })
}

/// The last `n` lines of a serial console's bytes, escape codes removed,
/// and the count of all. CPU-bound on a big log: run it off the runtime.
fn serial_tail(bytes: &[u8], n: usize) -> (Vec<String>, usize) {
    let text = openfactory_vm::console::console_text(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    let tail = lines[total.saturating_sub(n)..]
        .iter()
        .map(|l| rules::truncate(l, 400))
        .collect();
    (tail, total)
}

pub async fn serial_log(
    app: &App,
    owner: &OwnerId,
    name: &VmName,
    tail_lines: Option<i64>,
) -> Result<SerialLog> {
    let row = find(app, owner, name).await?;
    let n = builds::tail_lines_arg(tail_lines, 100)?;
    let bytes = app
        .vms
        .backend
        .serial_log(&row.id)
        .await
        .map_err(backend_error)?;
    let (lines, total) = tokio::task::spawn_blocking(move || serial_tail(&bytes, n)).await?;
    let state = app.vms.backend.state(&row.id).await;
    Ok(SerialLog {
        name: row.name,
        state: VmState::from(&state),
        lines,
        total_lines: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_tails_count_every_line() {
        let (lines, total) = serial_tail(b"one\r\ntwo\nthree\n", 2);
        assert_eq!(
            (lines, total),
            (vec!["two".to_owned(), "three".to_owned()], 3)
        );
    }

    #[test]
    fn vm_states_serialise_as_their_names() {
        for s in [VmState::Running, VmState::Stopped, VmState::Deleted] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
