//! The QEMU backend: one daemonized `qemu-system-x86_64` per VM, controlled
//! over QMP, its state in `<vms>/<id>/`. VMs outlive the host process: after
//! a restart, the pidfile and the QMP socket find them again.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::qmp::Qmp;
use crate::spec::{Accel, AccelSetting, VmPaths, VmSpec, process_name, qemu_args};

pub const QEMU: &str = "qemu-system-x86_64";
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("QEMU could not start the VM: {0}")]
    Start(String),
    #[error("{0}")]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("VM `{0}` does not exist")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// A VM's record on disk: its spec and where its console listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub spec: VmSpec,
    pub accel: Accel,
    /// VNC display n: VNC on 5900+n, its websocket on 5700+n (loopback).
    pub vnc_display: u16,
}

impl VmRecord {
    pub fn websocket_port(&self) -> u16 {
        5700 + self.vnc_display
    }
}

/// What a VM is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum VmState {
    Running { pid: u32, qemu_status: String },
    Stopped,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The guest powered itself off after the ACPI request.
    PoweredOff,
    /// The guest ignored the ACPI request within the timeout; it still runs.
    StillRunning,
    /// Stopped at once (force).
    Killed,
    AlreadyStopped,
}

pub struct QemuBackend {
    root: PathBuf,
    setting: AccelSetting,
    probed: OnceCell<Accel>,
}

fn pid_alive(pid: u32, id: &str) -> bool {
    // Our process, not a recycled pid: its command line names the VM.
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&process_name(id)))
        .unwrap_or(false)
}

/// A display number whose VNC and websocket ports are both free on loopback.
fn free_display() -> Result<u16, VmError> {
    (0u16..200)
        .find(|n| {
            TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok()
                && TcpListener::bind(("127.0.0.1", 5700 + n)).is_ok()
        })
        .ok_or_else(|| VmError::Start("no free VNC display between 0 and 199".into()))
}

impl QemuBackend {
    pub fn new(root: &Path, setting: AccelSetting) -> Self {
        QemuBackend {
            root: root.to_owned(),
            setting,
            probed: OnceCell::new(),
        }
    }

    pub fn paths(&self, id: &str) -> VmPaths {
        VmPaths::new(&self.root.join(id))
    }

    fn check_id(id: &str) -> Result<(), VmError> {
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(VmError::Invalid(format!(
                "`{}` is not a VM id",
                id.escape_debug()
            )));
        }
        Ok(())
    }

    /// The accelerator VMs get: `auto` proves that KVM really runs a guest
    /// (a kernel printing to the serial port), once, and otherwise uses TCG.
    pub async fn accel(&self, iso: &Path) -> Accel {
        match self.setting {
            AccelSetting::Kvm => Accel::Kvm,
            AccelSetting::Tcg => Accel::Tcg,
            AccelSetting::Auto => {
                *self
                    .probed
                    .get_or_init(|| async {
                        let accel = match probe_kvm(iso, &self.root).await {
                            Ok(true) => Accel::Kvm,
                            Ok(false) => Accel::Tcg,
                            Err(e) => {
                                tracing::info!(error = %e, "KVM probe could not run; using TCG");
                                Accel::Tcg
                            }
                        };
                        tracing::info!(%accel, "accelerator chosen");
                        accel
                    })
                    .await
            }
        }
    }

    pub fn record(&self, id: &str) -> Result<VmRecord, VmError> {
        Self::check_id(id)?;
        let text = std::fs::read_to_string(self.paths(id).spec())
            .map_err(|_| VmError::NotFound(id.to_owned()))?;
        serde_json::from_str(&text).map_err(|e| VmError::Invalid(format!("vm.json of {id}: {e}")))
    }

    /// Every VM with a record here (running or not): what a restarted host re-attaches to.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("vm.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Create the VM's directory and start it.
    pub async fn create(&self, spec: &VmSpec) -> Result<VmRecord, VmError> {
        Self::check_id(&spec.id)?;
        if spec.iso.to_string_lossy().contains(',') || self.root.to_string_lossy().contains(',') {
            return Err(VmError::Invalid(
                "paths with `,` cannot be given to QEMU".into(),
            ));
        }
        let paths = self.paths(&spec.id);
        std::fs::create_dir_all(&paths.dir)?;
        if let Some(gb) = spec.disk_gb {
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(paths.disk())
                .arg(format!("{gb}G"))
                .output()
                .await?;
            if !out.status.success() {
                return Err(VmError::Start(
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                ));
            }
        }
        let record = VmRecord {
            spec: spec.clone(),
            accel: self.accel(&spec.iso).await,
            vnc_display: 0,
        };
        std::fs::write(
            paths.spec(),
            serde_json::to_vec_pretty(&record).expect("serialisable"),
        )?;
        self.start(&spec.id).await
    }

    /// Start a stopped VM (a new VNC display is chosen each time).
    pub async fn start(&self, id: &str) -> Result<VmRecord, VmError> {
        let mut record = self.record(id)?;
        if let VmState::Running { .. } = self.state(id).await {
            return Ok(record);
        }
        let paths = self.paths(id);
        for stale in [paths.qmp(), paths.agent(), paths.pidfile()] {
            let _ = std::fs::remove_file(stale);
        }
        let mut last = String::new();
        for _ in 0..3 {
            record.vnc_display = free_display()?;
            let args = qemu_args(&record.spec, &paths, record.accel, record.vnc_display);
            let out = Command::new(QEMU).args(&args).output().await?;
            if out.status.success() {
                std::fs::write(
                    paths.spec(),
                    serde_json::to_vec_pretty(&record).expect("serialisable"),
                )?;
                // The daemonized QEMU answers QMP once it is up.
                Qmp::connect(&paths.qmp(), QMP_TIMEOUT).await?;
                return Ok(record);
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if last.is_empty() {
                last = format!("{QEMU} exited with {}", out.status);
            }
            if !last.contains("Address already in use") {
                break;
            }
        }
        Err(VmError::Start(last))
    }

    fn pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.paths(id).pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|pid| pid_alive(*pid, id))
    }

    pub async fn state(&self, id: &str) -> VmState {
        let Some(pid) = self.pid(id) else {
            return VmState::Stopped;
        };
        let qemu_status = match Qmp::connect(&self.paths(id).qmp(), QMP_TIMEOUT).await {
            Ok(mut qmp) => qmp
                .execute("query-status", None)
                .await
                .ok()
                .and_then(|s| s["status"].as_str().map(String::from))
                .unwrap_or_else(|| "unknown".into()),
            Err(_) => "unreachable".into(),
        };
        VmState::Running { pid, qemu_status }
    }

    /// Stop: ACPI power-down with a timeout, or at once with `force`.
    pub async fn stop(
        &self,
        id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<StopOutcome, VmError> {
        self.record(id)?;
        let Some(pid) = self.pid(id) else {
            return Ok(StopOutcome::AlreadyStopped);
        };
        let qmp_path = self.paths(id).qmp();
        if force {
            if let Ok(mut qmp) = Qmp::connect(&qmp_path, QMP_TIMEOUT).await {
                let _ = qmp.execute("quit", None).await;
            }
            if !wait_gone(pid, id, Duration::from_secs(5)).await {
                // SAFETY: kill with a pid we checked is our QEMU.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                wait_gone(pid, id, Duration::from_secs(5)).await;
            }
            return Ok(StopOutcome::Killed);
        }
        let mut qmp = Qmp::connect(&qmp_path, QMP_TIMEOUT).await?;
        qmp.execute("system_powerdown", None).await?;
        drop(qmp);
        Ok(if wait_gone(pid, id, timeout).await {
            StopOutcome::PoweredOff
        } else {
            StopOutcome::StillRunning
        })
    }

    /// Stop at once if running, then remove every file the VM had.
    pub async fn delete(&self, id: &str) -> Result<(), VmError> {
        self.record(id)?;
        self.stop(id, true, Duration::ZERO).await?;
        std::fs::remove_dir_all(self.paths(id).dir)?;
        Ok(())
    }
}

async fn wait_gone(pid: u32, id: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        if !pid_alive(pid, id) {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Does KVM run a guest here? Boot the ISO's kernel under KVM with nothing
/// else and look for its first line on the serial port.
async fn probe_kvm(iso: &Path, scratch: &Path) -> Result<bool, VmError> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok(false);
    }
    let dir = scratch.join(".kvm-probe");
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("vmlinuz");
    let serial = dir.join("serial.log");
    let _ = std::fs::remove_file(&serial);
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/live/vmlinuz"])
        .arg(&kernel)
        .output()
        .await?;
    if !out.status.success() {
        return Err(VmError::Start(
            "could not read the kernel from the ISO".into(),
        ));
    }
    let mut child = Command::new(QEMU)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    let mut works = false;
    while started.elapsed() < Duration::from_secs(20) {
        if std::fs::read(&serial)
            .is_ok_and(|s| String::from_utf8_lossy(&s).contains("Linux version"))
        {
            works = true;
            break;
        }
        if child.try_wait()?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(works)
}
