//! The test-run tools: run_tests, get_test_results, list_test_runs,
//! stop_test_run ([`openfactory_service::test_runs`]).

use std::borrow::Cow;
use std::time::Duration;

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::Value;

use openfactory_core::rules::json_kind as kind;
use openfactory_service::test_runs::{self, RunCreated, RunList, RunStopped, TestResults};

use super::args::{ArgType, Bounded, Optional, Required, ToolArgs, WaitSeconds, tool_args};
use super::wait::{Progress, wait_with_progress};
use super::{OpenFactoryServer, tool_error};
use crate::wording::Worded;

/// run_tests' `tests`: check names and sources (strings) and checks of the caller's own
/// (objects), each checked by the service with its position.
#[derive(Debug)]
pub struct CheckList(Vec<Value>);

impl JsonSchema for CheckList {
    fn schema_name() -> Cow<'static, str> {
        "CheckList".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "items": { "anyOf": [{ "type": "string" }, { "type": "object" }] },
        })
    }
}

impl ArgType for CheckList {
    fn from_json(value: Value) -> Result<Self, String> {
        match value {
            Value::Array(items) => Ok(CheckList(items)),
            other => Err(format!(
                "expected a list of check names and checks, e.g. [\"docker\", {{\"port_open\": 22}}], got {}",
                kind(&other)
            )),
        }
    }
}

/// get_test_results' `format`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReportFormat {
    Json,
    Junit,
}

impl JsonSchema for ReportFormat {
    fn schema_name() -> Cow<'static, str> {
        "ReportFormat".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": ["json", "junit"] })
    }
}

impl ArgType for ReportFormat {
    fn from_json(value: Value) -> Result<Self, String> {
        match String::from_json(value)?.as_str() {
            "json" => Ok(ReportFormat::Json),
            "junit" => Ok(ReportFormat::Junit),
            other => Err(format!(
                "`{}` is not a format; use json or junit",
                openfactory_core::rules::truncate(other, 20).escape_debug()
            )),
        }
    }
}

tool_args! {
    pub struct RunTestsArgs => RunTests {
        /// A completed build of yours (from list_builds).
        build_id: Required<openfactory_service::BuildId>,
        /// Which checks to run. Omit to run every check the build declared (base, recipe, each feature's). Strings
        /// choose among them by full name (`docker/dockerd-active`) or by source (`base`, `recipe`, a feature name);
        /// objects add your own, one kind each: {"unit_active": "nginx.service"}, {"command_succeeds": ["systemctl",
        /// "is-system-running"]}, {"port_open": 22}, {"file_exists": "/etc/motd"}, {"package_installed": "curl"},
        /// {"http_get": "http://127.0.0.1:9100/metrics"}, with optional "name", "description" and "timeout_seconds"
        /// (1–600, default 10). Objects alone run on top of every declared check.
        tests: Optional<CheckList>,
        /// Memory of the test VM in MiB: 256 up to the server's limit (default 1024).
        memory_mb: Optional<i64>,
        /// Virtual CPUs of the test VM: 1 up to the server's limit (default 1).
        vcpus: Optional<i64>,
        /// The whole run's budget, boot included: 60 up to the server's limit (default 900).
        timeout_seconds: Optional<i64>,
    }

    pub struct TestResultsArgs => TestResultsQuery {
        /// A test run id from run_tests or list_test_runs.
        run_id: Required<openfactory_service::RunId>,
        /// Wait up to this many seconds (0–50) while the run is queued or running, returning early when it finishes;
        /// progress notifications are sent meanwhile if you gave a progress token. Default 0.
        wait_seconds: WaitSeconds,
        /// `json` (default) or `junit`, which adds the results as JUnit XML for CI systems.
        format: Optional<ReportFormat>,
    }

    pub struct ListTestRunsArgs => ListTestRuns {
        /// Only the runs of this build.
        build_id: Optional<openfactory_service::BuildId>,
        /// How many, newest first: 1 to 100 (default 20).
        limit: Bounded<1, 100, 20>,
    }

    pub struct RunIdArgs => RunId {
        /// A test run id from run_tests or list_test_runs.
        run_id: Required<openfactory_service::RunId>,
    }
}

#[tool_router(router = test_run_router, vis = "pub(crate)")]
impl OpenFactoryServer {
    #[tool(
        title = "Run tests on a build",
        description = "Boot one of your completed builds' ISO in a throwaway VM, run checks inside it through the guest agent (every check the build declared, or those you choose in `tests`, plus your own), record each result with its evidence, and remove the VM. Returns at once with the run id; follow it with get_test_results.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn run_tests(
        &self,
        Parameters(args): Parameters<RunTestsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RunCreated>, String> {
        self.run("run_tests", async {
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            let run = test_runs::RunArgs {
                tests: args.tests.map(|t| t.0),
                memory_mb: args.memory_mb,
                vcpus: args.vcpus,
                timeout_seconds: args.timeout_seconds,
            };
            Ok(Json(
                test_runs::create(&self.app, &owner, &args.build_id, run)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Get test results",
        description = "One of your test runs: status (queued, running, passed, failed, error, stopped, timed_out), progress, and every check so far with its status (passed, failed, error, skipped, timed_out), why, the command, exit code and output excerpts; boot time and the serial console's last lines. `format=junit` adds JUnit XML. `wait_seconds` waits for the run to finish, with progress notifications.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_test_results(
        &self,
        Parameters(args): Parameters<TestResultsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<TestResults>, String> {
        self.run("get_test_results", async {
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            let junit = args.format == Some(ReportFormat::Junit);
            let (app, owner, id) = (&*self.app, &owner, &args.run_id);
            let run = wait_with_progress(
                self,
                &ctx,
                Duration::from_secs(args.wait_seconds as u64),
                move || async move { test_runs::find(app, owner, id).await.map_err(tool_error) },
                |r| {
                    Progress::new(
                        r.status.is_active(),
                        r.stage.as_deref().unwrap_or(r.status.as_str()),
                        r.progress,
                        &r.message,
                    )
                },
            )
            .await?;
            Ok(Json(test_runs::results(&run, junit)))
        })
        .await
    }

    #[tool(
        title = "List test runs",
        description = "Your test runs, newest first, with status and passed/total; optionally only those of one build. `limit` 1–100 (default 20).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_test_runs(
        &self,
        Parameters(args): Parameters<ListTestRunsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RunList>, String> {
        self.run("list_test_runs", async {
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                test_runs::list(&self.app, &owner, args.build_id.as_ref(), Some(args.limit))
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Stop a test run",
        description = "Stop one of your test runs: a queued one at once; a running one within seconds, its VM removed and its finished checks kept.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn stop_test_run(
        &self,
        Parameters(args): Parameters<RunIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RunStopped>, String> {
        self.run("stop_test_run", async {
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                test_runs::stop(&self.app, &owner, &args.run_id)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }
}
