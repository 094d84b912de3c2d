//! Run a command inside a VM through its guest agent: `guest-exec` starts it
//! with its output captured, `guest-exec-status` is polled until it exits.

use std::time::Duration;

use base64::Engine as _;
use openfactory_vm::{VmBackend, VmError};
use serde_json::{Value, json};
use tokio::time::Instant;

/// How a command is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecTimings {
    /// How long one agent request may take (10 s).
    pub request: Duration,
    /// Between two `guest-exec-status` polls of a running command (200 ms).
    pub poll: Duration,
}

impl Default for ExecTimings {
    fn default() -> Self {
        ExecTimings {
            request: Duration::from_secs(10),
            poll: Duration::from_millis(200),
        }
    }
}

/// A command that ran to its end inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    /// None when a signal ended it.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub enum ExecError {
    /// Still running at the deadline (it is left to the throwaway VM).
    Timeout,
    /// The agent refused or failed to start it (e.g. no such program).
    Refused(String),
    Vm(VmError),
}

fn decode(field: &Value) -> String {
    field
        .as_str()
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

pub async fn guest_exec<B: VmBackend>(
    backend: &B,
    vm: &str,
    argv: &[String],
    deadline: Instant,
    timings: &ExecTimings,
) -> Result<Exited, ExecError> {
    let (path, args) = argv
        .split_first()
        .ok_or_else(|| ExecError::Refused("an empty command".into()))?;
    let started = backend
        .agent(
            vm,
            &json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args, "capture-output": true}}),
            timings.request,
        )
        .await
        .map_err(|e| match e {
            VmError::Agent(openfactory_vm::agent::AgentError::Command { desc, .. }) => ExecError::Refused(desc),
            other => ExecError::Vm(other),
        })?;
    let pid = started["pid"].as_i64().ok_or_else(|| {
        ExecError::Refused(format!("guest-exec answered without a pid: {started}"))
    })?;
    loop {
        let status = backend
            .agent(
                vm,
                &json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
                timings.request,
            )
            .await
            .map_err(ExecError::Vm)?;
        if status["exited"].as_bool() == Some(true) {
            return Ok(Exited {
                exit_code: status["exitcode"].as_i64().map(|c| c as i32),
                stdout: decode(&status["out-data"]),
                stderr: decode(&status["err-data"]),
            });
        }
        if Instant::now() >= deadline {
            return Err(ExecError::Timeout);
        }
        tokio::time::sleep(timings.poll).await;
    }
}
