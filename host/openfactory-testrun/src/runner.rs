//! A test run: a throwaway VM from the build's ISO, the guest agent waited
//! for, every check run with retries until its deadline, the serial console
//! kept as evidence, and the VM removed at the end, whatever happened
//! (passed, failed, error, stopped, timed out).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use openfactory_core::step::CheckKind;
use openfactory_vm::{VmBackend, VmError, VmSpec, VmState};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exec::{ExecError, ExecTimings, Exited, guest_exec};
use crate::probe::{Judgement, display, judge, probe};
use crate::report::{CheckResult, CheckStatus, RunReport, RunStatus, excerpt};
use openfactory_core::plan::PlannedCheck;

/// Serial console lines a report keeps.
pub const SERIAL_LINES: usize = 300;

/// How a run paces itself. The defaults are the real ones; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long one boot probe (`guest-ping`) waits for the agent (5 s).
    pub boot_ping: Duration,
    /// Between two boot probes (2 s).
    pub boot_poll: Duration,
    /// Boot progress counts against this; booting may take longer, up to
    /// the run's timeout (90 s).
    pub expected_boot: Duration,
    /// Between two attempts of a check (1 s).
    pub retry: Duration,
    /// How long a failed unit's journal may take to fetch (15 s).
    pub journal: Duration,
    /// Each command inside the guest.
    pub exec: ExecTimings,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            boot_ping: Duration::from_secs(5),
            boot_poll: Duration::from_secs(2),
            expected_boot: Duration::from_secs(90),
            retry: Duration::from_secs(1),
            journal: Duration::from_secs(15),
            exec: ExecTimings::default(),
        }
    }
}

pub struct RunSettings {
    /// The throwaway VM's id (recorded before it exists, so that a host that
    /// dies mid-run can remove it).
    pub vm_id: String,
    pub iso: PathBuf,
    pub memory_mb: u32,
    pub vcpus: u32,
    /// The whole run: boot and every check.
    pub timeout: Duration,
}

/// The stages of a test run, in order (stored and shown as their names).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The test VM starts and boots until its guest agent answers.
    Boot,
    /// The checks run inside the guest.
    Checks,
    /// The serial log is kept and the VM removed.
    Cleanup,
    /// The run ended.
    Done,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Boot, Stage::Checks, Stage::Cleanup, Stage::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Boot => "boot",
            Stage::Checks => "checks",
            Stage::Cleanup => "cleanup",
            Stage::Done => "done",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("`{}` is not a test run stage", s.escape_debug()))
    }
}

/// What a run reports while it goes.
pub trait RunObserver: Send + Sync {
    /// `done`: the checks finished so far.
    fn progress(&self, stage: Stage, percent: u8, message: &str, done: &[CheckResult]);
}

#[derive(Default)]
struct Found {
    results: Vec<CheckResult>,
    boot_seconds: Option<f64>,
    accelerator: Option<String>,
}

/// One run with the real [`Timings`].
pub async fn run<B: VmBackend>(
    backend: &B,
    settings: &RunSettings,
    checks: &[PlannedCheck],
    observer: &dyn RunObserver,
    stop: CancellationToken,
) -> RunReport {
    run_with_timings(
        backend,
        settings,
        &Timings::default(),
        checks,
        observer,
        stop,
    )
    .await
}

/// One run, paced by `timings`.
pub async fn run_with_timings<B: VmBackend>(
    backend: &B,
    settings: &RunSettings,
    timings: &Timings,
    checks: &[PlannedCheck],
    observer: &dyn RunObserver,
    stop: CancellationToken,
) -> RunReport {
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let found = Mutex::new(Found::default());
    let (status, message) = tokio::select! {
        outcome = boot_and_check(backend, settings, timings, checks, observer, &found, deadline) => outcome,
        _ = stop.cancelled() => (RunStatus::Stopped, "stopped on request".to_owned()),
        _ = tokio::time::sleep_until(deadline) => (
            RunStatus::TimedOut,
            format!("the run's budget of {} s ran out", settings.timeout.as_secs()),
        ),
    };
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    observer.progress(
        Stage::Cleanup,
        98,
        "keeping the serial log; removing the test VM",
        &found.results,
    );
    let serial = backend
        .serial_log(&settings.vm_id)
        .await
        .unwrap_or_default();
    let text = openfactory_vm::console::console_text(&serial);
    let lines: Vec<&str> = text.lines().collect();
    let serial_log = lines[lines.len().saturating_sub(SERIAL_LINES)..]
        .iter()
        .map(|l| l.chars().take(400).collect())
        .collect();
    match backend.delete(&settings.vm_id).await {
        Ok(()) | Err(VmError::NotFound(_)) => {}
        Err(e) => tracing::warn!(vm = %settings.vm_id, error = %e, "removing a test VM"),
    }
    // Checks that never ran say why.
    let why = match status {
        RunStatus::Stopped => "not run: the run was stopped",
        RunStatus::TimedOut => "not run: the run's time budget ran out",
        _ => "not run: the VM never became ready",
    };
    for check in &checks[found.results.len().min(checks.len())..] {
        found.results.push(CheckResult {
            name: check.name.clone(),
            source: check.source.clone(),
            description: check.description.clone(),
            status: CheckStatus::Skipped,
            message: why.into(),
            duration_seconds: 0.0,
            attempts: 0,
            command: display(&probe(&check.kind).argv),
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
        });
    }
    RunReport {
        status,
        message,
        boot_seconds: found.boot_seconds,
        duration_seconds: started.elapsed().as_secs_f64(),
        accelerator: found.accelerator,
        checks: found.results,
        serial_log,
    }
}

fn percent(from: u8, span: u8, part: f64) -> u8 {
    from + (f64::from(span) * part.clamp(0.0, 1.0)) as u8
}

async fn boot_and_check<B: VmBackend>(
    backend: &B,
    settings: &RunSettings,
    timings: &Timings,
    checks: &[PlannedCheck],
    observer: &dyn RunObserver,
    found: &Mutex<Found>,
    deadline: Instant,
) -> (RunStatus, String) {
    let spec = VmSpec {
        id: settings.vm_id.clone(),
        iso: settings.iso.clone(),
        memory_mb: settings.memory_mb,
        vcpus: settings.vcpus,
        disk_gb: None,
        forwards: Vec::new(),
    };
    observer.progress(Stage::Boot, 1, "starting the test VM", &[]);
    let booting = Instant::now();
    match backend.create(&spec).await {
        Ok(record) => {
            found.lock().expect("not poisoned").accelerator = Some(record.accel.to_string())
        }
        Err(e) => return (RunStatus::Error, format!("the test VM did not start: {e}")),
    }
    // Booted when the guest agent answers (about when the login prompt appears).
    let ping = json!({"execute": "guest-ping"});
    loop {
        if backend
            .agent(&spec.id, &ping, timings.boot_ping)
            .await
            .is_ok()
        {
            break;
        }
        if backend.state(&spec.id).await == VmState::Stopped {
            return (
                RunStatus::Error,
                "the test VM stopped while booting; the serial log shows why".into(),
            );
        }
        let elapsed = booting.elapsed();
        observer.progress(
            Stage::Boot,
            percent(
                2,
                38,
                elapsed.as_secs_f64() / timings.expected_boot.as_secs_f64(),
            ),
            &format!(
                "booting ({} s); waiting for the guest agent",
                elapsed.as_secs()
            ),
            &[],
        );
        tokio::time::sleep(timings.boot_poll).await;
    }
    let boot = booting.elapsed().as_secs_f64();
    found.lock().expect("not poisoned").boot_seconds = Some(boot);

    let total = checks.len().max(1) as f64;
    for (i, check) in checks.iter().enumerate() {
        let done = found.lock().expect("not poisoned").results.clone();
        observer.progress(
            Stage::Checks,
            percent(40, 57, i as f64 / total),
            &format!("check {} of {}: {}", i + 1, checks.len(), check.name),
            &done,
        );
        let result = run_check(backend, &spec.id, check, deadline, timings).await;
        found.lock().expect("not poisoned").results.push(result);
    }
    let found = found.lock().expect("not poisoned");
    let failed: Vec<&str> = found
        .results
        .iter()
        .filter(|r| r.status != CheckStatus::Passed)
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        (
            RunStatus::Passed,
            format!(
                "all {} checks passed (booted in {boot:.0} s)",
                found.results.len()
            ),
        )
    } else {
        (
            RunStatus::Failed,
            format!(
                "{} of {} checks did not pass: {}",
                failed.len(),
                found.results.len(),
                failed.join(", ")
            ),
        )
    }
}

/// One check, retried (like nixosTest's `wait_until_succeeds`) until it
/// passes, fails for good, or its deadline comes.
async fn run_check<B: VmBackend>(
    backend: &B,
    vm: &str,
    check: &PlannedCheck,
    run_deadline: Instant,
    timings: &Timings,
) -> CheckResult {
    let probe = probe(&check.kind);
    let started = Instant::now();
    let deadline =
        (started + Duration::from_secs(u64::from(check.timeout_seconds))).min(run_deadline);
    let mut attempts = 0;
    let mut last: Option<Exited> = None;
    let mut last_error = String::new();
    let finish =
        |status: CheckStatus, message: String, last: Option<&Exited>, attempts: u32| CheckResult {
            name: check.name.clone(),
            source: check.source.clone(),
            description: check.description.clone(),
            status,
            message,
            duration_seconds: started.elapsed().as_secs_f64(),
            attempts,
            command: display(&probe.argv),
            exit_code: last.and_then(|l| l.exit_code),
            stdout: last.map(|l| excerpt(&l.stdout)).unwrap_or_default(),
            stderr: last.map(|l| excerpt(&l.stderr)).unwrap_or_default(),
        };
    loop {
        attempts += 1;
        match guest_exec(backend, vm, &probe.argv, deadline, &timings.exec).await {
            Ok(exited) => {
                let judgement = match exited.exit_code {
                    Some(code) => judge(probe.verdict, code, &exited.stdout),
                    None => Judgement::Retry,
                };
                match judgement {
                    Judgement::Pass => {
                        return finish(
                            CheckStatus::Passed,
                            "passed".into(),
                            Some(&exited),
                            attempts,
                        );
                    }
                    Judgement::Fail => {
                        let mut result = finish(
                            CheckStatus::Failed,
                            why_not(&check.kind, &exited, true),
                            Some(&exited),
                            attempts,
                        );
                        if let CheckKind::UnitActive { unit } = &check.kind {
                            result.stderr =
                                unit_journal(backend, vm, unit, run_deadline, timings).await;
                        }
                        return result;
                    }
                    Judgement::Retry => last = Some(exited),
                }
            }
            Err(ExecError::Timeout) => {
                return finish(
                    CheckStatus::TimedOut,
                    format!(
                        "its command was still running after {:.0} s",
                        started.elapsed().as_secs_f64()
                    ),
                    last.as_ref(),
                    attempts,
                );
            }
            Err(ExecError::Refused(why)) => {
                return finish(
                    CheckStatus::Error,
                    format!("the guest agent could not run it: {why}"),
                    None,
                    attempts,
                );
            }
            // The agent hiccuped (or the VM is gone): retry until the deadline.
            Err(ExecError::Vm(e)) => last_error = e.to_string(),
        }
        if Instant::now() + timings.retry >= deadline {
            return match &last {
                Some(exited) => {
                    let mut result = finish(
                        CheckStatus::Failed,
                        format!(
                            "{} (still, after {:.0} s and {attempts} attempts)",
                            why_not(&check.kind, exited, false),
                            started.elapsed().as_secs_f64()
                        ),
                        Some(exited),
                        attempts,
                    );
                    if let CheckKind::UnitActive { unit } = &check.kind {
                        result.stderr =
                            unit_journal(backend, vm, unit, run_deadline, timings).await;
                    }
                    result
                }
                None => finish(
                    CheckStatus::Error,
                    format!("it could not be run: {last_error}"),
                    None,
                    attempts,
                ),
            };
        }
        tokio::time::sleep(timings.retry).await;
    }
}

/// Why an attempt did not pass, in the check's own terms.
fn why_not(kind: &CheckKind, exited: &Exited, definitive: bool) -> String {
    let code = exited
        .exit_code
        .map_or("no exit code (killed by a signal)".to_owned(), |c| {
            format!("exit code {c}")
        });
    let said = exited.stdout.trim();
    match kind {
        CheckKind::UnitActive { unit } if definitive => format!("{unit} entered the failed state"),
        CheckKind::UnitActive { unit } => format!(
            "{unit} is {}",
            if said.is_empty() { "not active" } else { said }
        ),
        CheckKind::CommandSucceeds { .. } => format!("the command ended with {code}"),
        CheckKind::PortOpen { port, protocol } => format!("nothing listens on {port}/{protocol}"),
        CheckKind::FileExists { path } => format!("{path} does not exist"),
        CheckKind::PackageInstalled { package } => format!("package {package} is not installed"),
        CheckKind::HttpGet { url } if said.is_empty() => {
            format!("GET {url} got no answer ({code})")
        }
        CheckKind::HttpGet { url } => {
            format!("GET {url} answered `{}`", said.lines().next().unwrap_or(""))
        }
    }
}

/// The unit's last journal lines: the evidence for why it is not active.
async fn unit_journal<B: VmBackend>(
    backend: &B,
    vm: &str,
    unit: &str,
    run_deadline: Instant,
    timings: &Timings,
) -> String {
    let argv: Vec<String> = ["journalctl", "--no-pager", "-n", "30", "-u", unit]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let deadline = (Instant::now() + timings.journal).min(run_deadline);
    match guest_exec(backend, vm, &argv, deadline, &timings.exec).await {
        Ok(exited) => excerpt(&format!("journalctl -u {unit}:\n{}", exited.stdout)),
        Err(_) => String::new(),
    }
}
