//! Tasks (the 2026-07-28 `io.modelcontextprotocol/tasks` extension, SEP-2663)
//! for the tools that start long work: `create_build` and `run_tests`. A
//! client that declares the extension gets, instead of the tool's immediate
//! answer, a task whose id names the build or test-run record itself
//! (`build:ID`, `test-run:ID`): it survives a restart, and any replica
//! answers `tasks/get` from the store. `tasks/cancel` cancels the build or
//! stops the run. Clients that do not declare it keep the immediate answer.

use openfactory_service::{BuildId, RunId, builds, test_runs};
use openfactory_store::{BuildStatus, TestRunStatus};
use rmcp::model::{
    CallToolResult, ContentBlock as Content, CreateTaskResult, DetailedTask, ErrorData, Task,
    TaskPayload, TaskStatus,
};
use serde_json::Value;

use super::{OpenFactoryServer, tool_error};

/// How often a client should look again.
const POLL_MS: u64 = 2000;

/// The tools whose calls become tasks, and the field of their answer that
/// names the record.
const LONG_TOOLS: &[(&str, &str, &str)] = &[
    ("create_build", "build_id", "build"),
    ("run_tests", "run_id", "test-run"),
];

/// What a task id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRef {
    Build(BuildId),
    TestRun(RunId),
}

impl TaskRef {
    pub fn parse(task_id: &str) -> Result<TaskRef, ErrorData> {
        let invalid = || {
            ErrorData::invalid_params(
                format!(
                    "taskId: `{}` is not a task of this server (its tasks are `build:ID` and `test-run:ID`)",
                    openfactory_core::rules::printable(task_id, 80)
                ),
                None,
            )
        };
        let (kind, id) = task_id.split_once(':').ok_or_else(invalid)?;
        match kind {
            "build" => BuildId::parse("taskId", id).map(TaskRef::Build),
            "test-run" => RunId::parse("taskId", id).map(TaskRef::TestRun),
            _ => return Err(invalid()),
        }
        .map_err(|_| invalid())
    }

    pub fn id(&self) -> String {
        match self {
            TaskRef::Build(id) => format!("build:{id}"),
            TaskRef::TestRun(id) => format!("test-run:{id}"),
        }
    }
}

/// The task a long tool's successful answer starts, if `tool` is one.
pub fn created(tool: &str, answer: &CallToolResult) -> Option<CreateTaskResult> {
    if answer.is_error == Some(true) {
        return None;
    }
    let (_, field, kind) = LONG_TOOLS.iter().find(|(name, _, _)| *name == tool)?;
    let id = answer.structured_content.as_ref()?.get(field)?.as_str()?;
    let now = rmcp::task_manager::current_timestamp();
    let task = Task::new(
        format!("{kind}:{id}"),
        TaskStatus::Working,
        now.clone(),
        now,
    )
    .with_status_message("queued")
    .with_poll_interval_ms(POLL_MS);
    Some(CreateTaskResult::new(task))
}

/// A task id the caller cannot have: another owner's is answered as a
/// missing one.
fn unknown_task(e: openfactory_service::Error) -> ErrorData {
    ErrorData::invalid_params(format!("taskId: {}", tool_error(e)), None)
}

fn structured<T: serde::Serialize>(
    value: &T,
    error: Option<String>,
) -> Result<serde_json::Map<String, Value>, ErrorData> {
    let value = serde_json::to_value(value)
        .map_err(|e| ErrorData::internal_error(format!("unserialisable: {e}"), None))?;
    let mut result = match &error {
        None => CallToolResult::structured(value),
        Some(text) => {
            let mut r = CallToolResult::structured_error(value);
            r.content = vec![Content::text(text.clone())];
            r
        }
    };
    result.result_type = None;
    match serde_json::to_value(result) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ErrorData::internal_error(
            "a tool result is an object",
            None,
        )),
    }
}

impl OpenFactoryServer {
    /// `tasks/get`: the record's state as a task; another owner's, or none,
    /// is an invalid task id (nothing is revealed).
    pub(crate) async fn task(
        &self,
        task_id: &str,
        ctx: &rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<DetailedTask, ErrorData> {
        let task = TaskRef::parse(task_id)?;
        let owner = self.protocol_caller(ctx).await?;
        let app = &*self.app;
        let (created, updated, message, payload) = match &task {
            TaskRef::Build(id) => {
                let b = builds::find(app, &owner, id).await.map_err(unknown_task)?;
                let payload = match b.status {
                    BuildStatus::Queued | BuildStatus::Running => TaskPayload::Working,
                    BuildStatus::Cancelled => TaskPayload::Cancelled,
                    BuildStatus::Completed | BuildStatus::Failed => {
                        let details = builds::details(app, &owner, id)
                            .await
                            .map_err(unknown_task)?;
                        let error = (b.status == BuildStatus::Failed).then(|| {
                            format!("the build failed: {}", b.error.clone().unwrap_or_default())
                        });
                        TaskPayload::Completed {
                            result: structured(&details, error)?,
                        }
                    }
                };
                let updated = b
                    .finished_at
                    .clone()
                    .or(b.started_at.clone())
                    .unwrap_or(b.created_at.clone());
                (b.created_at, updated, b.message, payload)
            }
            TaskRef::TestRun(id) => {
                let r = test_runs::find(app, &owner, id)
                    .await
                    .map_err(unknown_task)?;
                let payload = match r.status {
                    TestRunStatus::Queued | TestRunStatus::Running => TaskPayload::Working,
                    TestRunStatus::Stopped => TaskPayload::Cancelled,
                    TestRunStatus::Passed | TestRunStatus::Failed => TaskPayload::Completed {
                        result: structured(&test_runs::results(&r, false), None)?,
                    },
                    TestRunStatus::Error | TestRunStatus::TimedOut => {
                        let error = Some(format!(
                            "the test run ended with {}: {}",
                            r.status, r.message
                        ));
                        TaskPayload::Completed {
                            result: structured(&test_runs::results(&r, false), error)?,
                        }
                    }
                };
                let updated = r
                    .finished_at
                    .clone()
                    .or(r.started_at.clone())
                    .unwrap_or(r.created_at.clone());
                (r.created_at, updated, r.message, payload)
            }
        };
        let base = Task::new(task.id(), payload.status(), created, updated)
            .with_status_message(openfactory_core::rules::truncate(&message, 400))
            .with_poll_interval_ms(POLL_MS);
        Ok(DetailedTask::new(base, payload))
    }

    /// `tasks/cancel`: cancel the build or stop the run (a finished one is
    /// left as it is: the acknowledgement is the same).
    pub(crate) async fn cancel_task_of(
        &self,
        task_id: &str,
        ctx: &rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<(), ErrorData> {
        let task = TaskRef::parse(task_id)?;
        let owner = self.protocol_caller(ctx).await?;
        match &task {
            TaskRef::Build(id) => {
                let b = builds::find(&self.app, &owner, id)
                    .await
                    .map_err(unknown_task)?;
                if b.status.is_active() {
                    builds::cancel(&self.app, &owner, id)
                        .await
                        .map_err(unknown_task)?;
                }
            }
            TaskRef::TestRun(id) => {
                let r = test_runs::find(&self.app, &owner, id)
                    .await
                    .map_err(unknown_task)?;
                if r.status.is_active() {
                    test_runs::stop(&self.app, &owner, id)
                        .await
                        .map_err(unknown_task)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_name_records_and_nothing_else() {
        let build = TaskRef::parse("build:0123456789ab").unwrap();
        assert_eq!(build.id(), "build:0123456789ab");
        let run = TaskRef::parse("test-run:0123456789ab").unwrap();
        assert_eq!(run.id(), "test-run:0123456789ab");
        for bad in [
            "",
            "build",
            "build:",
            "vm:web",
            "build:../x",
            "test-run:\u{1b}[2K",
            "0123456789ab",
        ] {
            let e = TaskRef::parse(bad).unwrap_err();
            assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS, "{bad}");
            assert!(!e.message.contains('\u{1b}'), "{}", e.message);
        }
    }

    #[test]
    fn only_a_long_tools_success_becomes_a_task() {
        let ok = CallToolResult::structured(
            serde_json::json!({"build_id": "0123456789ab", "status": "queued"}),
        );
        let task = created("create_build", &ok).unwrap();
        assert_eq!(task.task.task_id, "build:0123456789ab");
        assert_eq!(task.task.status, TaskStatus::Working);
        assert!(created("get_build", &ok).is_none());
        let failed = CallToolResult::error(vec![Content::text("recipe: invalid")]);
        assert!(created("create_build", &failed).is_none());
        let run = CallToolResult::structured(serde_json::json!({"run_id": "ba9876543210"}));
        assert_eq!(
            created("run_tests", &run).unwrap().task.task_id,
            "test-run:ba9876543210"
        );
    }
}
