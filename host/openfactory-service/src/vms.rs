//! The VM tools' logic: VMs from the caller's completed builds, by name.
//! Names are per owner; another owner's VM is "not found", like a missing one.

use std::time::Duration;

use openfactory_build::pipeline::ISO_FILE;
use openfactory_core::rules;
use openfactory_store::{BuildStatus, OwnerId, VmRow};
use openfactory_vm::{Backend, StopOutcome, VmBackend, VmSpec, VmState};
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::{App, store_error};
use crate::builds;

/// The backend and the bounds every owner's VMs live within.
pub struct VmSettings {
    pub backend: Backend,
    pub max_memory_mb: u32,
    pub max_vcpus: u32,
    pub max_vms_per_owner: u32,
    /// The vendored noVNC package (`@novnc/novnc`); without it there is no browser console.
    pub novnc_dir: Option<std::path::PathBuf>,
}

/// How long `stop_vm` waits for an ACPI power-down before saying so.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmOut {
    pub name: String,
    pub build_id: String,
    /// running or stopped.
    pub state: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub created_at: String,
    /// kvm or tcg.
    pub accelerator: Option<String>,
    /// qemu or libvirt: what runs this server's VMs.
    pub backend: String,
    /// Set when the VM died without being asked to stop (its hypervisor
    /// process crashed or was killed); cleared by start_vm.
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
    pub state: String,
    pub message: String,
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
    pub state: String,
    /// The last lines the guest wrote to its serial console (escape codes removed).
    pub lines: Vec<String>,
    pub total_lines: usize,
}

fn backend_error(e: openfactory_vm::VmError) -> String {
    tracing::warn!(error = %e, "VM backend");
    format!(
        "the VM backend failed: {}",
        rules::truncate(&e.to_string(), 300)
    )
}

/// VM names: what people type, and safe in every place they go.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{}` is not a VM name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter or digit (e.g. web-1)",
            rules::truncate(name, 40).escape_debug()
        ))
    }
}

fn not_found(name: &str) -> String {
    format!("VM `{name}` not found; list_vms shows yours")
}

pub async fn find(app: &App, owner: &OwnerId, name: &str) -> Result<VmRow, String> {
    check_name(name).map_err(|e| format!("vm_{e}"))?;
    app.store
        .vm(owner, name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(name))
}

fn state_name(state: &VmState) -> &'static str {
    match state {
        VmState::Running { .. } => "running",
        VmState::Stopped => "stopped",
    }
}

async fn out(app: &App, row: VmRow) -> VmOut {
    let state = app.vms.backend.state(&row.id).await;
    let record = app.vms.backend.record(&row.id).ok();
    VmOut {
        accelerator: record.as_ref().map(|r| r.accel.to_string()),
        backend: app.vms.backend.kind().into(),
        stopped_unexpectedly_at: record
            .and_then(|r| r.unexpected_stop)
            .filter(|_| state == VmState::Stopped)
            .map(|secs| crate::links::rfc3339(secs as i64)),
        state: state_name(&state).into(),
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
    build_id: &str,
    name: &str,
    memory_mb: Option<i64>,
    vcpus: Option<i64>,
) -> Result<VmOut, String> {
    check_name(name)?;
    let limits = &app.vms;
    let memory_mb = match memory_mb.unwrap_or(1024) {
        m if (256..=i64::from(limits.max_memory_mb)).contains(&m) => m as u32,
        m => {
            return Err(format!(
                "memory_mb: {m} is out of range; use 256 to {} (this server's limit)",
                limits.max_memory_mb
            ));
        }
    };
    let vcpus = match vcpus.unwrap_or(1) {
        v if (1..=i64::from(limits.max_vcpus)).contains(&v) => v as u32,
        v => {
            return Err(format!(
                "vcpus: {v} is out of range; use 1 to {} (this server's limit)",
                limits.max_vcpus
            ));
        }
    };
    let build = builds::find(app, owner, build_id).await?;
    if build.status != BuildStatus::Completed {
        return Err(format!(
            "build `{build_id}` is {}, not completed: a VM boots a completed build's ISO",
            build.status
        ));
    }
    let existing = app.store.vms(owner, None).await.map_err(store_error)?;
    if existing.len() as u32 >= limits.max_vms_per_owner {
        return Err(format!(
            "you have {} VMs (the limit is {}); delete one with delete_vm first",
            existing.len(),
            limits.max_vms_per_owner
        ));
    }
    let row = VmRow {
        id: new_id(),
        name: name.to_owned(),
        build_id: build.id.clone(),
        memory_mb,
        vcpus,
        created_at: String::new(),
    };
    app.store
        .insert_vm(owner, &row)
        .await
        .map_err(store_error)?;
    let spec = VmSpec {
        id: row.id.clone(),
        iso: app.builds.build_dir(&build.id).join(ISO_FILE),
        memory_mb,
        vcpus,
        disk_gb: None,
        forwards: Vec::new(),
    };
    if let Err(e) = app.vms.backend.create(&spec).await {
        // Nothing half-made: the backends clean up after a failed create;
        // the row goes too.
        let _ = app.store.delete_vm(owner, name).await;
        return Err(backend_error(e));
    }
    let row = app
        .store
        .vm(owner, name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(name))?;
    Ok(out(app, row).await)
}

pub async fn list(app: &App, owner: &OwnerId, build_id: Option<&str>) -> Result<VmList, String> {
    let rows = app.store.vms(owner, build_id).await.map_err(store_error)?;
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
pub async fn get(app: &App, owner: &OwnerId, name: &str) -> Result<VmOut, String> {
    let row = find(app, owner, name).await?;
    Ok(out(app, row).await)
}

pub async fn start(app: &App, owner: &OwnerId, name: &str) -> Result<VmAction, String> {
    let row = find(app, owner, name).await?;
    let was = app.vms.backend.state(&row.id).await;
    if let VmState::Running { .. } = was {
        return Ok(VmAction {
            name: row.name,
            state: "running".into(),
            message: "The VM was already running.".into(),
        });
    }
    app.vms
        .backend
        .start(&row.id)
        .await
        .map_err(backend_error)?;
    Ok(VmAction {
        name: row.name,
        state: "running".into(),
        message: "Started; it boots in about a minute (get_vm_serial_log shows the console)."
            .into(),
    })
}

pub async fn stop(app: &App, owner: &OwnerId, name: &str, force: bool) -> Result<VmAction, String> {
    let row = find(app, owner, name).await?;
    let outcome = app
        .vms
        .backend
        .stop(&row.id, force, GRACEFUL_STOP)
        .await
        .map_err(backend_error)?;
    let (state, message) = match outcome {
        StopOutcome::PoweredOff => ("stopped", "The guest powered off (ACPI).".to_owned()),
        StopOutcome::Killed => ("stopped", "Stopped at once (force).".to_owned()),
        StopOutcome::AlreadyStopped => ("stopped", "The VM was not running.".to_owned()),
        StopOutcome::StillRunning => (
            "running",
            format!(
                "The guest did not power off within {} s of the ACPI request and is still running; \
                 call stop_vm with force=true to stop it at once.",
                GRACEFUL_STOP.as_secs()
            ),
        ),
    };
    Ok(VmAction {
        name: row.name,
        state: state.into(),
        message,
    })
}

pub async fn delete(app: &App, owner: &OwnerId, name: &str) -> Result<VmAction, String> {
    let row = find(app, owner, name).await?;
    match app.vms.backend.delete(&row.id).await {
        Ok(()) | Err(openfactory_vm::VmError::NotFound(_)) => {}
        Err(e) => return Err(backend_error(e)),
    }
    app.store
        .delete_vm(owner, name)
        .await
        .map_err(store_error)?;
    Ok(VmAction {
        name: row.name,
        state: "deleted".into(),
        message: "The VM was stopped if needed, and its files and ports released.".into(),
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
pub async fn console_token(app: &App, owner: &OwnerId, name: &str) -> Result<ConsoleToken, String> {
    let row = find(app, owner, name).await?;
    if app.vms.novnc_dir.is_none() {
        return Err("the browser console is not installed on this server (noVNC is missing; operators install it with `cargo xtask install` or --novnc-dir); get_vm_serial_log shows the serial console".into());
    }
    if app.vms.backend.state(&row.id).await == VmState::Stopped {
        return Err(format!(
            "VM `{name}` is stopped; start it with start_vm first"
        ));
    }
    let expires = crate::links::unix_now() + CONSOLE_LINK_SECONDS;
    Ok(ConsoleToken {
        token: app.builds.links.sign("console", &row.id, owner, expires),
        vm_id: row.id,
        name: row.name,
        expires,
    })
}

pub async fn console_url(app: &App, owner: &OwnerId, name: &str) -> Result<ConsoleLink, String> {
    let Some(base) = app.builds.public_url.clone() else {
        return Err("this server has no HTTP address (stdio mode); the browser console needs `openfactory serve`; get_vm_serial_log works everywhere".into());
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

pub async fn serial_log(
    app: &App,
    owner: &OwnerId,
    name: &str,
    tail_lines: Option<i64>,
) -> Result<SerialLog, String> {
    let row = find(app, owner, name).await?;
    let n = builds::tail_lines_arg(tail_lines, 100)?;
    let bytes = app
        .vms
        .backend
        .serial_log(&row.id)
        .await
        .map_err(backend_error)?;
    let text = openfactory_vm::console::console_text(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    let state = app.vms.backend.state(&row.id).await;
    Ok(SerialLog {
        name: row.name,
        state: state_name(&state).into(),
        lines: lines[total.saturating_sub(n)..]
            .iter()
            .map(|l| rules::truncate(l, 400))
            .collect(),
        total_lines: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("web-1").is_ok());
        for bad in ["", "../x", "Web", "-x", "a b", &"x".repeat(64)] {
            assert!(
                check_name(bad).unwrap_err().contains("not a VM name"),
                "{bad}"
            );
        }
    }
}
