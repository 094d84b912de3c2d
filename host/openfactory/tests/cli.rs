//! The `openfactory` binary, driven as an operator and a recipe author would.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn workspace() -> PathBuf {
    // host/<crate>/ → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

fn built(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask plugins` first, or the suite through `cargo xtask test`",
        path.display()
    );
    path
}

struct Cli {
    home: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// A home with the project key trusted and every first-party bundle installed, through the CLI.
    fn installed() -> Cli {
        let cli = Cli::new();
        cli.ok(&[
            "plugin",
            "trust",
            built("OPENFACTORY_PROJECT_KEY", "target/signing/project.pub")
                .to_str()
                .unwrap(),
        ]);
        let mut bundles: Vec<PathBuf> =
            std::fs::read_dir(built("OPENFACTORY_BUNDLES", "target/bundles"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
        bundles.sort();
        for b in bundles {
            cli.ok(&["plugin", "install", b.to_str().unwrap()]);
        }
        cli
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_openfactory"));
        command
            .args(args)
            .env("OPENFACTORY_HOME", self.home.path())
            .env("OPENFACTORY_RECIPES_DIR", workspace().join("recipes"))
            .env_remove("OPENFACTORY_ALLOW_UNSIGNED_PLUGINS")
            .env_remove("OPENFACTORY_DATABASE_URL");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run with `input` on stdin.
    fn run_with(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.run(args);
        (
            out.status.code().unwrap(),
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout))),
        )
    }
}

#[test]
fn validate_reports_every_error_with_paths_and_exit_code_1() {
    let cli = Cli::installed();
    let file = cli.home.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"name": "bad", "base_image": "debian-bookworm", "features": ["ssh", "dockr"], "packages": ["vim && reboot"], "servics": []}"#,
    )
    .unwrap();
    let (code, report) = cli.json(&["recipe", "validate", file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    assert_eq!(report["valid"], false);
    let errors: Vec<(String, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        errors.contains(&("features[1].name".into(), "recipe.unknown-feature".into())),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("packages[0]".into(), "recipe.package-name".into())),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("servics".into(), "recipe.unknown-field".into())),
        "{errors:?}"
    );
    let typo = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "features[1].name")
        .unwrap();
    assert_eq!(typo["suggestion"], "did you mean `docker`?");
}

#[test]
fn plan_prints_the_ordered_steps_of_the_docker_monitoring_template() {
    let cli = Cli::installed();
    let file = workspace().join("recipes/server/debian-docker-monitoring.toml");
    let text = cli.ok(&["recipe", "plan", file.to_str().unwrap()]);
    assert!(
        text.contains("Features: ssh 0.1.0, docker 0.1.0, monitoring 0.1.0"),
        "{text}"
    );
    assert!(text.contains("install openssh-server"), "{text}");
    let (code, json) = cli.json(&["recipe", "plan", file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let steps = json["plan"]["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["type"] == "enable_service"
        && s["unit"] == "docker.service"
        && s["source"] == "docker"));
    assert_eq!(json["plan"]["recipe_digest"].as_str().unwrap().len(), 64);
    // The same plan by template id.
    let (_, by_id) = cli.json(&["recipe", "plan", "debian-docker-monitoring", "--json"]);
    assert_eq!(
        by_id["plan"]["recipe_digest"],
        json["plan"]["recipe_digest"]
    );
}

#[test]
fn catalog_is_listed_and_searched() {
    let cli = Cli::new();
    let (_, all) = cli.json(&["recipe", "list", "--json"]);
    let (_, healthcare) = cli.json(&["recipe", "list", "--category", "healthcare", "--json"]);
    let (_, none) = cli.json(&[
        "recipe",
        "list",
        "--search",
        "no-such-thing-anywhere",
        "--json",
    ]);
    assert!(all.as_array().unwrap().len() >= 15);
    assert!(
        healthcare
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "gxp-medtech")
    );
    assert!(
        healthcare
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["category"] == "healthcare")
    );
    assert!(none.as_array().unwrap().is_empty());
    let (_, categories) = cli.json(&["recipe", "categories", "--json"]);
    assert!(categories.as_array().unwrap().len() >= 6);
}

#[test]
fn an_author_signs_a_bundle_and_an_operator_trusts_it() {
    let operator = Cli::installed();
    let author = tempfile::tempdir().unwrap();
    let key = author.path().join("author.key");
    operator.ok(&[
        "plugin",
        "keygen",
        key.to_str().unwrap(),
        "--comment",
        "Jane Author",
    ]);
    let wasm = built("OPENFACTORY_TEST_BUNDLES", "target/test-bundles").join("hostile/plugin.wasm");
    let out = author.path().join("bundle");
    let packed = operator.ok(&[
        "plugin",
        "pack",
        wasm.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(packed.contains("packed hostile 0.1.0"), "{packed}");

    let refused = operator.run(&["plugin", "install", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not signed by a trusted key"));

    operator.ok(&[
        "plugin",
        "trust",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    operator.ok(&["plugin", "install", out.to_str().unwrap()]);
    assert!(
        operator
            .ok(&["plugin", "verify", "hostile"])
            .contains("OK (signed by Jane Author")
    );
    let (_, list) = operator.json(&["plugin", "list", "--json"]);
    assert_eq!(list["plugins"].as_array().unwrap().len(), 9);
    let (_, info) = operator.json(&["plugin", "info", "docker", "--json"]);
    assert_eq!(info["options_schema"]["type"], "object");
    operator.ok(&["plugin", "remove", "hostile"]);
}

#[test]
fn a_fresh_home_explains_that_no_plugins_are_installed() {
    let cli = Cli::new();
    let file = cli.home.path().join("r.toml");
    std::fs::write(
        &file,
        "name = \"r1\"\nbase_image = \"debian-bookworm\"\nfeatures = [\"ssh\"]\n",
    )
    .unwrap();
    let out = cli.run(&["recipe", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no feature plugins are installed"), "{text}");
}

#[test]
fn an_operator_creates_an_account_and_its_keys_with_the_services_rules() {
    let cli = Cli::new();
    let text = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let created = cli.run_with(
        &["account", "create", " Ada@Example.org", "--operator"],
        "correct horse battery\n",
    );
    assert!(created.status.success(), "{}", text(&created));
    assert!(
        text(&created).contains("(ada@example.org), an operator"),
        "{}",
        text(&created)
    );
    // The service's checks and wording: a taken email, a short password.
    let taken = cli.run_with(
        &["account", "create", "ada@example.org"],
        "correct horse battery\n",
    );
    assert!(!taken.status.success());
    assert!(text(&taken).contains("already exists"), "{}", text(&taken));
    let short = cli.run_with(&["account", "create", "bob@example.org"], "short\n");
    assert!(!short.status.success());
    assert!(
        text(&short).contains("password: use 10 to 1024 characters"),
        "{}",
        text(&short)
    );
    let bad = cli.run(&["account", "create", "bob"]);
    assert!(
        text(&bad).contains("email: give an address"),
        "{}",
        text(&bad)
    );

    let out = cli.run(&[
        "key",
        "create",
        "--email",
        "ada@example.org",
        "--name",
        " laptop ",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("of_mcp_") && key.len() == 47, "{key}");
    let unnamed = cli.run(&["key", "create", "--email", "ada@example.org", "--name", ""]);
    assert!(
        text(&unnamed).contains("name: give 1 to 64"),
        "{}",
        text(&unnamed)
    );

    let listed = cli.ok(&["key", "list", "--email", "ada@example.org"]);
    assert!(
        listed.contains(&key[..13]) && listed.contains("laptop"),
        "{listed}"
    );
    let key_id = listed.split_whitespace().next().unwrap().to_owned();
    assert_eq!(
        cli.ok(&["key", "revoke", "--email", "ada@example.org", &key_id]),
        format!("revoked {key_id}\n")
    );
    assert!(
        cli.ok(&["key", "list", "--email", "ada@example.org"])
            .contains("revoked")
    );
    let missing = cli.run(&["key", "revoke", "--email", "ada@example.org", "nope"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("key `nope` not found; `openfactory key list` shows them"),
        "{}",
        text(&missing)
    );
    let nobody = cli.run(&["key", "list", "--email", "bob@example.org"]);
    assert!(
        text(&nobody).contains("no account has the email bob@example.org"),
        "{}",
        text(&nobody)
    );
}
