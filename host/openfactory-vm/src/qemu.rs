//! The QEMU backend: one daemonized `qemu-system-x86_64` per VM, controlled
//! over QMP, its files in `<vms>/<id>/`. VMs outlive the host process: after
//! a restart, the pidfile and the QMP socket find them again.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::accel::{AccelChooser, AccelSetting};
use crate::agent::Agent;
use crate::backend::{StopOutcome, VmBackend, VmState};
use crate::error::VmError;
use crate::qmp::Qmp;
use crate::records::{Records, VmRecord, check_id, unix_now};
use crate::spec::{VmPaths, VmSpec, process_name, qemu_args};

pub const QEMU: &str = "qemu-system-x86_64";
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// The QEMU backend's `vm.json`: the common record and where VNC listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QemuRecord {
    #[serde(flatten)]
    vm: VmRecord,
    /// VNC display n: VNC on 5900+n, its websocket on 5700+n (loopback).
    vnc_display: u16,
}

pub struct QemuBackend {
    records: Records,
    accel: AccelChooser,
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
    pub fn new(root: &Path, accel: AccelSetting) -> Self {
        QemuBackend {
            records: Records::new(root),
            accel: AccelChooser::new(accel, root),
        }
    }

    pub fn paths(&self, id: &str) -> VmPaths {
        self.records.paths(id)
    }

    fn pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.paths(id).pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|pid| pid_alive(*pid, id))
    }

    /// A QEMU that is gone leaves nothing a new one could trip over.
    fn clear_runtime_files(&self, id: &str) {
        let paths = self.paths(id);
        for stale in [paths.qmp(), paths.agent(), paths.pidfile()] {
            let _ = std::fs::remove_file(stale);
        }
    }
}

impl VmBackend for QemuBackend {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    async fn create(&self, spec: &VmSpec) -> Result<VmRecord, VmError> {
        check_id(&spec.id)?;
        if spec.iso.to_string_lossy().contains(',')
            || self.records.root().to_string_lossy().contains(',')
        {
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
        let record = QemuRecord {
            vm: VmRecord {
                spec: spec.clone(),
                accel: self.accel.choose(&spec.iso).await,
                unexpected_stop: None,
            },
            vnc_display: 0,
        };
        self.records.write(&spec.id, &record)?;
        self.start(&spec.id).await
    }

    /// Start a stopped VM (a new VNC display is chosen each time).
    async fn start(&self, id: &str) -> Result<VmRecord, VmError> {
        let mut record: QemuRecord = self.records.read(id)?;
        if let VmState::Running { .. } = self.state(id).await {
            return Ok(record.vm);
        }
        let paths = self.paths(id);
        self.clear_runtime_files(id);
        record.vm.unexpected_stop = None;
        let mut last = String::new();
        for _ in 0..3 {
            record.vnc_display = free_display()?;
            let args = qemu_args(&record.vm.spec, &paths, record.vm.accel, record.vnc_display);
            let out = Command::new(QEMU).args(&args).output().await?;
            if out.status.success() {
                self.records.write(id, &record)?;
                // The daemonized QEMU answers QMP once it is up.
                Qmp::connect(&paths.qmp(), QMP_TIMEOUT).await?;
                return Ok(record.vm);
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

    async fn state(&self, id: &str) -> VmState {
        if self.pid(id).is_none() {
            return VmState::Stopped;
        }
        let detail = match Qmp::connect(&self.paths(id).qmp(), QMP_TIMEOUT).await {
            Ok(mut qmp) => qmp
                .execute("query-status", None)
                .await
                .ok()
                .and_then(|s| s["status"].as_str().map(String::from))
                .unwrap_or_else(|| "unknown".into()),
            Err(_) => "unreachable".into(),
        };
        VmState::Running { detail }
    }

    async fn stop(&self, id: &str, force: bool, timeout: Duration) -> Result<StopOutcome, VmError> {
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
            self.clear_runtime_files(id);
            return Ok(StopOutcome::Killed);
        }
        let mut qmp = Qmp::connect(&qmp_path, QMP_TIMEOUT).await?;
        qmp.execute("system_powerdown", None).await?;
        drop(qmp);
        Ok(if wait_gone(pid, id, timeout).await {
            self.clear_runtime_files(id);
            StopOutcome::PoweredOff
        } else {
            StopOutcome::StillRunning
        })
    }

    async fn delete(&self, id: &str) -> Result<(), VmError> {
        self.record(id)?;
        self.stop(id, true, Duration::ZERO).await?;
        self.records.remove(id)
    }

    fn record(&self, id: &str) -> Result<VmRecord, VmError> {
        Ok(self.records.read::<QemuRecord>(id)?.vm)
    }

    fn list(&self) -> Vec<String> {
        self.records.list()
    }

    async fn serial_log(&self, id: &str) -> Result<Vec<u8>, VmError> {
        self.record(id)?;
        match tokio::fs::read(self.paths(id).serial()).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn vnc_address(&self, id: &str) -> Result<SocketAddr, VmError> {
        let record: QemuRecord = self.records.read(id)?;
        Ok(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            5900 + record.vnc_display,
        )))
    }

    async fn agent(
        &self,
        id: &str,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, VmError> {
        self.record(id)?;
        if self.pid(id).is_none() {
            return Err(VmError::NotRunning(id.to_owned()));
        }
        let mut agent = Agent::connect(&self.paths(id).agent(), timeout).await?;
        Ok(agent.execute(request, timeout).await?)
    }

    /// A pidfile whose process is gone: QEMU removes its pidfile when it
    /// exits normally (guest power-off, `quit`), so this one died.
    async fn reap(&self) -> Vec<String> {
        let mut reaped = Vec::new();
        for id in self.list() {
            if !self.paths(&id).pidfile().exists() || self.pid(&id).is_some() {
                continue;
            }
            self.clear_runtime_files(&id);
            if self
                .records
                .update(&id, |r: &mut QemuRecord| {
                    r.vm.unexpected_stop = Some(unix_now())
                })
                .is_ok()
            {
                reaped.push(id);
            }
        }
        reaped
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
