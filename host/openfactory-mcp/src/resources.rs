//! MCP resources: builds, their logs, test runs, recipes and VMs, each at a
//! URI of its own (`build://{build_id}`…). This module knows the URIs: their
//! templates, how one parses, and what each variable names (for
//! completions). Reading them is the server's ([`crate::tools`]), through
//! the service, owner-scoped like every tool.

use openfactory_core::rules;
use openfactory_service::{BuildId, RecipeId, RunId, VmName};
use rmcp::model::{ErrorData, ResourceTemplate};
use serde_json::json;

use crate::complete::Names;

/// A resource, by what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Build(BuildId),
    BuildLog(BuildId),
    TestRun(RunId),
    Recipe(RecipeId),
    Vm(VmName),
}

/// A URI template, what it gives, and what its one variable names.
pub struct Template {
    pub uri: &'static str,
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub mime_type: &'static str,
    pub variable: &'static str,
    pub names: Names,
}

pub const TEMPLATES: &[Template] = &[
    Template {
        uri: "build://{build_id}",
        name: "build",
        title: "Build",
        description: "One of your builds: status, stage, progress, its recipe, the ISO's checksum and size. Subscribe to be told when it changes.",
        mime_type: "application/json",
        variable: "build_id",
        names: Names::Build,
    },
    Template {
        uri: "build://{build_id}/log",
        name: "build-log",
        title: "Build log",
        description: "The log of one of your builds (its last 5,000 lines). Subscribe to be told when it grows.",
        mime_type: "text/plain",
        variable: "build_id",
        names: Names::Build,
    },
    Template {
        uri: "test-run://{run_id}",
        name: "test-run",
        title: "Test run",
        description: "One of your test runs: status and every check's result. Subscribe to be told when it changes.",
        mime_type: "application/json",
        variable: "run_id",
        names: Names::TestRun,
    },
    Template {
        uri: "recipe://{recipe_id}",
        name: "recipe",
        title: "Recipe",
        description: "A catalog template or one of your recipes, with its content-addressed id.",
        mime_type: "application/json",
        variable: "recipe_id",
        names: Names::Recipe,
    },
    Template {
        uri: "vm://{vm_name}",
        name: "vm",
        title: "VM",
        description: "One of your VMs: its build, state, memory and processors.",
        mime_type: "application/json",
        variable: "vm_name",
        names: Names::Vm,
    },
];

impl Resource {
    pub fn uri(&self) -> String {
        match self {
            Resource::Build(id) => format!("build://{id}"),
            Resource::BuildLog(id) => format!("build://{id}/log"),
            Resource::TestRun(id) => format!("test-run://{id}"),
            Resource::Recipe(id) => format!("recipe://{id}"),
            Resource::Vm(name) => format!("vm://{name}"),
        }
    }

    /// Whether the resource changes, so that subscribing to it makes sense.
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Resource::Build(_) | Resource::BuildLog(_) | Resource::TestRun(_) | Resource::Vm(_)
        )
    }

    /// The resource at `uri`; a resource-not-found error (with `data.uri`)
    /// that says which URIs exist otherwise.
    pub fn parse(uri: &str) -> Result<Resource, ErrorData> {
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| unknown(uri))?;
        let id_error =
            |e: openfactory_service::Error| not_found(uri, crate::wording::tool_error(e));
        match scheme {
            "build" => match rest.strip_suffix("/log") {
                Some(id) => BuildId::parse("build_id", id).map(Resource::BuildLog),
                None => BuildId::parse("build_id", rest).map(Resource::Build),
            }
            .map_err(id_error),
            "test-run" => RunId::parse("run_id", rest)
                .map(Resource::TestRun)
                .map_err(id_error),
            "recipe" => RecipeId::parse("recipe_id", rest)
                .map(Resource::Recipe)
                .map_err(id_error),
            "vm" => VmName::parse("vm_name", rest)
                .map(Resource::Vm)
                .map_err(id_error),
            _ => Err(unknown(uri)),
        }
    }
}

/// Every template, as MCP lists them.
pub fn templates() -> Vec<ResourceTemplate> {
    TEMPLATES
        .iter()
        .map(|t| {
            let mut template = ResourceTemplate::new(t.uri, t.name);
            template.title = Some(t.title.into());
            template.description = Some(t.description.into());
            template.mime_type = Some(t.mime_type.into());
            template
        })
        .collect()
}

/// The template whose URI is `uri` (as a client names it when completing).
pub fn template(uri: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.uri == uri)
}

/// Resource not found, with the URI in `data` (SEP-2164) and the reason.
pub fn not_found(uri: &str, message: String) -> ErrorData {
    ErrorData::resource_not_found(message, Some(json!({ "uri": uri })))
}

fn unknown(uri: &str) -> ErrorData {
    let uris: Vec<&str> = TEMPLATES.iter().map(|t| t.uri).collect();
    not_found(
        uri,
        format!(
            "unknown resource `{}`; the server has {}",
            rules::printable(uri, 100),
            uris.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_uri_parses_back_to_itself() {
        let build = BuildId::parse("build_id", "0123456789ab").unwrap();
        for resource in [
            Resource::Build(build.clone()),
            Resource::BuildLog(build),
            Resource::TestRun(RunId::parse("run_id", "ba9876543210").unwrap()),
            Resource::Recipe(RecipeId::parse("recipe_id", "gxp-medtech").unwrap()),
            Resource::Vm(VmName::parse("vm_name", "web-vm").unwrap()),
        ] {
            assert_eq!(Resource::parse(&resource.uri()).unwrap(), resource);
        }
    }

    #[test]
    fn every_template_is_one_of_the_resources() {
        for t in TEMPLATES {
            let example = t.uri.replace(
                &format!("{{{}}}", t.variable),
                match t.names {
                    Names::Build | Names::TestRun => "0123456789ab",
                    Names::Vm => "web-vm",
                    _ => "gxp-medtech",
                },
            );
            assert!(Resource::parse(&example).is_ok(), "{}", t.uri);
            assert!(t.uri.contains(&format!("{{{}}}", t.variable)), "{}", t.uri);
        }
    }

    #[test]
    fn a_missing_resource_names_its_uri_in_data() {
        for uri in [
            "test://static-text",
            "build://../../etc/passwd",
            "nothing",
            "build://x y/log",
        ] {
            let e = Resource::parse(uri).unwrap_err();
            assert_eq!(e.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND, "{uri}");
            assert_eq!(e.data, Some(json!({ "uri": uri })), "{uri}");
        }
        let e = Resource::parse("test://static-text").unwrap_err();
        assert!(e.message.contains("build://{build_id}"), "{}", e.message);
        let e = Resource::parse("build://\u{1b}[2K").unwrap_err();
        assert!(!e.message.contains('\u{1b}'), "{}", e.message);
    }
}
