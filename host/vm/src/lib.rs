//! OpenFactory's VM backends. Today: QEMU, started daemonized and
//! supervised over QMP, with its serial console in a file, the guest-agent
//! channel, user networking and VNC (with websocket) on loopback.
//!
//! Nothing here knows owners, names or MCP: a VM is an id, a spec and a
//! directory.

pub mod qemu;
pub mod qmp;
pub mod spec;

pub use qemu::{QemuBackend, StopOutcome, VmError, VmRecord, VmState};
pub use spec::{Accel, AccelSetting, PortForward, VmSpec};
