//! What a caller can do next, as data. The service names its own operations
//! ([`Action`]); each front end words them (the MCP server as tool names, the
//! web console as its buttons and pages), so no message here speaks a front
//! end's language.

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

/// One of the service's operations that a message can point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ListRecipeCategories,
    ListRecipes,
    CreateBuild,
    ListBuilds,
    /// Follow a build; `wait`: waiting for progress is worth it (it is queued
    /// or running).
    GetBuildStatus {
        wait: bool,
    },
    GetBuildLog,
    CancelBuild,
    RetryBuild,
    DeleteBuild,
    GetIsoDownloadUrl,
    ListVms,
    StartVm,
    /// Stop a VM; `force`: at once, without asking the guest.
    StopVm {
        force: bool,
    },
    DeleteVm,
    GetVmSerialLog,
    ListTestRuns,
    /// Follow a test run; `wait` as for [`Action::GetBuildStatus`].
    GetTestResults {
        wait: bool,
    },
    StopTestRun,
    /// The caller's API keys.
    ListKeys,
}

/// What an answer suggests next: a sentence of the service's own (without
/// any front end's words) and the operations it points to, in order.
///
/// It serialises as one string: the text a front end put in with
/// [`Next::word`], or else the sentence alone. (The MCP server words it;
/// the web console reads the fields.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    pub sentence: String,
    pub actions: Vec<Action>,
    worded: Option<String>,
}

impl Next {
    pub fn new(sentence: impl Into<String>, actions: impl Into<Vec<Action>>) -> Next {
        Next {
            sentence: sentence.into(),
            actions: actions.into(),
            worded: None,
        }
    }

    /// A sentence that points nowhere.
    pub fn say(sentence: impl Into<String>) -> Next {
        Next::new(sentence, Vec::new())
    }

    /// Put in the front end's wording of the whole (what it serialises as).
    pub fn word(&mut self, words: impl FnOnce(&Next) -> String) {
        self.worded = Some(words(self));
    }

    /// What it serialises as.
    pub fn text(&self) -> &str {
        self.worded.as_deref().unwrap_or(&self.sentence)
    }
}

impl Serialize for Next {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.text())
    }
}

impl JsonSchema for Next {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "String".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_serialise_as_snake_case() {
        assert_eq!(
            serde_json::to_value(Action::ListBuilds).unwrap(),
            "list_builds"
        );
        assert_eq!(
            serde_json::to_value(Action::GetBuildStatus { wait: true }).unwrap(),
            serde_json::json!({"get_build_status": {"wait": true}})
        );
    }

    #[test]
    fn next_serialises_as_its_wording_or_its_sentence() {
        let mut next = Next::new("queued", [Action::GetBuildStatus { wait: true }]);
        assert_eq!(serde_json::to_value(&next).unwrap(), "queued");
        next.word(|n| format!("{}; wait", n.sentence));
        assert_eq!(serde_json::to_value(&next).unwrap(), "queued; wait");
        let schema = schemars::schema_for!(Next);
        assert_eq!(
            schema.get("type").and_then(|t| t.as_str()),
            Some("string"),
            "{schema:?}"
        );
    }
}
