//! The ids callers pass, checked once at the edge: a front end parses what
//! it was given ([`BuildId::parse`] and friends, naming the field), and every
//! operation takes the typed id. Each has one message for a malformed value.
//!
//! A well-formed id still may not exist, or belong to someone else: that is
//! the operation's "not found", not a parse error.

use std::fmt;
use std::str::FromStr;

use openfactory_core::rules;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::next::Action;

/// How a malformed value is quoted back: bounded, escaped.
fn quoted(value: &str) -> String {
    rules::truncate(value, 40).escape_debug().to_string()
}

/// Ids of builds and test runs: 1 to 64 ASCII letters, digits and `-` (the
/// server makes 12 hex digits).
fn job_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $default_field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
        #[serde(transparent)]
        // Spelled out where used: some MCP clients do not follow `$ref` in a
        // tool's arguments.
        #[schemars(inline)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl $name {
            /// `value` checked, the message naming `field` (e.g. `build_id:
            /// `x` is not a build id…`). [`Self::check`] is the same check
            /// without a field, for a front end that names fields itself.
            pub fn parse(field: &str, value: &str) -> Result<Self> {
                Self::check(value).map_err(|e| e.in_field(field))
            }
        }

        /// Parses with the field named as in the MCP tools.
        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::parse($default_field, s)
            }
        }
    };
}

id_type!(
    /// A build's id (`build_id`).
    BuildId,
    "build_id"
);
id_type!(
    /// A test run's id (`run_id`).
    RunId,
    "run_id"
);
id_type!(
    /// A VM's name, unique among its owner's VMs (`vm_name`).
    VmName,
    "vm_name"
);
id_type!(
    /// A recipe's id: a catalog template's, or one of the caller's recipes'
    /// (their names) (`recipe_id`).
    RecipeId,
    "recipe_id"
);

impl BuildId {
    pub fn check(value: &str) -> Result<BuildId> {
        if job_id(value) {
            Ok(BuildId(value.to_owned()))
        } else {
            Err(Error::invalid(
                "",
                format!(
                    "`{}` is not a build id (12 hex digits, e.g. 3f9c2a1d4e5b)",
                    quoted(value)
                ),
            )
            .see(Action::ListBuilds))
        }
    }

    /// A new id: 12 lowercase hex digits.
    pub fn generate() -> BuildId {
        BuildId(random_hex())
    }
}

impl RunId {
    pub fn check(value: &str) -> Result<RunId> {
        if job_id(value) {
            Ok(RunId(value.to_owned()))
        } else {
            Err(Error::invalid(
                "",
                format!("`{}` is not a test run id (12 hex digits)", quoted(value)),
            )
            .see(Action::ListTestRuns))
        }
    }

    /// A new id: 12 lowercase hex digits.
    pub fn generate() -> RunId {
        RunId(random_hex())
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

impl VmName {
    /// VM names: what people type, and safe in every place they go.
    pub fn check(value: &str) -> Result<VmName> {
        let ok = !value.is_empty()
            && value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(VmName(value.to_owned()))
        } else {
            Err(Error::invalid(
                "",
                format!(
                    "`{}` is not a VM name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter or digit (e.g. web-1)",
                    quoted(value)
                ),
            ))
        }
    }
}

impl RecipeId {
    /// Template ids are catalog file names; recipe names are slugs. Neither
    /// has a path separator, a leading dot, spaces or more than 128 bytes.
    pub fn check(value: &str) -> Result<RecipeId> {
        let ok = !value.is_empty()
            && value.len() <= 128
            && !value.starts_with('.')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(RecipeId(value.to_owned()))
        } else {
            Err(Error::invalid(
                "",
                format!(
                    "`{}` is not a recipe id (letters, digits and `-`, e.g. gxp-medtech)",
                    quoted(value)
                ),
            )
            .see(Action::ListRecipes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const HOSTILE: [&str; 6] = ["", "../x", "a/b", "ünïcode", "a b", "x\u{0}y"];

    #[test]
    fn good_ids_parse_and_print_as_given() {
        let id: BuildId = "3f9c2a1d4e5b".parse().unwrap();
        assert_eq!(
            (id.as_str(), id.to_string()),
            ("3f9c2a1d4e5b", "3f9c2a1d4e5b".into())
        );
        assert!(RunId::parse("run_id", &"a".repeat(64)).is_ok());
        assert!(VmName::parse("name", "web-1").is_ok());
        assert!(VmName::parse("name", &"x".repeat(63)).is_ok());
        assert!(RecipeId::parse("recipe_id", "gxp-medtech").is_ok());
        assert_eq!(BuildId::generate().as_str().len(), 12);
        assert_ne!(RunId::generate(), RunId::generate());
    }

    #[test]
    fn hostile_build_and_run_ids_are_invalid_with_one_message() {
        let long = "a".repeat(65);
        for bad in HOSTILE.iter().copied().chain([long.as_str()]) {
            let e = BuildId::parse("build_id", bad).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::Invalid {
                    field: "build_id".into()
                },
                "{bad:?}"
            );
            assert!(e.message.starts_with("build_id: `"), "{e}");
            assert!(e.message.contains("is not a build id"), "{e}");
            assert_eq!(e.see, Some(Action::ListBuilds));
            assert!(e.message.len() < 200, "{e}");

            let e: Error = bad.parse::<RunId>().unwrap_err();
            assert_eq!(e.field(), Some("run_id"));
            assert!(e.message.contains("is not a test run id"), "{e}");
        }
    }

    #[test]
    fn hostile_vm_names_are_invalid() {
        for bad in HOSTILE
            .iter()
            .copied()
            .chain(["Web", "-x", &"x".repeat(64)])
        {
            let e = VmName::parse("vm_name", bad).unwrap_err();
            assert!(
                e.message.starts_with("vm_name: `") && e.message.contains("is not a VM name"),
                "{e}"
            );
            assert_eq!(e.field(), Some("vm_name"));
        }
    }

    #[test]
    fn hostile_recipe_ids_are_invalid_and_paths_never_pass() {
        let long = "a".repeat(129);
        for bad in HOSTILE.iter().copied().chain([
            "./gxp-medtech",
            "healthcare/gxp-medtech",
            "..",
            long.as_str(),
        ]) {
            let e = RecipeId::parse("template_id", bad).unwrap_err();
            assert_eq!(e.field(), Some("template_id"), "{bad:?}");
            assert!(e.message.contains("is not a recipe id"), "{e}");
        }
    }

    #[test]
    fn messages_quote_hostile_values_bounded_and_escaped() {
        let e = BuildId::parse("build_id", &format!("\n{}", "x".repeat(5000))).unwrap_err();
        assert!(!e.message.contains('\n') && e.message.len() < 200, "{e}");
    }
}
