//! Catalog proofs: for each template, the last catalog run that built it,
//! booted it and ran its checks (`cargo xtask catalog`), recorded in
//! `recipes/proofs.toml` beside the templates.
//!
//! A proof is of a recipe digest, plugin digests included: it holds for a
//! template only while the template and the plugins that plan it are the
//! ones that were proven. A changed template, or a new build of one of its
//! plugins, is unproven until the catalog proves it again.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The file, in the catalog's directory.
pub const FILE: &str = "proofs.toml";

/// How a catalog run ended for a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Built, booted, and every check passed.
    Passed,
    /// The build failed, the VM did not boot, or a check failed.
    Failed,
}

/// One template's last catalog run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// The recipe digest that was built (sha256, plugin digests included).
    pub recipe_digest: String,
    /// When, as an RFC 3339 UTC time.
    pub proven_at: String,
    pub outcome: Outcome,
    pub build_seconds: u32,
    pub iso_mib: u32,
    pub checks_passed: u32,
    pub checks_total: u32,
    /// What failed first (the build's error, or a check and what it saw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// What a template's proof says about the template as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its current digest was built, booted and passed every check.
    Proven,
    /// Its current digest failed its last catalog run.
    Failed,
    /// Never run, or changed (it or a plugin) since its last run.
    Unproven,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Proven => "proven",
            Status::Failed => "failed",
            Status::Unproven => "unproven",
        }
    }
}

/// Every template's last proof, by template id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    #[serde(default)]
    pub templates: BTreeMap<String, Proof>,
}

impl Proofs {
    pub fn parse(text: &str) -> Result<Proofs, String> {
        toml::from_str(text).map_err(|e| format!("{FILE}: {}", e.message()))
    }

    /// The file's text: a header saying what it is, then each template.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("proofs serialise");
        format!(
            "# Written by `cargo xtask catalog`: each template's last catalog run (built with the\n\
             # first-party plugins, booted in a throwaway VM, its checks run), for the recipe digest\n\
             # that was built. A template whose digest changed is unproven until it runs again.\n\n{body}"
        )
    }

    /// What the proof of template `id` says about it at `digest`.
    pub fn status(&self, id: &str, digest: &str) -> Status {
        match self.templates.get(id) {
            Some(p) if p.recipe_digest == digest => match p.outcome {
                Outcome::Passed => Status::Proven,
                Outcome::Failed => Status::Failed,
            },
            _ => Status::Unproven,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(digest: &str, outcome: Outcome) -> Proof {
        Proof {
            recipe_digest: digest.into(),
            proven_at: "2026-12-02T19:00:00Z".into(),
            outcome,
            build_seconds: 200,
            iso_mib: 400,
            checks_passed: 3,
            checks_total: 4,
            first_failure: Some("port_open 5432: closed".into()),
        }
    }

    #[test]
    fn a_proof_holds_only_for_the_digest_it_was_made_for() {
        let mut proofs = Proofs::default();
        proofs
            .templates
            .insert("a".into(), proof("d1", Outcome::Passed));
        proofs
            .templates
            .insert("b".into(), proof("d2", Outcome::Failed));
        assert_eq!(proofs.status("a", "d1"), Status::Proven);
        assert_eq!(
            proofs.status("a", "d9"),
            Status::Unproven,
            "a changed template"
        );
        assert_eq!(proofs.status("b", "d2"), Status::Failed);
        assert_eq!(proofs.status("c", "d1"), Status::Unproven, "never run");
    }

    #[test]
    fn the_file_round_trips_and_refuses_what_it_does_not_know() {
        let mut proofs = Proofs::default();
        proofs
            .templates
            .insert("gxp-medtech".into(), proof("d1", Outcome::Failed));
        let text = proofs.to_toml();
        assert!(
            text.starts_with("# Written by `cargo xtask catalog`"),
            "{text}"
        );
        assert_eq!(Proofs::parse(&text).unwrap(), proofs);
        let err =
            Proofs::parse("[templates.x]\nrecipe_digest = \"d\"\nsurprise = 1\n").unwrap_err();
        assert!(err.starts_with("proofs.toml: "), "{err}");
    }
}
