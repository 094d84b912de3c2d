//! The real first-party plugin components, planned through the real sandbox.

mod common;

use common::Home;
use openfactory_core::catalog::Catalog;
use openfactory_core::plan::{self, FeatureSet};
use openfactory_core::step::{CheckKind, Step};
use openfactory_core::validate::{Format, check_text};

const FIRST_PARTY: &[&str] = &[
    "docker",
    "firewall",
    "gxp",
    "hardening",
    "monitoring",
    "motd",
    "podman",
    "ssh",
];

fn plan_toml(host: &dyn FeatureSet, text: &str) -> plan::Outcome {
    plan::plan_text(text, Format::Toml, host, true)
}

#[test]
fn every_first_party_plugin_loads_and_describes_itself() {
    let home = Home::with_first_party();
    let host = home.load();
    assert!(host.problems().is_empty(), "{:?}", host.problems());
    let names: Vec<&str> = host.features().iter().map(|f| f.name()).collect();
    assert_eq!(names, FIRST_PARTY);
    for f in host.features() {
        assert_eq!(
            f.info.options_schema["type"],
            "object",
            "{}: options schema",
            f.name()
        );
        assert!(!f.info.summary.is_empty());
        assert_eq!(f.digest.len(), 64);
    }
    let gxp = host.feature("gxp").unwrap();
    assert_eq!(gxp.info.requires, ["hardening"]);
    assert!(
        host.feature("docker")
            .unwrap()
            .info
            .conflicts
            .contains(&"podman".to_owned())
    );
}

#[test]
fn compiled_components_are_cached_between_starts() {
    let home = Home::with_first_party();
    // Installing compiled them into the cache already (its check asks each
    // component to describe itself), so the first start is warm.
    assert_eq!(home.load().stats().from_cache, FIRST_PARTY.len());
    std::fs::remove_dir_all(home.cache()).unwrap();
    let cold = home.load();
    assert_eq!(cold.stats().from_cache, 0);
    let warm = home.load();
    assert_eq!(warm.stats().from_cache, FIRST_PARTY.len());
}

#[test]
fn docker_monitoring_plan_is_ordered_and_typed() {
    let home = Home::with_first_party();
    let host = home.load();
    let outcome = plan_toml(
        &host,
        r#"
name = "box"
base_image = "debian-bookworm"
features = ["monitoring", { name = "docker", options = { users = ["admin"], compose = false } }, "ssh"]
packages = ["htop"]
[[users]]
name = "admin"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1xH1f3kQ1Yv8cQp3m admin@example"]
"#,
    );
    let plan = outcome
        .plan
        .unwrap_or_else(|| panic!("{:#?}", outcome.diagnostics));
    let sources: Vec<&str> = plan.steps.iter().map(|s| s.source.as_str()).collect();
    // Recipe prelude, then features in recipe order, then the recipe's packages.
    let first = |s: &str| sources.iter().position(|x| *x == s).unwrap();
    assert_eq!(sources[0], "recipe");
    assert!(first("monitoring") < first("docker") && first("docker") < first("ssh"));
    assert!(
        matches!(&plan.steps.last().unwrap().step, Step::InstallPackages { packages } if packages == &["htop"])
    );
    assert!(plan.steps.iter().any(|s| matches!(&s.step, Step::InstallPackages { packages } if packages.contains(&"docker.io".to_owned()))));
    assert!(!plan.steps.iter().any(|s| matches!(&s.step, Step::InstallPackages { packages } if packages.contains(&"docker-compose".to_owned()))), "compose = false");
    assert!(plan.steps.iter().any(
        |s| matches!(&s.step, Step::AddUser(u) if u.name == "admin" && u.groups == ["docker"])
    ));
    assert!(
        plan.steps
            .iter()
            .any(|s| s.source == "ssh" && matches!(s.step, Step::OpenPort { port: 22, .. }))
    );
    assert!(plan.checks.iter().any(|c| c.name == "docker/docker-info"
        && matches!(&c.kind, CheckKind::CommandSucceeds { argv } if argv[0] == "docker")));
    assert!(plan.checks.iter().any(|c| c.name == "base/multi-user"));
    assert_eq!(
        plan.features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["monitoring", "docker", "ssh"]
    );
}

#[test]
fn required_features_are_planned_first() {
    let home = Home::with_first_party();
    let host = home.load();
    let outcome = plan_toml(
        &host,
        "name = \"g\"\nbase_image = \"debian-trixie\"\nfeatures = [\"gxp\", \"hardening\"]\n",
    );
    let plan = outcome
        .plan
        .unwrap_or_else(|| panic!("{:#?}", outcome.diagnostics));
    assert_eq!(
        plan.features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["hardening", "gxp"]
    );
}

#[test]
fn plugin_diagnostics_are_located_in_the_recipe() {
    let home = Home::with_first_party();
    let host = home.load();
    let outcome = plan_toml(
        &host,
        r#"
name = "x1"
base_image = "debian-bookworm"
features = ["ssh", { name = "docker", options = { users = ["admn"] } }, { name = "monitoring", options = { node_exporter_port = 0, prometheus = "yes" } }, { name = "gxp", options = { data_directories = ["/tmp/../etc"] } }, "hardening"]
[[users]]
name = "admin"
"#,
    );
    assert!(outcome.plan.is_none());
    let found = |path: &str, code: &str| {
        outcome
            .diagnostics
            .iter()
            .any(|d| d.path == path && d.code == code)
    };
    assert!(
        found("features[1].options.users[0]", "docker.unknown-user"),
        "{:#?}",
        outcome.diagnostics
    );
    let unknown = outcome
        .diagnostics
        .iter()
        .find(|d| d.code == "docker.unknown-user")
        .unwrap();
    assert!(
        unknown
            .suggestion
            .as_deref()
            .unwrap_or("")
            .contains("admin"),
        "{unknown:?}"
    );
    assert!(
        found(
            "features[2].options.node_exporter_port",
            "monitoring.options.out-of-range"
        ),
        "{:#?}",
        outcome.diagnostics
    );
    assert!(
        found(
            "features[2].options.prometheus",
            "monitoring.options.wrong-type"
        ),
        "{:#?}",
        outcome.diagnostics
    );
    assert!(
        outcome.diagnostics.iter().any(|d| d
            .path
            .starts_with("features[3].options.data_directories")
            && d.code.starts_with("gxp.")),
        "{:#?}",
        outcome.diagnostics
    );
}

#[test]
fn plans_are_deterministic_and_ids_content_addressed() {
    let home = Home::with_first_party();
    let text = "name = \"d1\"\nbase_image = \"debian-bookworm\"\nfeatures = [\"hardening\", \"firewall\", \"ssh\"]\n";
    let a = plan_toml(&home.load(), text).plan.unwrap();
    let b = plan_toml(&home.load(), text).plan.unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let other = plan_toml(&home.load(), &text.replace("ssh\"]", "ssh\", \"motd\"]"))
        .plan
        .unwrap();
    assert_ne!(a.recipe_digest, other.recipe_digest);
}

#[test]
fn every_catalog_template_is_valid_against_the_first_party_plugins() {
    let home = Home::with_first_party();
    let host = home.load();
    let (catalog, problems) = Catalog::load(&common::workspace().join("recipes"));
    assert!(
        problems.is_empty(),
        "{}",
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        catalog.templates.len() >= 15,
        "only {} templates",
        catalog.templates.len()
    );
    assert!(catalog.categories.len() >= 6);
    for category in &catalog.categories {
        assert!(
            catalog.count(&category.name) > 0,
            "category {} is empty",
            category.name
        );
    }
    assert!(
        catalog
            .template("gxp-medtech")
            .is_some_and(|t| t.category == "healthcare")
    );
    for template in &catalog.templates {
        let outcome = plan::plan(&template.recipe, &host);
        assert!(
            outcome.plan.is_some(),
            "{}: {:#?}",
            template.id,
            outcome.diagnostics
        );
    }
    // The file the README plans is in the catalog.
    let text = std::fs::read_to_string(
        common::workspace().join("recipes/server/debian-docker-monitoring.toml"),
    )
    .unwrap();
    let recipe = check_text(&text, Format::Toml).recipe.unwrap();
    let names: Vec<&str> = recipe.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["ssh", "docker", "monitoring"]);
}
