//! Questions a tool call may need answered before it runs: a name for a
//! build whose recipe has none, a confirmation before a call that destroys
//! something. Asked only of a client that can ask its user (it declared
//! elicitation); any other client gets the default (a build named after its
//! base and features; a destructive call runs, as its annotations warn).
//!
//! How the question travels depends on the revision: on 2026-07-28 the call
//! answers with an input-required result and the client calls again with
//! the answer in `inputResponses`; before it, the server sends
//! `elicitation/create` and waits. Either way the answer goes through
//! [`Question::settle`]: pure, so what each answer does is tested here.

use std::time::Duration;

use openfactory_core::rules;
use rmcp::RoleServer;
use rmcp::model::{
    BooleanSchema, CallToolRequestParams, CallToolResponse, CallToolResult,
    ContentBlock as Content, ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationSchema, InputRequest, InputRequests, InputRequiredResult, JsonObject,
    PrimitiveSchemaDefinition, ProtocolVersion, StringSchema,
};
use rmcp::service::RequestContext;
use serde_json::Value;

use super::OpenFactoryServer;

/// What a call needs to be asked before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// create_build with a recipe object that has no name: what to call it
    /// (the suggestion is the default).
    BuildName { suggested: String },
    /// A call that destroys something for good: whether to go on.
    Confirm { action: String },
}

/// What an answer leaves for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Run the call (its arguments may have been completed).
    Proceed,
    /// Do not run it: the tool error the caller reads.
    Refused(String),
}

impl Question {
    /// The question `tool` with `arguments` needs, if any. Arguments that are
    /// not well-formed raise none: the tool's own checks answer them.
    pub fn for_call(tool: &str, arguments: Option<&JsonObject>) -> Option<Question> {
        let argument = |name: &str| arguments.and_then(|a| a.get(name));
        match tool {
            "create_build" => {
                let recipe = argument("recipe")?;
                let suggested = openfactory_core::validate::suggested_name(recipe)?;
                Some(Question::BuildName { suggested })
            }
            "delete_build" => {
                let id = argument("build_id")?.as_str()?;
                openfactory_service::BuildId::check(id).ok()?;
                Some(Question::Confirm {
                    action: format!(
                        "Delete build {id}? Its ISO, log, manifest and SBOM are removed for good."
                    ),
                })
            }
            "delete_vm" => {
                let name = argument("vm_name")?.as_str()?;
                openfactory_service::VmName::check(name).ok()?;
                Some(Question::Confirm {
                    action: format!(
                        "Delete VM {name}? It is stopped if running, and its disk and ports are released for good."
                    ),
                })
            }
            _ => None,
        }
    }

    /// The key of this question in `inputRequests` / `inputResponses`.
    pub fn key(&self) -> &'static str {
        match self {
            Question::BuildName { .. } => "build_name",
            Question::Confirm { .. } => "confirm",
        }
    }

    /// The form the client shows its user.
    pub fn elicitation(&self) -> ElicitRequestParams {
        let (message, schema) = match self {
            Question::BuildName { suggested } => (
                "The recipe has no name. What should this build be called?".to_string(),
                ElicitationSchema::builder()
                    .required_property(
                        "name",
                        PrimitiveSchemaDefinition::String(
                            StringSchema::new()
                                .title("Build name")
                                .description(
                                    "Lowercase letters, digits and `-`, up to 64 characters",
                                )
                                .length(1, 64)
                                .with_default(suggested.clone()),
                        ),
                    )
                    .build(),
            ),
            Question::Confirm { action } => (
                action.clone(),
                ElicitationSchema::builder()
                    .required_property(
                        "confirm",
                        PrimitiveSchemaDefinition::Boolean(
                            BooleanSchema::new()
                                .title("Yes, go on")
                                .description("This cannot be undone")
                                .with_default(false),
                        ),
                    )
                    .build(),
            ),
        };
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message,
            requested_schema: schema.expect("a one-property form is a valid schema"),
        }
    }

    /// What the client's answer means for the call, completing `arguments`
    /// where the answer fills them in.
    pub fn settle(&self, answer: &ElicitResult, arguments: &mut JsonObject) -> Settled {
        let field = |name: &str| answer.content.as_ref().and_then(|c| c.get(name));
        match (self, &answer.action) {
            (Question::BuildName { .. }, ElicitationAction::Cancel) => {
                Settled::Refused("nothing was queued: the name question was cancelled".into())
            }
            // Declined: the user would rather not choose; the suggestion stands.
            (Question::BuildName { suggested }, ElicitationAction::Decline) => {
                name_recipe(arguments, suggested);
                Settled::Proceed
            }
            (Question::BuildName { .. }, _) => match field("name").and_then(Value::as_str) {
                Some(name) => match rules::slug(name) {
                    Ok(()) => {
                        name_recipe(arguments, name);
                        Settled::Proceed
                    }
                    Err(reason) => Settled::Refused(format!(
                        "name: `{}` {reason}; nothing was queued: call again with a recipe `name`",
                        rules::printable(name, 80)
                    )),
                },
                None => Settled::Refused(
                    "name: the answer held no name; nothing was queued: call again with a recipe `name`"
                        .into(),
                ),
            },
            (Question::Confirm { .. }, ElicitationAction::Accept)
                if field("confirm") == Some(&Value::Bool(true)) =>
            {
                Settled::Proceed
            }
            (Question::Confirm { .. }, ElicitationAction::Cancel) => {
                Settled::Refused("nothing was deleted: the confirmation was cancelled".into())
            }
            (Question::Confirm { .. }, _) => {
                Settled::Refused("nothing was deleted: it was not confirmed".into())
            }
        }
    }

    /// What happens when the client said it could ask but no answer came
    /// (it failed or timed out): a name falls back to the suggestion; a
    /// deletion does not happen.
    pub fn unanswered(&self, arguments: &mut JsonObject, why: &str) -> Settled {
        match self {
            Question::BuildName { suggested } => {
                name_recipe(arguments, suggested);
                Settled::Proceed
            }
            Question::Confirm { .. } => Settled::Refused(format!(
                "nothing was deleted: no confirmation came ({why}); call again to be asked again"
            )),
        }
    }
}

/// How long a 2025-11-25 client's user has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

impl OpenFactoryServer {
    /// Ask `question` of the client, if it can ask its user; `Some` answers
    /// the call instead of running it (an input-required result, or a
    /// refusal), `None` runs it with the arguments as the answer left them.
    pub(crate) async fn ask(
        &self,
        question: &Question,
        request: &mut CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Option<CallToolResponse> {
        let arguments = request.arguments.get_or_insert_with(JsonObject::new);
        // The answer to an earlier round's input-required result (2026-07-28).
        if let Some(value) = request
            .input_responses
            .as_ref()
            .and_then(|r| r.get(question.key()))
        {
            let settled = match answer_from(value) {
                Ok(answer) => question.settle(&answer, arguments),
                Err(e) => Settled::Refused(e),
            };
            return refusal(settled);
        }
        let can_ask = ctx.client_capabilities().is_some_and(|c| {
            c.elicitation
                .as_ref()
                .is_some_and(|e| e.form.is_some() || e.url.is_none())
        });
        if !can_ask {
            return None;
        }
        if ctx
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
        {
            let requests = InputRequests::from([(
                question.key().to_string(),
                InputRequest::Elicitation(ElicitRequest::new(question.elicitation())),
            )]);
            return Some(CallToolResponse::InputRequired(
                InputRequiredResult::from_input_requests(requests),
            ));
        }
        let settled = match ctx
            .peer
            .create_elicitation_with_timeout(question.elicitation(), Some(ANSWER_TIMEOUT))
            .await
        {
            Ok(answer) => question.settle(&answer, arguments),
            Err(e) => {
                tracing::info!(error = %e, "an elicitation went unanswered");
                let why = match e {
                    rmcp::service::ServiceError::Timeout { .. } => "no answer within 120 s",
                    _ => "the client did not answer",
                };
                question.unanswered(arguments, why)
            }
        };
        refusal(settled)
    }
}

/// A refusal as the tool error the caller reads.
fn refusal(settled: Settled) -> Option<CallToolResponse> {
    match settled {
        Settled::Proceed => None,
        Settled::Refused(why) => Some(CallToolResponse::Complete(CallToolResult::error(vec![
            Content::text(why),
        ]))),
    }
}

/// An answer from `inputResponses`, checked: a client's JSON is untrusted.
pub fn answer_from(value: &Value) -> Result<ElicitResult, String> {
    serde_json::from_value(value.clone()).map_err(|_| {
        "inputResponses: an answer is an elicitation result (`action`: accept, decline or cancel, and \
         `content` when accepted)"
            .to_string()
    })
}

fn name_recipe(arguments: &mut JsonObject, name: &str) {
    if let Some(Value::Object(recipe)) = arguments.get_mut("recipe") {
        recipe.insert("name".into(), Value::String(name.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    fn answer(v: Value) -> ElicitResult {
        answer_from(&v).unwrap()
    }

    #[test]
    fn only_nameless_recipes_and_deletions_raise_a_question() {
        let ask = |tool: &str, v: Value| Question::for_call(tool, Some(&args(v)));
        assert_eq!(
            ask(
                "create_build",
                json!({"recipe": {"base_image": "debian-bookworm", "features": ["ssh"]}})
            ),
            Some(Question::BuildName {
                suggested: "debian-bookworm-ssh".into()
            })
        );
        assert_eq!(
            ask(
                "create_build",
                json!({"recipe": {"name": "web", "base_image": "debian-bookworm"}})
            ),
            None
        );
        assert_eq!(
            ask(
                "create_build",
                json!({"recipe": "debian-docker-monitoring"})
            ),
            None
        );
        assert!(matches!(
            ask("delete_build", json!({"build_id": "0123456789ab"})),
            Some(Question::Confirm { .. })
        ));
        assert!(matches!(
            ask("delete_vm", json!({"vm_name": "web-1"})),
            Some(Question::Confirm { .. })
        ));
        // Malformed arguments: the tool's own checks answer them.
        assert_eq!(ask("delete_build", json!({"build_id": "../../etc"})), None);
        assert_eq!(ask("delete_vm", json!({"vm_name": 7})), None);
        assert_eq!(
            ask("cancel_build", json!({"build_id": "0123456789ab"})),
            None
        );
        assert_eq!(Question::for_call("create_build", None), None);
    }

    #[test]
    fn a_name_answer_names_the_recipe_or_says_why_not() {
        let q = Question::BuildName {
            suggested: "debian-bookworm-ssh".into(),
        };
        let mut a = args(json!({"recipe": {"base_image": "debian-bookworm"}}));
        assert_eq!(
            q.settle(
                &answer(json!({"action": "accept", "content": {"name": "my-box"}})),
                &mut a
            ),
            Settled::Proceed
        );
        assert_eq!(a["recipe"]["name"], "my-box");

        let mut a = args(json!({"recipe": {"base_image": "debian-bookworm"}}));
        assert_eq!(
            q.settle(&answer(json!({"action": "decline"})), &mut a),
            Settled::Proceed
        );
        assert_eq!(a["recipe"]["name"], "debian-bookworm-ssh");

        let mut a = args(json!({"recipe": {"base_image": "debian-bookworm"}}));
        let Settled::Refused(why) = q.settle(
            &answer(json!({"action": "accept", "content": {"name": "My Box\u{1b}[2J"}})),
            &mut a,
        ) else {
            panic!("a bad name is refused")
        };
        assert!(
            why.starts_with("name: `My Box") && why.contains("nothing was queued"),
            "{why}"
        );
        assert!(!why.contains('\u{1b}'), "{why}");
        assert!(a["recipe"].get("name").is_none(), "nothing half-done");
        assert!(matches!(
            q.settle(&answer(json!({"action": "cancel"})), &mut a),
            Settled::Refused(_)
        ));
        assert_eq!(q.unanswered(&mut a, "timed out"), Settled::Proceed);
        assert_eq!(a["recipe"]["name"], "debian-bookworm-ssh");
    }

    #[test]
    fn a_deletion_runs_only_when_confirmed() {
        let q = Question::Confirm {
            action: "Delete build 0123456789ab?".into(),
        };
        let mut a = args(json!({"build_id": "0123456789ab"}));
        let settle = |v: Value, a: &mut JsonObject| q.settle(&answer(v), a);
        assert_eq!(
            settle(
                json!({"action": "accept", "content": {"confirm": true}}),
                &mut a
            ),
            Settled::Proceed
        );
        for no in [
            json!({"action": "accept", "content": {"confirm": false}}),
            json!({"action": "accept", "content": {"confirm": "yes"}}),
            json!({"action": "accept"}),
            json!({"action": "decline"}),
            json!({"action": "cancel"}),
        ] {
            assert!(
                matches!(settle(no.clone(), &mut a), Settled::Refused(_)),
                "{no}"
            );
        }
        assert!(matches!(
            q.unanswered(&mut a, "timed out"),
            Settled::Refused(_)
        ));
    }

    #[test]
    fn hostile_answers_get_a_plain_error() {
        for bad in [
            json!("yes"),
            json!({"action": "maybe"}),
            json!({"action": 1}),
            json!(null),
        ] {
            let err = answer_from(&bad).unwrap_err();
            assert!(err.starts_with("inputResponses: "), "{err}");
        }
    }

    #[test]
    fn the_forms_are_what_the_spec_allows() {
        for (q, field, default) in [
            (
                Question::BuildName {
                    suggested: "debian-bookworm".into(),
                },
                "name",
                json!("debian-bookworm"),
            ),
            (
                Question::Confirm {
                    action: "Delete?".into(),
                },
                "confirm",
                json!(false),
            ),
        ] {
            let form = serde_json::to_value(q.elicitation()).unwrap();
            assert_eq!(form["mode"], "form");
            let schema = &form["requestedSchema"];
            assert_eq!(schema["type"], "object");
            assert_eq!(schema["required"], json!([field]));
            assert_eq!(schema["properties"][field]["default"], default);
        }
    }
}
