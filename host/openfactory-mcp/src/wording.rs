//! How the MCP server words what the service says: its [`Action`]s as tool
//! names, its errors as tool error text, and its [`Next`] hints. The service
//! names its own operations; only this module knows what the tools are
//! called.

use openfactory_service::builds::{BuildCreated, BuildStatusOut, CancelOut, MAX_WAIT_SECONDS};
use openfactory_service::test_runs::{RunCreated, RunStopped};
use openfactory_service::vms::VmAction;
use openfactory_service::{Action, Error, ErrorKind, Next};

/// The tool (or, for keys, the REST route) that does `action`.
pub fn tool(action: &Action) -> &'static str {
    match action {
        Action::ListRecipeCategories => "list_recipe_categories",
        Action::ListRecipes => "list_recipes",
        Action::CreateBuild => "create_build",
        Action::ListBuilds => "list_builds",
        Action::GetBuildStatus { .. } => "get_build_status",
        Action::GetBuildLog => "get_build_log",
        Action::CancelBuild => "cancel_build",
        Action::RetryBuild => "retry_build",
        Action::DeleteBuild => "delete_build",
        Action::GetIsoDownloadUrl => "get_iso_download_url",
        Action::ListVms => "list_vms",
        Action::StartVm => "start_vm",
        Action::StopVm { .. } => "stop_vm",
        Action::DeleteVm => "delete_vm",
        Action::GetVmSerialLog => "get_vm_serial_log",
        Action::ListTestRuns => "list_test_runs",
        Action::GetTestResults { .. } => "get_test_results",
        Action::StopTestRun => "stop_test_run",
        Action::ListKeys => "GET /api/mcp-keys",
    }
}

/// A clause that points to `action`: "list_builds shows your builds".
fn hint(action: &Action) -> String {
    let t = tool(action);
    match action {
        Action::ListRecipeCategories => format!("{t} describes them"),
        Action::ListRecipes => format!("{t} shows the ids you can use"),
        Action::CreateBuild => format!("{t} builds a recipe"),
        Action::ListBuilds => format!("{t} shows your builds"),
        Action::GetBuildStatus { wait: true } => {
            format!("follow it with {t} (wait_seconds up to {MAX_WAIT_SECONDS})")
        }
        Action::GetBuildStatus { wait: false } => format!("{t} shows it"),
        Action::GetBuildLog => format!("{t} gives the full log"),
        Action::CancelBuild => format!("{t} stops it"),
        Action::RetryBuild => format!("{t} starts it again"),
        Action::DeleteBuild => format!("{t} removes it"),
        Action::GetIsoDownloadUrl => format!("{t} gives the ISO"),
        Action::ListVms | Action::ListTestRuns | Action::ListKeys => format!("{t} shows yours"),
        Action::StartVm => format!("{t} starts it"),
        Action::StopVm { force: true } => format!("{t} with force=true stops it at once"),
        Action::StopVm { force: false } => format!("{t} stops it"),
        Action::DeleteVm => format!("{t} removes it"),
        Action::GetVmSerialLog => format!("{t} shows the serial console"),
        Action::GetTestResults { wait: true } => {
            format!("follow it with {t} (wait_seconds waits, with progress)")
        }
        Action::GetTestResults { wait: false } => format!("{t} shows what ran"),
        Action::StopTestRun => format!("{t} stops it"),
    }
}

/// A service error as tool error text. What `see` adds depends on the kind:
/// a conflict's action is what to do first ("…; stop it with cancel_build
/// first"), a limit's how to free one ("…, or stop one with cancel_build"),
/// anything else's where to look ("…; list_builds shows your builds").
pub fn error_text(e: &Error) -> String {
    match (&e.kind, &e.see) {
        (_, None) => e.message.clone(),
        (ErrorKind::Conflict, Some(a)) => format!("{} with {} first", e.message, tool(a)),
        (ErrorKind::LimitReached, Some(a)) => format!("{} with {}", e.message, tool(a)),
        (_, Some(a)) => format!("{}; {}", e.message, hint(a)),
    }
}

/// For `.map_err`: a service error as a tool error.
pub fn tool_error(e: Error) -> String {
    error_text(&e)
}

/// A hint as text: "running; follow it with get_build_status (…); get_build_log gives the full log".
pub fn next_text(next: &Next) -> String {
    if next.actions.is_empty() {
        return next.sentence.clone();
    }
    let hints: Vec<String> = next.actions.iter().map(hint).collect();
    format!("{}; {}", next.sentence, hints.join("; "))
}

/// An answer whose hint the tools word before it goes out.
pub trait Worded: Sized {
    fn next(&mut self) -> &mut Next;

    fn worded(mut self) -> Self {
        self.next().word(next_text);
        self
    }
}

impl Worded for BuildCreated {
    fn next(&mut self) -> &mut Next {
        &mut self.message
    }
}

impl Worded for BuildStatusOut {
    fn next(&mut self) -> &mut Next {
        &mut self.next
    }
}

impl Worded for CancelOut {
    fn next(&mut self) -> &mut Next {
        &mut self.message
    }
}

impl Worded for VmAction {
    fn next(&mut self) -> &mut Next {
        &mut self.message
    }
}

impl Worded for RunCreated {
    fn next(&mut self) -> &mut Next {
        &mut self.message
    }
}

impl Worded for RunStopped {
    fn next(&mut self) -> &mut Next {
        &mut self.message
    }
}

#[cfg(test)]
mod tests {
    use openfactory_service::{BuildId, builds};
    use openfactory_store::BuildStatus;

    use super::*;

    #[test]
    fn errors_keep_the_texts_clients_know() {
        let conflict = Error::conflict("build `a` is running; stop it").see(Action::CancelBuild);
        assert_eq!(
            error_text(&conflict),
            "build `a` is running; stop it with cancel_build first"
        );
        let limit = Error::limit_reached(
            "you already have 3 builds queued or running (the limit is 3); wait for one to finish, or stop one",
        )
        .see(Action::CancelBuild);
        assert!(error_text(&limit).ends_with("or stop one with cancel_build"));
        let missing = Error::not_found("VM `a` not found").see(Action::ListVms);
        assert_eq!(
            error_text(&missing),
            "VM `a` not found; list_vms shows yours"
        );
        let bad = BuildId::parse("build_id", "../x").unwrap_err();
        assert_eq!(
            error_text(&bad),
            "build_id: `../x` is not a build id (12 hex digits, e.g. 3f9c2a1d4e5b); list_builds shows your builds"
        );
        assert_eq!(error_text(&Error::internal("x")), "x");
    }

    #[test]
    fn next_hints_read_as_before() {
        let text = |s| next_text(&builds::next_for(s));
        assert_eq!(
            text(BuildStatus::Queued),
            "queued behind other builds; follow it with get_build_status (wait_seconds up to 50)"
        );
        assert_eq!(
            text(BuildStatus::Completed),
            "completed; get_iso_download_url gives the ISO"
        );
        assert_eq!(
            text(BuildStatus::Cancelled),
            "cancelled; retry_build starts it again"
        );
        assert_eq!(next_text(&Next::say("Done.")), "Done.");
    }

    #[test]
    fn worded_answers_serialise_their_wording() {
        let out = CancelOut {
            build_id: "a".into(),
            status: BuildStatus::Running,
            message: Next::new(
                "Cancellation requested",
                [Action::GetBuildStatus { wait: false }],
            ),
        }
        .worded();
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(
            json["message"],
            "Cancellation requested; get_build_status shows it"
        );
        assert_eq!(json["status"], "running");
    }
}
