//! The test-run tools' logic: a run of checks against one of the caller's
//! completed builds, queued as a job; its results as they come in; its stop.

use openfactory_core::Plan;
use openfactory_core::plan::PlannedCheck;
use openfactory_store::{
    BuildStatus, Needs, NewTestRun, OwnerId, StopRequest, TestRunRecord, TestRunStatus,
};
use openfactory_testrun::{CheckResult, RunReport, Stage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::App;
use crate::builds;
use crate::error::{Error, Result};
use crate::ids::{BuildId, RunId};
use crate::next::{Action, Next};

pub const DEFAULT_TIMEOUT_SECONDS: u32 = 900;
pub const MIN_TIMEOUT_SECONDS: u32 = 60;
/// Serial console lines a run's results show.
const SERIAL_TAIL: usize = 60;

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunCreated {
    pub run_id: String,
    pub build_id: String,
    pub status: TestRunStatus,
    /// The checks this run will run, in order.
    pub checks: Vec<String>,
    pub message: Next,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TestResults {
    pub run_id: String,
    pub build_id: String,
    /// queued, running, passed, failed, error, stopped or timed_out.
    pub status: TestRunStatus,
    /// boot, checks, cleanup or done.
    pub stage: Option<Stage>,
    /// 0–100.
    pub progress: u8,
    pub message: String,
    /// Which attempt this is: a job whose worker was lost goes back to the
    /// queue (at most 3 attempts in all); 0 while it waits for its first.
    pub attempt: u32,
    /// Why an earlier attempt ended before the job did, if one did.
    pub requeued_because: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub passed: u32,
    pub failed: u32,
    pub total: u32,
    /// Seconds from VM start to the guest agent answering.
    pub boot_seconds: Option<f64>,
    pub duration_seconds: Option<f64>,
    pub accelerator: Option<String>,
    /// Every check so far: status, why, the command, exit code, output excerpts.
    pub checks: Vec<CheckResult>,
    /// The last lines of the VM's serial console (evidence when boot or a unit failed).
    pub serial_log: Vec<String>,
    /// The same results as JUnit XML, when asked for with format=junit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub junit_xml: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub build_id: String,
    pub status: TestRunStatus,
    pub progress: u8,
    pub message: String,
    pub passed: Option<u32>,
    pub total: Option<u32>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    pub count: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunStopped {
    pub run_id: String,
    pub status: TestRunStatus,
    pub message: Next,
}

fn not_found(id: &RunId) -> Error {
    Error::not_found(format!("test run `{id}` not found")).see(Action::ListTestRuns)
}

pub async fn find(app: &App, owner: &OwnerId, id: &RunId) -> Result<TestRunRecord> {
    app.store
        .test_run(owner, id.as_str())
        .await?
        .ok_or_else(|| not_found(id))
}

fn bounded(
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
    field: &str,
    unit: &str,
) -> Result<u32> {
    match value.unwrap_or(i64::from(default)) {
        v if (i64::from(min)..=i64::from(max)).contains(&v) => Ok(v as u32),
        v => Err(Error::invalid(
            field,
            format!("{field}: {v} is out of range; use {min} to {max}{unit} (this server's limit)"),
        )),
    }
}

pub struct RunArgs {
    pub tests: Option<Vec<Value>>,
    pub memory_mb: Option<i64>,
    pub vcpus: Option<i64>,
    pub timeout_seconds: Option<i64>,
}

pub async fn create(
    app: &App,
    owner: &OwnerId,
    build_id: &BuildId,
    args: RunArgs,
) -> Result<RunCreated> {
    let limits = &app.settings;
    let mut errors = Vec::new();
    let mut field = None;
    let memory = bounded(
        args.memory_mb,
        1024.min(app.vms.max_memory_mb),
        256,
        app.vms.max_memory_mb,
        "memory_mb",
        " MiB",
    );
    let vcpus = bounded(args.vcpus, 1, 1, app.vms.max_vcpus, "vcpus", "");
    let timeout = bounded(
        args.timeout_seconds,
        DEFAULT_TIMEOUT_SECONDS.min(limits.max_test_timeout_seconds),
        MIN_TIMEOUT_SECONDS,
        limits.max_test_timeout_seconds,
        "timeout_seconds",
        " s",
    );
    for r in [&memory, &vcpus, &timeout] {
        if let Err(e) = r {
            field.get_or_insert_with(|| e.field().unwrap_or_default().to_owned());
            errors.push(e.message.clone());
        }
    }
    let build = builds::find(app, owner, build_id).await?;
    if build.status != BuildStatus::Completed {
        return Err(Error::conflict(format!(
            "build `{build_id}` is {}, not completed: tests boot a completed build's ISO",
            build.status
        )));
    }
    let plan: Plan = serde_json::from_str(&build.plan_json).map_err(|e| {
        tracing::error!(build = %build.id, error = %e, "stored plan unreadable");
        Error::internal("this build's plan could not be read; rebuild it").see(Action::RetryBuild)
    })?;
    if !plan.guest_agent {
        return Err(Error::conflict(format!(
            "build `{build_id}` has no guest agent (its recipe says guest_agent = false), so checks cannot reach inside it; \
             build the recipe with guest_agent = true to test it"
        )));
    }
    let checks: Vec<PlannedCheck> =
        match openfactory_testrun::select(&plan.checks, args.tests.as_deref()) {
            Ok(checks) => checks,
            Err(mut e) => {
                field.get_or_insert_with(|| "tests".to_owned());
                errors.append(&mut e);
                Vec::new()
            }
        };
    if !errors.is_empty() {
        return Err(Error::invalid(
            field.unwrap_or_default(),
            format!(
                "the test run was not started ({} problem{}):\n- {}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                errors.join("\n- ")
            ),
        ));
    }
    let active = app.store.active_test_runs(owner).await?;
    if active >= limits.max_active_test_runs {
        return Err(Error::limit_reached(format!(
            "you have {active} test runs queued or running (the limit is {}); wait for one, or stop one",
            limits.max_active_test_runs
        ))
        .see(Action::StopTestRun));
    }
    let id = RunId::generate();
    app.store
        .create_test_run(
            owner,
            &NewTestRun {
                id: id.as_str(),
                build_id: &build.id,
                checks_json: &serde_json::to_string(&checks).expect("serialisable"),
                memory_mb: memory.expect("checked"),
                vcpus: vcpus.expect("checked"),
                timeout_seconds: timeout.expect("checked"),
                needs: Needs {
                    arch: crate::builds::BUILD_ARCH,
                    // A copy of the ISO and the VM's overlay.
                    disk_bytes: build.iso_size_bytes.unwrap_or(0) + (1 << 30),
                },
            },
        )
        .await?;
    app.wake.test_runs.notify_one();
    Ok(RunCreated {
        run_id: id.into_string(),
        build_id: build.id,
        status: TestRunStatus::Queued,
        message: Next::new(
            format!(
                "Queued {} checks. The run boots the ISO in a throwaway VM (about a minute), runs the checks and removes the VM",
                checks.len()
            ),
            [Action::GetTestResults { wait: true }],
        ),
        checks: checks.into_iter().map(|c| c.name).collect(),
    })
}

/// A report as stored: complete once the run ended, only the finished checks
/// while it runs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoredReport {
    checks: Vec<CheckResult>,
    boot_seconds: Option<f64>,
    duration_seconds: Option<f64>,
    accelerator: Option<String>,
    serial_log: Vec<String>,
}

pub fn results(run: &TestRunRecord, junit: bool) -> TestResults {
    let json = run.report_json.as_deref().unwrap_or("{}");
    let report: StoredReport = serde_json::from_str(json).unwrap_or_default();
    let complete: Option<RunReport> = serde_json::from_str(json).ok();
    let checks = report.checks.clone();
    let passed = checks
        .iter()
        .filter(|c| c.status == openfactory_testrun::CheckStatus::Passed)
        .count() as u32;
    let counted = |s| checks.iter().filter(|c| c.status == s).count() as u32;
    let failed = counted(openfactory_testrun::CheckStatus::Failed)
        + counted(openfactory_testrun::CheckStatus::TimedOut)
        + counted(openfactory_testrun::CheckStatus::Error);
    let planned: usize = serde_json::from_str::<Vec<Value>>(&run.checks_json)
        .map(|c| c.len())
        .unwrap_or(0);
    let serial = &report.serial_log;
    TestResults {
        run_id: run.id.clone(),
        build_id: run.build_id.clone(),
        status: run.status,
        stage: run.stage.as_deref().and_then(|s| s.parse().ok()),
        progress: run.progress,
        message: run.message.clone(),
        attempt: run.attempt,
        requeued_because: run.requeued_because.clone(),
        created_at: run.created_at.clone(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        passed,
        failed,
        total: run.total.unwrap_or(planned as u32),
        boot_seconds: report.boot_seconds,
        duration_seconds: report.duration_seconds,
        accelerator: report.accelerator.clone(),
        junit_xml: complete.filter(|_| junit).map(|r| {
            r.junit(&format!(
                "openfactory build {} test run {}",
                run.build_id, run.id
            ))
        }),
        checks,
        serial_log: serial[serial.len().saturating_sub(SERIAL_TAIL)..].to_vec(),
    }
}

pub async fn list(
    app: &App,
    owner: &OwnerId,
    build_id: Option<&BuildId>,
    limit: Option<i64>,
) -> Result<RunList> {
    let limit = bounded(limit, 20, 1, 100, "limit", "")?;
    if let Some(build_id) = build_id {
        builds::find(app, owner, build_id).await?;
    }
    let runs: Vec<RunSummary> = app
        .store
        .test_runs(owner, build_id.map(BuildId::as_str), limit)
        .await?
        .into_iter()
        .map(|r| RunSummary {
            run_id: r.id,
            build_id: r.build_id,
            status: r.status,
            progress: r.progress,
            message: r.message,
            passed: r.passed,
            total: r.total,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
        .collect();
    Ok(RunList {
        count: runs.len(),
        runs,
    })
}

pub async fn stop(app: &App, owner: &OwnerId, id: &RunId) -> Result<RunStopped> {
    let outcome = app.store.stop_test_run(owner, id.as_str()).await?;
    let (status, message) = match outcome {
        StopRequest::Stopped => (
            TestRunStatus::Stopped,
            Next::say("Stopped before it started; no VM was made."),
        ),
        StopRequest::Requested => (
            TestRunStatus::Running,
            Next::new(
                "Stopping: the run ends within seconds and its VM is removed",
                [Action::GetTestResults { wait: false }],
            ),
        ),
        StopRequest::AlreadyFinished(status) => (
            status,
            Next::say(format!("The run had already finished ({status}).")),
        ),
        StopRequest::NotFound => return Err(not_found(id)),
    };
    Ok(RunStopped {
        run_id: id.to_string(),
        status,
        message,
    })
}
