//! OpenFactory's VM backends behind one interface, [`VmBackend`]:
//!
//! - [`QemuBackend`] (the default): a daemonized QEMU per VM, supervised over
//!   QMP, with its serial console in a file, the guest-agent channel, user
//!   networking and VNC (with websocket) on loopback.
//! - `LibvirtBackend` (feature `libvirt`): the same VMs as libvirt domains,
//!   through a local or remote URI.
//! - `DoubleBackend` (feature `test-double`): an in-memory backend for
//!   tests, with scripted guest-agent answers, injected failures and a log
//!   of every call.
//!
//! Nothing here knows owners, names or MCP: a VM is an id, a spec and a record.

pub mod accel;
pub mod agent;
pub mod backend;
pub mod console;
pub mod domain;
#[cfg(feature = "test-double")]
pub mod double;
pub mod error;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod qemu;
pub mod qmp;
pub mod records;
pub mod spec;

pub use accel::{Accel, AccelSetting};
pub use backend::{Backend, StopOutcome, VmBackend, VmState};
#[cfg(feature = "test-double")]
pub use double::DoubleBackend;
pub use error::VmError;
#[cfg(feature = "libvirt")]
pub use libvirt::{LibvirtBackend, LibvirtConfig};
pub use qemu::QemuBackend;
pub use records::{Records, VmRecord};
pub use spec::{PortForward, VmSpec};
