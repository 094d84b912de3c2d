//! MCP prompts: the things people ask OpenFactory for (the reference
//! document's examples), as messages that tell an assistant which tools to
//! call. Pure: a prompt's text is built from its arguments and what the
//! server offers ([`Offer`]); arguments that name something are checked
//! against it, so that a typo is an error naming the argument, and
//! completions ([`crate::complete`]) fill them.

use std::collections::BTreeMap;

use openfactory_core::rules;
use rmcp::model::{GetPromptResult, Prompt, PromptArgument, PromptMessage, Role};

pub use crate::complete::Names;

/// What the server offers that prompt arguments may name.
#[derive(Debug, Default)]
pub struct Offer {
    /// Catalog template ids.
    pub templates: Vec<String>,
    /// Installed feature names.
    pub features: Vec<String>,
    /// Base image names.
    pub bases: Vec<String>,
    /// Each installed feature's option names.
    pub options: BTreeMap<String, Vec<String>>,
}

/// Build statuses, by name (what list_builds filters on).
pub fn build_statuses() -> Vec<String> {
    openfactory_store::BuildStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect()
}

/// One argument of a prompt.
#[derive(Debug, Clone, Copy)]
pub struct Argument {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// What the argument names, for completions and checks.
    pub names: Names,
}

/// A prompt: its name, what it is for, and its arguments.
#[derive(Debug)]
pub struct Definition {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub arguments: &'static [Argument],
}

const FEATURES: Argument = Argument {
    name: "features",
    description: "Features to enable, comma-separated (ssh, docker, monitoring…; list_features has them all)",
    required: true,
    names: Names::Features,
};
const BASE: Argument = Argument {
    name: "base_image",
    description: "The Debian release to build on (default debian-bookworm)",
    required: false,
    names: Names::Base,
};
const TEMPLATE: Argument = Argument {
    name: "template",
    description: "A catalog template id (list_recipes shows them)",
    required: true,
    names: Names::Template,
};
const PACKAGES: Argument = Argument {
    name: "packages",
    description: "Extra Debian packages, comma-separated (vim, htop)",
    required: false,
    names: Names::Text,
};
const BUILD: Argument = Argument {
    name: "build_id",
    description: "One of your builds (default: your latest completed build)",
    required: false,
    names: Names::Build,
};
const RUN: Argument = Argument {
    name: "run_id",
    description: "One of your test runs (default: the latest run of your latest build)",
    required: false,
    names: Names::TestRun,
};
const VM_NAME: Argument = Argument {
    name: "vm_name",
    description: "A name for the new VM (lower-case letters, digits and `-`)",
    required: false,
    names: Names::Text,
};

const FEATURE: Argument = Argument {
    name: "feature",
    description: "One feature (list_features has them all)",
    required: true,
    names: Names::Feature,
};
const OPTION: Argument = Argument {
    name: "option",
    description: "One of the feature's options (default: all of them)",
    required: false,
    names: Names::FeatureOption,
};
const STATUS: Argument = Argument {
    name: "status",
    description: "Only builds with this status: queued, running, completed, failed or cancelled (default: all)",
    required: false,
    names: Names::BuildStatus,
};

/// Every prompt the server offers.
pub const PROMPTS: &[Definition] = &[
    Definition {
        name: "build_server",
        title: "Build a server with chosen features",
        description: "Build a bootable Debian server image with the features you name, and get its ISO.",
        arguments: &[FEATURES, BASE],
    },
    Definition {
        name: "build_template",
        title: "Build a template with extra packages",
        description: "Copy a catalog template, add packages, build it, and get its ISO.",
        arguments: &[TEMPLATE, PACKAGES],
    },
    Definition {
        name: "test_latest_build",
        title: "Test a build",
        description: "Boot a build in a throwaway VM, run its checks, and report the results.",
        arguments: &[BUILD],
    },
    Definition {
        name: "show_test_results",
        title: "Show test results",
        description: "Show the results of a test run, check by check.",
        arguments: &[RUN],
    },
    Definition {
        name: "create_vm_from_latest_build",
        title: "Create a VM from a build",
        description: "Boot a VM from a completed build and open its screen.",
        arguments: &[BUILD, VM_NAME],
    },
    Definition {
        name: "configure_feature",
        title: "Configure a feature",
        description: "Explain a feature's options (or one of them) and show how a recipe sets them.",
        arguments: &[FEATURE, OPTION],
    },
    Definition {
        name: "review_builds",
        title: "Review my builds",
        description: "List your builds (with a status, or all), and explain each failure.",
        arguments: &[STATUS],
    },
];

/// A prompt that could not be given: the argument at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("unknown prompt `{0}`; prompts: {list}", list = names().join(", "))]
    Unknown(String),
    #[error("argument `{argument}`: {reason}")]
    Argument {
        argument: &'static str,
        reason: String,
    },
}

fn names() -> Vec<&'static str> {
    PROMPTS.iter().map(|p| p.name).collect()
}

/// The prompt called `name`.
pub fn definition(name: &str) -> Option<&'static Definition> {
    PROMPTS.iter().find(|p| p.name == name)
}

/// Every prompt, as MCP lists them.
pub fn list() -> Vec<Prompt> {
    PROMPTS
        .iter()
        .map(|p| {
            let arguments = p
                .arguments
                .iter()
                .map(|a| {
                    let mut argument = PromptArgument::new(a.name);
                    argument.description = Some(a.description.into());
                    argument.required = Some(a.required);
                    argument
                })
                .collect();
            let mut prompt = Prompt::new(p.name, Some(p.description), Some(arguments));
            prompt.title = Some(p.title.into());
            prompt
        })
        .collect()
}

/// Words of a comma-separated list, trimmed, empty ones dropped.
fn words(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect()
}

/// The prompt `name` with `arguments`, checked against `offer`.
pub fn get(
    name: &str,
    arguments: &BTreeMap<String, String>,
    offer: &Offer,
) -> Result<GetPromptResult, PromptError> {
    let prompt = definition(name).ok_or_else(|| PromptError::Unknown(rules::truncate(name, 64)))?;
    if let Some(extra) = arguments
        .keys()
        .find(|k| !prompt.arguments.iter().any(|a| a.name == k.as_str()))
    {
        return Err(PromptError::Argument {
            argument: prompt.arguments.first().map_or("arguments", |a| a.name),
            reason: format!(
                "`{}` is not an argument of {}; it takes {}",
                rules::printable(extra, 40),
                prompt.name,
                prompt
                    .arguments
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    for argument in prompt.arguments {
        let value = arguments
            .get(argument.name)
            .map(|v| v.trim())
            .unwrap_or_default();
        if value.is_empty() {
            if argument.required {
                return Err(PromptError::Argument {
                    argument: argument.name,
                    reason: format!("required: {}", argument.description),
                });
            }
            continue;
        }
        check(argument, value, offer, &values)?;
        values.insert(argument.name, rules::printable(value, 400));
    }
    let text = text(prompt.name, &values);
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(prompt.description),
    )
}

/// An argument's value against what the server offers (and the arguments
/// before it: an option belongs to the feature named earlier).
fn check(
    argument: &Argument,
    value: &str,
    offer: &Offer,
    earlier: &BTreeMap<&'static str, String>,
) -> Result<(), PromptError> {
    let unknown = |what: &str, bad: &str, known: &[String]| PromptError::Argument {
        argument: argument.name,
        reason: format!(
            "unknown {what} `{}`; {}",
            rules::printable(bad, 64),
            match openfactory_core::diagnostic::did_you_mean(bad, known.iter().map(String::as_str))
            {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("one of: {}", known.join(", ")),
            }
        ),
    };
    match argument.names {
        Names::Template if !offer.templates.iter().any(|t| t == value) => {
            Err(unknown("template", value, &offer.templates))
        }
        Names::Base if !offer.bases.iter().any(|b| b == value) => {
            Err(unknown("base image", value, &offer.bases))
        }
        Names::Feature if !offer.features.iter().any(|f| f == value) => {
            Err(unknown("feature", value, &offer.features))
        }
        Names::FeatureOption => {
            let feature = earlier
                .get("feature")
                .map(String::as_str)
                .unwrap_or_default();
            let options = offer.options.get(feature).cloned().unwrap_or_default();
            if options.iter().any(|o| o == value) {
                Ok(())
            } else if options.is_empty() {
                Err(PromptError::Argument {
                    argument: argument.name,
                    reason: format!("feature `{feature}` has no options"),
                })
            } else {
                Err(unknown(&format!("option of {feature}"), value, &options))
            }
        }
        Names::BuildStatus => {
            let statuses = build_statuses();
            if statuses.iter().any(|s| s == value) {
                Ok(())
            } else {
                Err(unknown("status", value, &statuses))
            }
        }
        Names::Features => match words(value)
            .into_iter()
            .find(|w| !offer.features.iter().any(|f| f == w))
        {
            Some(bad) => Err(unknown("feature", bad, &offer.features)),
            None => Ok(()),
        },
        Names::Build | Names::TestRun => {
            if value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                Ok(())
            } else {
                Err(PromptError::Argument {
                    argument: argument.name,
                    reason: "an id is letters, digits and `-` (list_builds and list_test_runs show them)".into(),
                })
            }
        }
        _ => Ok(()),
    }
}

/// What the assistant is asked, with the tools to use, in order.
fn text(prompt: &str, values: &BTreeMap<&'static str, String>) -> String {
    let value = |name: &str| values.get(name).map(String::as_str);
    let build = value("build_id").map_or_else(
        || "my latest completed build (list_builds with status `completed` and limit 1)".to_owned(),
        |id| format!("build `{id}`"),
    );
    match prompt {
        "build_server" => {
            let features = words(value("features").unwrap_or_default()).join(", ");
            let base = value("base_image").unwrap_or("debian-bookworm");
            format!(
                "Build me a {base} server with these features: {features}.\n\
                 1. Call list_features and read each feature's options; keep the defaults unless I said otherwise.\n\
                 2. Write the recipe (base_image `{base}`, the features in this order) and check it with validate_recipe; fix every error it names.\n\
                 3. Call create_build with the recipe, then get_build_status with wait_seconds until the build completes or fails.\n\
                 4. When it completes, give me the link from get_iso_download_url and the image's size; if it fails, show the error and the failed step."
            )
        }
        "build_template" => {
            let template = value("template").unwrap_or_default();
            let packages = words(value("packages").unwrap_or_default());
            let extra = if packages.is_empty() {
                "with no changes".to_owned()
            } else {
                format!("with these extra packages: {}", packages.join(", "))
            };
            let modifications = if packages.is_empty() {
                String::new()
            } else {
                let quoted: Vec<String> = packages.iter().map(|p| format!("\"{p}\"")).collect();
                format!(
                    " and modifications {{\"add_packages\": [{}]}}",
                    quoted.join(", ")
                )
            };
            format!(
                "Create a build from the `{template}` template {extra}.\n\
                 1. Call get_recipe with recipe_id `{template}` to see what it contains.\n\
                 2. Call create_recipe_from_template with template_id `{template}`, a new name (say `my-{template}`){modifications}.\n\
                 3. Call create_build with the new recipe's id as `recipe`, then get_build_status with wait_seconds until it completes or fails.\n\
                 4. When it completes, give me the link from get_iso_download_url; if it fails, show the error and the failed step."
            )
        }
        "test_latest_build" => format!(
            "Run the tests of {build}.\n\
             1. Call run_tests with that build_id.\n\
             2. Call get_test_results with the run_id and wait_seconds until the run finishes.\n\
             3. Tell me how many checks passed, and for each failed check its name, what it expected and what it saw."
        ),
        "show_test_results" => {
            let run = value("run_id").map_or_else(
                || "the latest test run of my latest build (list_builds, then list_test_runs with its build_id and limit 1)".to_owned(),
                |id| format!("test run `{id}`"),
            );
            format!(
                "Show me the results of {run}.\n\
                 1. Call get_test_results with its run_id.\n\
                 2. List every check with passed or failed; for a failed one, what it expected and what it saw, and the end of the serial log if the VM did not boot."
            )
        }
        "create_vm_from_latest_build" => {
            let name = value("vm_name").map_or_else(String::new, |n| format!(" named `{n}`"));
            format!(
                "Create a VM{name} from {build}.\n\
                 1. Call create_vm with that build_id{}.\n\
                 2. Call list_vms until it is running, then give me the link from get_vm_console_url to see its screen.",
                if name.is_empty() { "" } else { " and the name" }
            )
        }
        "configure_feature" => {
            let feature = value("feature").unwrap_or_default();
            let (which, them) = match value("option") {
                Some(option) => (format!("the option `{option}`"), "it"),
                None => ("each option".to_owned(), "them"),
            };
            format!(
                "Explain the `{feature}` feature's options.\n\
                 1. Call list_features and find `{feature}`: its summary, what it requires and conflicts with, and its options_schema.\n\
                 2. For {which}: its type, default and allowed values, and what it changes in the image.\n\
                 3. Show a recipe `features` entry that sets {them} ({{\"name\": \"{feature}\", \"options\": {{…}}}}) and check a recipe with it using validate_recipe."
            )
        }
        "review_builds" => {
            let (which, filter) = match value("status") {
                Some(status) => (
                    format!("{status} builds"),
                    format!(" with status_filter `{status}`"),
                ),
                None => ("builds".to_owned(), String::new()),
            };
            format!(
                "Review my {which}.\n\
                 1. Call list_builds{filter} and limit 20.\n\
                 2. For each failed build, call get_build_status and tell me its error and failed step; for a running one, its stage and percentage.\n\
                 3. Sum up how many builds there are per status, and what to fix first."
            )
        }
        _ => unreachable!("every prompt has a text"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            templates: vec!["gxp-medtech".into(), "debian-minimal-server".into()],
            features: vec!["ssh".into(), "docker".into(), "monitoring".into()],
            bases: vec!["debian-bookworm".into(), "debian-trixie".into()],
            options: BTreeMap::from([
                ("docker".into(), vec!["compose".into(), "users".into()]),
                ("ssh".into(), vec![]),
            ]),
        }
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn text_of(result: &GetPromptResult) -> String {
        serde_json::to_value(&result.messages[0].content).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn every_prompt_names_tools_that_exist() {
        let tools: Vec<String> = crate::tools::OpenFactoryServer::router()
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        let full = args(&[
            ("features", "ssh"),
            ("template", "gxp-medtech"),
            ("packages", "vim"),
            ("feature", "docker"),
        ]);
        for prompt in PROMPTS {
            let given: BTreeMap<String, String> = full
                .iter()
                .filter(|(k, _)| prompt.arguments.iter().any(|a| a.name == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let text = text_of(&get(prompt.name, &given, &offer()).unwrap());
            let named: Vec<&str> = text
                .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .filter(|w| {
                    w.contains('_')
                        && !w.ends_with("_id")
                        && (w.starts_with("get_")
                            || w.starts_with("list_")
                            || w.starts_with("create_")
                            || w.starts_with("run_")
                            || w.starts_with("validate_"))
                })
                .collect();
            assert!(!named.is_empty(), "{}", prompt.name);
            for tool in named {
                assert!(
                    tools.iter().any(|t| t == tool),
                    "{} names `{tool}`, which is no tool",
                    prompt.name
                );
            }
        }
    }

    #[test]
    fn the_seed_example_is_one_prompt() {
        let result = get(
            "build_template",
            &args(&[("template", "gxp-medtech"), ("packages", "vim, htop")]),
            &offer(),
        )
        .unwrap();
        let text = text_of(&result);
        assert!(
            text.contains("`gxp-medtech` template with these extra packages: vim, htop"),
            "{text}"
        );
        assert!(
            text.contains("modifications {\"add_packages\": [\"vim\", \"htop\"]}"),
            "{text}"
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        let offer = offer();
        let err = get(
            "build_template",
            &args(&[("template", "gxp-medtec")]),
            &offer,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument `template`: unknown template `gxp-medtec`; did you mean `gxp-medtech`?"
        );
        let err = get("build_server", &args(&[("features", "ssh, dockr")]), &offer).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown feature `dockr`; did you mean `docker`?"),
            "{err}"
        );
        let err = get("build_server", &args(&[]), &offer).unwrap_err();
        assert!(
            err.to_string().starts_with("argument `features`: required"),
            "{err}"
        );
        let err = get(
            "build_server",
            &args(&[("features", "ssh"), ("colour", "red")]),
            &offer,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`colour` is not an argument of build_server"),
            "{err}"
        );
        let err = get(
            "show_test_results",
            &args(&[("run_id", "x\u{1b}[2K")]),
            &offer,
        )
        .unwrap_err();
        assert!(err.to_string().contains("run_id"), "{err}");
        assert!(matches!(
            get("nope", &args(&[]), &offer),
            Err(PromptError::Unknown(_))
        ));
    }

    #[test]
    fn an_option_is_checked_against_the_feature_named_before_it() {
        let offer = offer();
        let got = |pairs: &[(&str, &str)]| get("configure_feature", &args(pairs), &offer);
        let text = text_of(&got(&[("feature", "docker"), ("option", "compose")]).unwrap());
        assert!(text.contains("the option `compose`"), "{text}");
        let err = got(&[("feature", "docker"), ("option", "compse")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument `option`: unknown option of docker `compse`; did you mean `compose`?"
        );
        let err = got(&[("feature", "ssh"), ("option", "port")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument `option`: feature `ssh` has no options"
        );
        let err = got(&[("feature", "dokker")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("argument `feature`: unknown feature"),
            "{err}"
        );

        let text = text_of(&get("review_builds", &args(&[("status", "failed")]), &offer).unwrap());
        assert!(
            text.contains("list_builds with status_filter `failed`"),
            "{text}"
        );
        let err = get("review_builds", &args(&[("status", "faild")]), &offer).unwrap_err();
        assert!(err.to_string().contains("did you mean `failed`?"), "{err}");
    }

    #[test]
    fn optional_arguments_have_defaults() {
        let text = text_of(&get("test_latest_build", &args(&[]), &offer()).unwrap());
        assert!(text.contains("my latest completed build"), "{text}");
        let text = text_of(
            &get(
                "test_latest_build",
                &args(&[("build_id", "abc123")]),
                &offer(),
            )
            .unwrap(),
        );
        assert!(text.contains("build `abc123`"), "{text}");
    }
}
