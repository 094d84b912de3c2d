//! An in-memory [`VmBackend`] for tests (feature `test-double`): no
//! processes, no files, no sockets, but the same answers a real backend
//! gives where its callers can see them.
//!
//! - `create` records the VM and leaves it running; `start`, `stop` and
//!   `delete` change its state as QEMU's backend does (`stop` with force is
//!   [`StopOutcome::Killed`], without it [`StopOutcome::PoweredOff`], or
//!   [`StopOutcome::StillRunning`] when told the guest ignores ACPI).
//! - `agent` answers the guest agent's commands (`guest-sync-delimited`,
//!   `guest-ping`, `guest-exec`, `guest-exec-status`, and any given with
//!   [`DoubleBackend::answer`]); what a command run by `guest-exec` does is
//!   scripted per argument vector ([`DoubleBackend::script`]).
//! - Failures are injected: create fails ([`DoubleBackend::fail_create`]),
//!   the agent never answers ([`AgentMode::Silent`]), a command exits
//!   non-zero, hangs or is refused ([`Exec`]), the VM dies
//!   ([`DoubleBackend::crash`], found by `reap`).
//! - Every call is logged ([`DoubleBackend::calls`]), so a test asserts what
//!   its subject did (how many deletes per id, in which order).
//!
//! A `DoubleBackend` is a handle: clones share one state, so a test keeps
//! one and gives the other away (also as [`crate::Backend::Double`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use crate::accel::Accel;
use crate::agent::AgentError;
use crate::backend::{StopOutcome, VmBackend, VmState};
use crate::error::VmError;
use crate::records::{VmRecord, check_id, unix_now};
use crate::spec::VmSpec;

/// What a command started by `guest-exec` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exec {
    /// It runs through `polls` `guest-exec-status` polls (answered with
    /// `exited: false`), then exits with `code`.
    Exits {
        code: i32,
        stdout: String,
        stderr: String,
        polls: u32,
    },
    /// A signal ends it: exited, without an exit code.
    Killed { signal: i32 },
    /// It never ends.
    Hangs,
    /// `guest-exec` itself fails (no such program, …): the agent's error,
    /// with this description.
    Refused(String),
}

impl Exec {
    /// Exits at once with `code`, printing nothing.
    pub fn exit(code: i32) -> Exec {
        Exec::output(code, "", "")
    }

    /// Exits at once with `code`, printing `stdout` and `stderr`.
    pub fn output(code: i32, stdout: &str, stderr: &str) -> Exec {
        Exec::Exits {
            code,
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
            polls: 0,
        }
    }

    /// The same exit, after `polls` status polls that find it still running.
    pub fn after_polls(self, n: u32) -> Exec {
        match self {
            Exec::Exits {
                code,
                stdout,
                stderr,
                ..
            } => Exec::Exits {
                code,
                stdout,
                stderr,
                polls: n,
            },
            other => other,
        }
    }
}

/// How the guest agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentMode {
    /// Every request is answered at once.
    #[default]
    Answers,
    /// No request is ever answered: each waits its timeout and fails with
    /// [`AgentError::Timeout`], as a guest without an agent does.
    Silent,
    /// The first `n` requests after each (re)start time out like `Silent`
    /// (the guest is booting); later ones are answered.
    BootsAfter(u32),
}

/// One call a backend received, in the order received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Create(String),
    Start(String),
    State(String),
    Stop { id: String, force: bool },
    Delete(String),
    Record(String),
    List,
    SerialLog(String),
    VncAddress(String),
    Agent { id: String, request: Value },
    Reap,
}

impl Call {
    /// The VM the call was about (`list` and `reap` are about none).
    pub fn id(&self) -> Option<&str> {
        match self {
            Call::Create(id)
            | Call::Start(id)
            | Call::State(id)
            | Call::Stop { id, .. }
            | Call::Delete(id)
            | Call::Record(id)
            | Call::SerialLog(id)
            | Call::VncAddress(id)
            | Call::Agent { id, .. } => Some(id),
            Call::List | Call::Reap => None,
        }
    }
}

struct Vm {
    record: VmRecord,
    running: bool,
    /// Died without being asked; `reap` has not reported it yet.
    crashed: bool,
    vnc_display: u16,
    /// Agent requests since the last (re)start, for [`AgentMode::BootsAfter`].
    agent_requests: u32,
}

/// A `guest-exec` that has not been reported as exited yet.
struct Process {
    vm: String,
    exec: Exec,
    polls_left: u32,
}

/// The commands' outcomes, used in order; the last one repeats.
struct Script {
    outcomes: Vec<Exec>,
    used: usize,
}

impl Script {
    fn next(&mut self) -> Exec {
        let i = self.used.min(self.outcomes.len() - 1);
        self.used += 1;
        self.outcomes[i].clone()
    }
}

struct Inner {
    vms: BTreeMap<String, Vm>,
    calls: Vec<Call>,
    accel: Accel,
    serial: Vec<u8>,
    vnc: Option<SocketAddr>,
    next_display: u16,
    create_error: Option<String>,
    create_delay: Duration,
    delete_error: Option<String>,
    ignores_acpi: bool,
    agent: AgentMode,
    answers: HashMap<String, Result<Value, String>>,
    by_argv: HashMap<Vec<String>, Script>,
    by_program: HashMap<String, Script>,
    unscripted: Option<Exec>,
    processes: HashMap<i64, Process>,
    next_pid: i64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            vms: BTreeMap::new(),
            calls: Vec::new(),
            accel: Accel::Tcg,
            serial: Vec::new(),
            vnc: None,
            next_display: 0,
            create_error: None,
            create_delay: Duration::ZERO,
            delete_error: None,
            ignores_acpi: false,
            agent: AgentMode::Answers,
            answers: HashMap::new(),
            by_argv: HashMap::new(),
            by_program: HashMap::new(),
            unscripted: None,
            processes: HashMap::new(),
            next_pid: 1000,
        }
    }
}

/// The in-memory backend. See the module's documentation.
#[derive(Clone, Default)]
pub struct DoubleBackend {
    inner: Arc<Mutex<Inner>>,
}

fn agent_error(command: &str, desc: impl Into<String>) -> VmError {
    VmError::Agent(AgentError::Command {
        command: command.to_owned(),
        desc: desc.into(),
    })
}

impl DoubleBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, call: Call) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        inner.calls.push(call);
        inner
    }

    // ---- configuration ----

    /// The accelerator new VMs' records name (`tcg` unless told).
    pub fn set_accel(&self, accel: Accel) {
        self.lock().accel = accel;
    }

    /// What `serial_log` returns, for every VM.
    pub fn set_serial_log(&self, bytes: impl Into<Vec<u8>>) {
        self.lock().serial = bytes.into();
    }

    /// What `vnc_address` returns, for every VM (by default
    /// `127.0.0.1:5900+n`, a display per VM, where nothing listens).
    pub fn set_vnc_address(&self, address: SocketAddr) {
        self.lock().vnc = Some(address);
    }

    /// Every `create` from now on fails with [`VmError::Start`] and this
    /// message, after recording the VM (stopped), as QEMU's backend does
    /// when QEMU refuses to start. `None` lets creates succeed again.
    pub fn fail_create(&self, message: Option<&str>) {
        self.lock().create_error = message.map(str::to_owned);
    }

    /// `create` records the VM (running) and then takes this long to return,
    /// as a real backend waits for its hypervisor; a caller that gives up
    /// meanwhile leaves a VM behind.
    pub fn set_create_delay(&self, delay: Duration) {
        self.lock().create_delay = delay;
    }

    /// Every `delete` from now on fails with [`VmError::Io`] and this
    /// message, and the VM stays. `None` lets deletes succeed again.
    pub fn fail_delete(&self, message: Option<&str>) {
        self.lock().delete_error = message.map(str::to_owned);
    }

    /// Guests ignore ACPI power-down: `stop` without force waits its timeout
    /// and says [`StopOutcome::StillRunning`].
    pub fn set_ignores_acpi(&self, ignores: bool) {
        self.lock().ignores_acpi = ignores;
    }

    pub fn set_agent(&self, mode: AgentMode) {
        let mut inner = self.lock();
        inner.agent = mode;
        for vm in inner.vms.values_mut() {
            vm.agent_requests = 0;
        }
    }

    /// The agent answers `execute` (a command other than the built-in ones,
    /// or instead of one) with this `return` value, or `Err(desc)` as the
    /// agent's error.
    pub fn answer(&self, execute: &str, reply: Result<Value, String>) {
        self.lock().answers.insert(execute.to_owned(), reply);
    }

    /// What `guest-exec` of exactly `argv` does: `outcomes` in order, one per
    /// run, the last repeated. Replaces an earlier script for the same argv.
    pub fn script<S: Into<String>>(
        &self,
        argv: impl IntoIterator<Item = S>,
        outcomes: impl IntoIterator<Item = Exec>,
    ) {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        let script = Self::new_script(outcomes);
        self.lock().by_argv.insert(argv, script);
    }

    /// Like [`Self::script`] for every run of `program`, whatever its
    /// arguments (an exact argv script wins).
    pub fn script_program(&self, program: &str, outcomes: impl IntoIterator<Item = Exec>) {
        let script = Self::new_script(outcomes);
        self.lock().by_program.insert(program.to_owned(), script);
    }

    fn new_script(outcomes: impl IntoIterator<Item = Exec>) -> Script {
        let outcomes: Vec<Exec> = outcomes.into_iter().collect();
        assert!(!outcomes.is_empty(), "a script needs at least one outcome");
        Script { outcomes, used: 0 }
    }

    /// What a command without a script does. By default it is refused
    /// ("no script for …"), so a test sees at once what it forgot.
    pub fn set_unscripted(&self, exec: Exec) {
        self.lock().unscripted = Some(exec);
    }

    /// The VM dies: it stops without being asked, its commands with it, and
    /// the next `reap` reports it. Panics if there is no such VM.
    pub fn crash(&self, id: &str) {
        let mut inner = self.lock();
        let vm = inner
            .vms
            .get_mut(id)
            .unwrap_or_else(|| panic!("crash: the double has no VM `{id}`"));
        vm.running = false;
        vm.crashed = true;
        inner.processes.retain(|_, p| p.vm != id);
    }

    // ---- observation ----

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls about VM `id`, in order.
    pub fn calls_for(&self, id: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.id() == Some(id))
            .cloned()
            .collect()
    }

    fn count(&self, wanted: impl Fn(&Call) -> bool) -> usize {
        self.lock().calls.iter().filter(|c| wanted(c)).count()
    }

    pub fn creates(&self, id: &str) -> usize {
        self.count(|c| matches!(c, Call::Create(i) if i == id))
    }

    pub fn stops(&self, id: &str) -> usize {
        self.count(|c| matches!(c, Call::Stop { id: i, .. } if i == id))
    }

    pub fn deletes(&self, id: &str) -> usize {
        self.count(|c| matches!(c, Call::Delete(i) if i == id))
    }

    /// The argument vectors `guest-exec` was asked to run in VM `id`, in order.
    pub fn execs(&self, id: &str) -> Vec<Vec<String>> {
        self.calls_for(id)
            .iter()
            .filter_map(|c| match c {
                Call::Agent { request, .. } if request["execute"] == "guest-exec" => {
                    let args = &request["arguments"];
                    let mut argv = vec![args["path"].as_str().unwrap_or("").to_owned()];
                    argv.extend(
                        args["arg"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| a.as_str().unwrap_or("").to_owned()),
                    );
                    Some(argv)
                }
                _ => None,
            })
            .collect()
    }

    /// Whether the VM exists and runs, without logging a call.
    pub fn is_running(&self, id: &str) -> bool {
        self.lock().vms.get(id).is_some_and(|vm| vm.running)
    }

    // ---- the agent ----

    fn guest_exec(inner: &mut Inner, id: &str, arguments: &Value) -> Result<Value, VmError> {
        let Some(path) = arguments["path"].as_str() else {
            return Err(agent_error("guest-exec", "Parameter 'path' is missing"));
        };
        let mut argv = vec![path.to_owned()];
        for arg in arguments["arg"].as_array().into_iter().flatten() {
            match arg.as_str() {
                Some(a) => argv.push(a.to_owned()),
                None => {
                    return Err(agent_error(
                        "guest-exec",
                        "Invalid parameter type for 'arg', expected: string",
                    ));
                }
            }
        }
        let exec = if let Some(script) = inner.by_argv.get_mut(&argv) {
            script.next()
        } else if let Some(script) = inner.by_program.get_mut(path) {
            script.next()
        } else if let Some(exec) = &inner.unscripted {
            exec.clone()
        } else {
            Exec::Refused(format!("the test double has no script for {argv:?}"))
        };
        if let Exec::Refused(desc) = exec {
            return Err(agent_error("guest-exec", desc));
        }
        let pid = inner.next_pid;
        inner.next_pid += 1;
        let polls_left = match &exec {
            Exec::Exits { polls, .. } => *polls,
            _ => 0,
        };
        inner.processes.insert(
            pid,
            Process {
                vm: id.to_owned(),
                exec,
                polls_left,
            },
        );
        Ok(json!({ "pid": pid }))
    }

    fn guest_exec_status(inner: &mut Inner, id: &str, arguments: &Value) -> Result<Value, VmError> {
        let invalid = || agent_error("guest-exec-status", "Invalid parameter 'pid'");
        let pid = arguments["pid"].as_i64().ok_or_else(invalid)?;
        let process = inner
            .processes
            .get_mut(&pid)
            .filter(|p| p.vm == id)
            .ok_or_else(invalid)?;
        if process.polls_left > 0 {
            process.polls_left -= 1;
            return Ok(json!({ "exited": false }));
        }
        let status = match &process.exec {
            Exec::Hangs => return Ok(json!({ "exited": false })),
            Exec::Exits {
                code,
                stdout,
                stderr,
                ..
            } => {
                let mut status = json!({ "exited": true, "exitcode": code });
                // qemu-ga leaves out the output fields when there was none.
                if !stdout.is_empty() {
                    status["out-data"] = base64(stdout.as_bytes()).into();
                }
                if !stderr.is_empty() {
                    status["err-data"] = base64(stderr.as_bytes()).into();
                }
                status
            }
            Exec::Killed { signal } => json!({ "exited": true, "signal": signal }),
            Exec::Refused(_) => unreachable!("refused commands never get a pid"),
        };
        // Reported once, then forgotten, as qemu-ga does.
        inner.processes.remove(&pid);
        Ok(status)
    }
}

impl VmBackend for DoubleBackend {
    fn kind(&self) -> &'static str {
        "double"
    }

    async fn create(&self, spec: &VmSpec) -> Result<VmRecord, VmError> {
        let (record, delay) = {
            let mut inner = self.log(Call::Create(spec.id.clone()));
            check_id(&spec.id)?;
            let record = VmRecord {
                spec: spec.clone(),
                accel: inner.accel,
                unexpected_stop: None,
            };
            let vnc_display = inner.next_display;
            inner.next_display += 1;
            let failure = inner.create_error.clone();
            inner.vms.insert(
                spec.id.clone(),
                Vm {
                    record: record.clone(),
                    running: failure.is_none(),
                    crashed: false,
                    vnc_display,
                    agent_requests: 0,
                },
            );
            if let Some(message) = failure {
                return Err(VmError::Start(message));
            }
            (record, inner.create_delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(record)
    }

    async fn start(&self, id: &str) -> Result<VmRecord, VmError> {
        let mut inner = self.log(Call::Start(id.to_owned()));
        let vm = inner
            .vms
            .get_mut(id)
            .ok_or_else(|| VmError::NotFound(id.to_owned()))?;
        if !vm.running {
            vm.running = true;
            vm.crashed = false;
            vm.agent_requests = 0;
            vm.record.unexpected_stop = None;
        }
        Ok(vm.record.clone())
    }

    async fn state(&self, id: &str) -> VmState {
        let inner = self.log(Call::State(id.to_owned()));
        match inner.vms.get(id) {
            Some(vm) if vm.running => VmState::Running {
                detail: "running".into(),
            },
            _ => VmState::Stopped,
        }
    }

    async fn stop(&self, id: &str, force: bool, timeout: Duration) -> Result<StopOutcome, VmError> {
        {
            let mut inner = self.log(Call::Stop {
                id: id.to_owned(),
                force,
            });
            let ignores_acpi = inner.ignores_acpi;
            let vm = inner
                .vms
                .get_mut(id)
                .ok_or_else(|| VmError::NotFound(id.to_owned()))?;
            if !vm.running {
                return Ok(StopOutcome::AlreadyStopped);
            }
            if force || !ignores_acpi {
                vm.running = false;
                inner.processes.retain(|_, p| p.vm != id);
                return Ok(if force {
                    StopOutcome::Killed
                } else {
                    StopOutcome::PoweredOff
                });
            }
        }
        // The guest ignores the request: a real backend waits it out.
        tokio::time::sleep(timeout).await;
        Ok(StopOutcome::StillRunning)
    }

    async fn delete(&self, id: &str) -> Result<(), VmError> {
        let mut inner = self.log(Call::Delete(id.to_owned()));
        if !inner.vms.contains_key(id) {
            return Err(VmError::NotFound(id.to_owned()));
        }
        if let Some(message) = inner.delete_error.clone() {
            return Err(VmError::Io(std::io::Error::other(message)));
        }
        inner.vms.remove(id);
        inner.processes.retain(|_, p| p.vm != id);
        Ok(())
    }

    fn record(&self, id: &str) -> Result<VmRecord, VmError> {
        let inner = self.log(Call::Record(id.to_owned()));
        inner
            .vms
            .get(id)
            .map(|vm| vm.record.clone())
            .ok_or_else(|| VmError::NotFound(id.to_owned()))
    }

    fn list(&self) -> Vec<String> {
        let inner = self.log(Call::List);
        inner.vms.keys().cloned().collect()
    }

    async fn serial_log(&self, id: &str) -> Result<Vec<u8>, VmError> {
        let inner = self.log(Call::SerialLog(id.to_owned()));
        if !inner.vms.contains_key(id) {
            return Err(VmError::NotFound(id.to_owned()));
        }
        Ok(inner.serial.clone())
    }

    async fn vnc_address(&self, id: &str) -> Result<SocketAddr, VmError> {
        let inner = self.log(Call::VncAddress(id.to_owned()));
        let vm = inner
            .vms
            .get(id)
            .ok_or_else(|| VmError::NotFound(id.to_owned()))?;
        Ok(inner.vnc.unwrap_or(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            5900 + vm.vnc_display,
        ))))
    }

    async fn agent(&self, id: &str, request: &Value, timeout: Duration) -> Result<Value, VmError> {
        let answered = {
            let mut inner = self.log(Call::Agent {
                id: id.to_owned(),
                request: request.clone(),
            });
            let mode = inner.agent;
            let vm = inner
                .vms
                .get_mut(id)
                .ok_or_else(|| VmError::NotFound(id.to_owned()))?;
            if !vm.running {
                return Err(VmError::NotRunning(id.to_owned()));
            }
            vm.agent_requests += 1;
            let answers = match mode {
                AgentMode::Answers => true,
                AgentMode::Silent => false,
                AgentMode::BootsAfter(n) => vm.agent_requests > n,
            };
            if answers {
                let command = request["execute"].as_str().unwrap_or("").to_owned();
                let arguments = &request["arguments"];
                Some(match inner.answers.get(&command) {
                    Some(Ok(value)) => Ok(value.clone()),
                    Some(Err(desc)) => Err(agent_error(&command, desc.clone())),
                    None => match command.as_str() {
                        "guest-sync-delimited" | "guest-sync" => Ok(arguments["id"].clone()),
                        "guest-ping" => Ok(json!({})),
                        "guest-exec" => Self::guest_exec(&mut inner, id, arguments),
                        "guest-exec-status" => Self::guest_exec_status(&mut inner, id, arguments),
                        other => Err(agent_error(
                            other,
                            format!("The command {other} has not been found"),
                        )),
                    },
                })
            } else {
                None
            }
        };
        match answered {
            Some(answer) => answer,
            None => {
                tokio::time::sleep(timeout).await;
                Err(VmError::Agent(AgentError::Timeout(timeout)))
            }
        }
    }

    async fn reap(&self) -> Vec<String> {
        let mut inner = self.log(Call::Reap);
        let mut reaped = Vec::new();
        for (id, vm) in inner.vms.iter_mut() {
            if vm.crashed {
                vm.crashed = false;
                vm.record.unexpected_stop = Some(unix_now());
                reaped.push(id.clone());
            }
        }
        reaped
    }
}

/// Standard base64 with padding, as qemu-ga encodes output (the crate has
/// no base64 dependency for this alone).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> VmSpec {
        VmSpec {
            id: id.into(),
            iso: "/x.iso".into(),
            memory_mb: 512,
            vcpus: 1,
            disk_gb: None,
            forwards: vec![],
        }
    }

    const T: Duration = Duration::from_millis(20);

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\n"), "Zm9vYmFyCg==");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[tokio::test]
    async fn a_vm_lives_through_create_stop_start_and_delete() {
        let vms = DoubleBackend::new();
        vms.set_serial_log("login: ");
        let record = vms.create(&spec("ab")).await.unwrap();
        assert_eq!(record.spec, spec("ab"));
        assert_eq!(record.accel, Accel::Tcg);
        assert_eq!(vms.list(), ["ab"]);
        assert!(matches!(vms.state("ab").await, VmState::Running { .. }));
        assert_eq!(vms.serial_log("ab").await.unwrap(), b"login: ");
        assert_eq!(
            vms.vnc_address("ab").await.unwrap(),
            "127.0.0.1:5900".parse().unwrap()
        );
        assert_eq!(
            vms.stop("ab", false, T).await.unwrap(),
            StopOutcome::PoweredOff
        );
        assert_eq!(vms.state("ab").await, VmState::Stopped);
        assert_eq!(
            vms.stop("ab", true, T).await.unwrap(),
            StopOutcome::AlreadyStopped
        );
        assert!(matches!(
            vms.agent("ab", &json!({"execute": "guest-ping"}), T).await,
            Err(VmError::NotRunning(_))
        ));
        vms.start("ab").await.unwrap();
        assert_eq!(vms.stop("ab", true, T).await.unwrap(), StopOutcome::Killed);
        vms.set_ignores_acpi(true);
        vms.start("ab").await.unwrap();
        assert_eq!(
            vms.stop("ab", false, T).await.unwrap(),
            StopOutcome::StillRunning
        );
        assert!(vms.is_running("ab"));
        vms.delete("ab").await.unwrap();
        assert!(vms.list().is_empty());
        assert!(matches!(vms.delete("ab").await, Err(VmError::NotFound(_))));
        assert!(matches!(vms.record("ab"), Err(VmError::NotFound(_))));
        assert!(matches!(
            vms.serial_log("ab").await,
            Err(VmError::NotFound(_))
        ));
        assert_eq!(vms.deletes("ab"), 2);
        assert_eq!(vms.stops("ab"), 4);
        assert!(
            vms.create(&spec("../etc")).await.is_err(),
            "ids are checked"
        );
    }

    #[tokio::test]
    async fn create_failures_leave_a_stopped_record_like_qemu() {
        let vms = DoubleBackend::new();
        vms.fail_create(Some("no KVM"));
        let err = vms.create(&spec("ab")).await.unwrap_err();
        assert!(
            matches!(err, VmError::Start(ref m) if m == "no KVM"),
            "{err}"
        );
        assert_eq!(vms.list(), ["ab"]);
        assert_eq!(vms.state("ab").await, VmState::Stopped);
        assert_eq!(vms.creates("ab"), 1);
    }

    #[tokio::test]
    async fn the_agent_runs_scripted_commands() {
        let vms = DoubleBackend::new();
        vms.create(&spec("ab")).await.unwrap();
        let sync = json!({"execute": "guest-sync-delimited", "arguments": {"id": 42}});
        assert_eq!(vms.agent("ab", &sync, T).await.unwrap(), json!(42));
        vms.script(
            ["systemctl", "is-active", "ssh"],
            [
                Exec::output(3, "activating\n", "").after_polls(2),
                Exec::output(0, "active\n", ""),
            ],
        );
        let exec = |argv: &[&str]| json!({"execute": "guest-exec", "arguments": {"path": argv[0], "arg": &argv[1..], "capture-output": true}});
        let status =
            |pid: &Value| json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
        let started = vms
            .agent("ab", &exec(&["systemctl", "is-active", "ssh"]), T)
            .await
            .unwrap();
        let pid = &started["pid"];
        for _ in 0..2 {
            let s = vms.agent("ab", &status(pid), T).await.unwrap();
            assert_eq!(s, json!({"exited": false}));
        }
        let s = vms.agent("ab", &status(pid), T).await.unwrap();
        assert_eq!(
            s,
            json!({"exited": true, "exitcode": 3, "out-data": base64(b"activating\n")})
        );
        assert!(
            vms.agent("ab", &status(pid), T).await.is_err(),
            "an exited pid is reported once"
        );
        for _ in 0..2 {
            let pid = vms
                .agent("ab", &exec(&["systemctl", "is-active", "ssh"]), T)
                .await
                .unwrap()["pid"]
                .clone();
            let s = vms.agent("ab", &status(&pid), T).await.unwrap();
            assert_eq!(s["exitcode"], 0, "the last outcome repeats");
        }
        let refused = vms
            .agent("ab", &exec(&["nope"]), T)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("no script for"), "{refused}");
        vms.script_program("sh", [Exec::Killed { signal: 9 }]);
        let pid = vms.agent("ab", &exec(&["sh", "-c", "x"]), T).await.unwrap()["pid"].clone();
        assert_eq!(
            vms.agent("ab", &status(&pid), T).await.unwrap(),
            json!({"exited": true, "signal": 9})
        );
        assert!(
            vms.agent("ab", &json!({"execute": "guest-info"}), T)
                .await
                .unwrap_err()
                .to_string()
                .contains("has not been found")
        );
        vms.answer("guest-info", Ok(json!({"version": "7.2"})));
        assert_eq!(
            vms.agent("ab", &json!({"execute": "guest-info"}), T)
                .await
                .unwrap()["version"],
            "7.2"
        );
        assert_eq!(vms.execs("ab").len(), 5);
        assert_eq!(vms.execs("ab")[4], ["sh", "-c", "x"]);
    }

    #[tokio::test]
    async fn a_silent_or_booting_agent_times_out() {
        let vms = DoubleBackend::new();
        vms.create(&spec("ab")).await.unwrap();
        let ping = json!({"execute": "guest-ping"});
        vms.set_agent(AgentMode::Silent);
        let err = vms.agent("ab", &ping, T).await.unwrap_err();
        assert!(
            matches!(err, VmError::Agent(AgentError::Timeout(t)) if t == T),
            "{err}"
        );
        vms.set_agent(AgentMode::BootsAfter(2));
        assert!(vms.agent("ab", &ping, T).await.is_err());
        assert!(vms.agent("ab", &ping, T).await.is_err());
        assert!(vms.agent("ab", &ping, T).await.is_ok());
    }

    #[tokio::test]
    async fn crashed_vms_are_reaped_once() {
        let vms = DoubleBackend::new();
        vms.create(&spec("ab")).await.unwrap();
        vms.create(&spec("cd")).await.unwrap();
        vms.crash("cd");
        assert_eq!(vms.state("cd").await, VmState::Stopped);
        assert_eq!(vms.reap().await, ["cd"]);
        assert!(vms.record("cd").unwrap().unexpected_stop.is_some());
        assert!(vms.reap().await.is_empty());
        vms.start("cd").await.unwrap();
        assert!(vms.record("cd").unwrap().unexpected_stop.is_none());
    }

    #[tokio::test]
    async fn clones_share_one_backend_also_as_backend() {
        let vms = DoubleBackend::new();
        let backend = crate::Backend::Double(vms.clone());
        assert_eq!(backend.kind(), "double");
        backend.create(&spec("ab")).await.unwrap();
        backend.delete("ab").await.unwrap();
        assert_eq!(vms.creates("ab"), 1);
        assert_eq!(vms.deletes("ab"), 1);
        assert_eq!(
            vms.calls(),
            [Call::Create("ab".into()), Call::Delete("ab".into())]
        );
    }
}
