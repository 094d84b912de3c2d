//! The one VM interface every backend implements, and [`Backend`], the
//! backend a host was configured with.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::error::VmError;
use crate::qemu::QemuBackend;
use crate::records::VmRecord;
use crate::spec::VmSpec;

/// What a VM is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum VmState {
    /// `detail` is the hypervisor's own word (`running`, `paused`, …).
    Running {
        detail: String,
    },
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

/// A VM backend. Every method takes the VM's id; none knows owners or names.
///
/// Backends keep their notes through [`crate::Records`], so a restarted host
/// finds running VMs again (re-attaches) and [`VmBackend::reap`] finds the
/// ones that died meanwhile.
pub trait VmBackend: Send + Sync {
    /// `qemu` or `libvirt` (`double` for the test double).
    fn kind(&self) -> &'static str;

    /// Record the VM, give it its disks and start it.
    fn create(&self, spec: &VmSpec) -> impl Future<Output = Result<VmRecord, VmError>> + Send;

    /// Start a stopped VM; a running one is left alone.
    fn start(&self, id: &str) -> impl Future<Output = Result<VmRecord, VmError>> + Send;

    fn state(&self, id: &str) -> impl Future<Output = VmState> + Send;

    /// ACPI power-down, waiting up to `timeout`; or at once with `force`.
    fn stop(
        &self,
        id: &str,
        force: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<StopOutcome, VmError>> + Send;

    /// Stop at once if running, then remove every file, disk and port it held.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), VmError>> + Send;

    fn record(&self, id: &str) -> Result<VmRecord, VmError>;

    /// Every VM this backend has a record of, running or not.
    fn list(&self) -> Vec<String>;

    /// What the guest wrote to its serial console since it last started.
    fn serial_log(&self, id: &str) -> impl Future<Output = Result<Vec<u8>, VmError>> + Send;

    /// The VM's VNC server (plain RFB over TCP), for the console bridge.
    fn vnc_address(&self, id: &str) -> impl Future<Output = Result<SocketAddr, VmError>> + Send;

    /// Send one command (`{"execute": …, "arguments": …}`) to the guest
    /// agent inside the VM; the reply's `return` value.
    fn agent(
        &self,
        id: &str,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<serde_json::Value, VmError>> + Send;

    /// Find VMs that died without being asked to stop, note when in their
    /// records and release what they held; their ids.
    fn reap(&self) -> impl Future<Output = Vec<String>> + Send;
}

/// The backend a host runs its VMs on.
pub enum Backend {
    Qemu(QemuBackend),
    #[cfg(feature = "libvirt")]
    Libvirt(crate::libvirt::LibvirtBackend),
    /// The in-memory test double (feature `test-double`, for tests only).
    #[cfg(feature = "test-double")]
    Double(crate::double::DoubleBackend),
}

macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Backend::Qemu($b) => $call,
            #[cfg(feature = "libvirt")]
            Backend::Libvirt($b) => $call,
            #[cfg(feature = "test-double")]
            Backend::Double($b) => $call,
        }
    };
}

impl VmBackend for Backend {
    fn kind(&self) -> &'static str {
        delegate!(self, b => b.kind())
    }
    async fn create(&self, spec: &VmSpec) -> Result<VmRecord, VmError> {
        delegate!(self, b => b.create(spec).await)
    }
    async fn start(&self, id: &str) -> Result<VmRecord, VmError> {
        delegate!(self, b => b.start(id).await)
    }
    async fn state(&self, id: &str) -> VmState {
        delegate!(self, b => b.state(id).await)
    }
    async fn stop(&self, id: &str, force: bool, timeout: Duration) -> Result<StopOutcome, VmError> {
        delegate!(self, b => b.stop(id, force, timeout).await)
    }
    async fn delete(&self, id: &str) -> Result<(), VmError> {
        delegate!(self, b => b.delete(id).await)
    }
    fn record(&self, id: &str) -> Result<VmRecord, VmError> {
        delegate!(self, b => b.record(id))
    }
    fn list(&self) -> Vec<String> {
        delegate!(self, b => b.list())
    }
    async fn serial_log(&self, id: &str) -> Result<Vec<u8>, VmError> {
        delegate!(self, b => b.serial_log(id).await)
    }
    async fn vnc_address(&self, id: &str) -> Result<SocketAddr, VmError> {
        delegate!(self, b => b.vnc_address(id).await)
    }
    async fn agent(
        &self,
        id: &str,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, VmError> {
        delegate!(self, b => b.agent(id, request, timeout).await)
    }
    async fn reap(&self) -> Vec<String> {
        delegate!(self, b => b.reap().await)
    }
}
