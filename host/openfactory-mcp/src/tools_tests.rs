//! The test-run tools: run_tests, get_test_results, list_test_runs,
//! stop_test_run. Same shape as the other tools: resolve the caller, call
//! [`openfactory_service::test_runs`], count the outcome.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::tools::{OpenFactoryServer, opt_int, opt_text};
use openfactory_service::builds::MAX_WAIT_SECONDS;
use openfactory_service::test_runs::{self, RunCreated, RunList, RunStopped, TestResults};

use crate::wording::{Worded, args, tool_error};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunTestsArgs {
    /// A completed build of yours (from list_builds).
    #[schemars(with = "String")]
    pub build_id: Value,
    /// Which checks to run. Omit to run every check the build declared (base, recipe, each feature's). Strings
    /// choose among them by full name (`docker/dockerd-active`) or by source (`base`, `recipe`, a feature name);
    /// objects add your own, one kind each: {"unit_active": "nginx.service"}, {"command_succeeds": ["systemctl",
    /// "is-system-running"]}, {"port_open": 22}, {"file_exists": "/etc/motd"}, {"package_installed": "curl"},
    /// {"http_get": "http://127.0.0.1:9100/metrics"}, with optional "name", "description" and "timeout_seconds"
    /// (1–600, default 10). Objects alone run on top of every declared check.
    #[schemars(with = "Option<Vec<Value>>")]
    pub tests: Option<Value>,
    /// Memory of the test VM in MiB: 256 up to the server's limit (default 1024).
    #[schemars(with = "Option<i64>")]
    pub memory_mb: Option<Value>,
    /// Virtual CPUs of the test VM: 1 up to the server's limit (default 1).
    #[schemars(with = "Option<i64>")]
    pub vcpus: Option<Value>,
    /// The whole run's budget, boot included: 60 up to the server's limit (default 900).
    #[schemars(with = "Option<i64>")]
    pub timeout_seconds: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TestResultsArgs {
    /// A test run id from run_tests or list_test_runs.
    #[schemars(with = "String")]
    pub run_id: Value,
    /// Wait up to this many seconds (0–50) while the run is queued or running, returning early when it finishes;
    /// progress notifications are sent meanwhile if you gave a progress token. Default 0.
    #[schemars(with = "Option<i64>")]
    pub wait_seconds: Option<Value>,
    /// `json` (default) or `junit`, which adds the results as JUnit XML for CI systems.
    #[schemars(with = "Option<String>")]
    pub format: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListTestRunsArgs {
    /// Only the runs of this build.
    #[schemars(with = "Option<String>")]
    pub build_id: Option<Value>,
    /// How many, newest first: 1 to 100 (default 20).
    #[schemars(with = "Option<i64>")]
    pub limit: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunIdArgs {
    /// A test run id from run_tests or list_test_runs.
    #[schemars(with = "String")]
    pub run_id: Value,
}

fn array(value: Option<Value>, field: &str) -> Result<Option<Vec<Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(format!(
            "{field}: expected a list of check names and checks, e.g. [\"docker\", {{\"port_open\": 22}}], got {}",
            crate::tools::kind(&other)
        )),
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
            let owner = self.caller(&ctx).await?;
            let build_id = args::build_id(args.build_id, "build_id")?;
            let run = test_runs::RunArgs {
                tests: array(args.tests, "tests")?,
                memory_mb: opt_int(args.memory_mb, "memory_mb")?,
                vcpus: opt_int(args.vcpus, "vcpus")?,
                timeout_seconds: opt_int(args.timeout_seconds, "timeout_seconds")?,
            };
            Ok(Json(
                test_runs::create(&self.app, &owner, &build_id, run)
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
            let owner = self.caller(&ctx).await?;
            let id = args::run_id(args.run_id, "run_id")?;
            let junit = match opt_text(args.format, "format")?.as_deref() {
                None | Some("json") => false,
                Some("junit") => true,
                Some(other) => {
                    return Err(format!(
                        "format: `{}` is not a format; use json or junit",
                        openfactory_core::rules::truncate(other, 20).escape_debug()
                    ));
                }
            };
            let wait = match opt_int(args.wait_seconds, "wait_seconds")? {
                None => 0,
                Some(n) if (0..=MAX_WAIT_SECONDS as i64).contains(&n) => n as u64,
                Some(n) => {
                    return Err(format!(
                        "wait_seconds: {n} is out of range; use 0 to {MAX_WAIT_SECONDS} and call again to wait longer"
                    ));
                }
            };
            let token = ctx.meta.get_progress_token().filter(|_| wait > 0);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
            let mut run = test_runs::find(&self.app, &owner, &id)
                .await
                .map_err(tool_error)?;
            let mut reported: Option<(u8, String)> = None;
            loop {
                let state = (run.progress, run.message.clone());
                if let Some(token) = &token
                    && reported.as_ref() != Some(&state)
                {
                    let message = format!(
                        "{} {}%: {}",
                        run.stage.as_deref().unwrap_or(run.status.as_str()),
                        run.progress,
                        run.message
                    );
                    let _ = ctx
                        .peer
                        .notify_progress(
                            rmcp::model::ProgressNotificationParam::new(token.clone(), f64::from(run.progress))
                                .with_total(100.0)
                                .with_message(message),
                        )
                        .await;
                }
                reported = Some(state);
                if !run.status.is_active() || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                run = test_runs::find(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?;
            }
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
            let owner = self.caller(&ctx).await?;
            let build_id = args::opt_build_id(args.build_id, "build_id")?;
            let limit = opt_int(args.limit, "limit")?;
            Ok(Json(
                test_runs::list(&self.app, &owner, build_id.as_ref(), limit)
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
            let owner = self.caller(&ctx).await?;
            let id = args::run_id(args.run_id, "run_id")?;
            Ok(Json(
                test_runs::stop(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }
}
