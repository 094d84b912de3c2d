//! What can go wrong with a VM, whichever backend runs it.

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the VM could not start: {0}")]
    Start(String),
    #[error("{0}")]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("{0}")]
    Agent(#[from] crate::agent::AgentError),
    #[error("VM `{0}` is not running")]
    NotRunning(String),
    #[error("libvirt: {0}")]
    Libvirt(String),
    #[error("VM `{0}` does not exist")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
}
