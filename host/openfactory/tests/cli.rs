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

/// The stdout of `args`, which must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

    /// A new home whose operator trusts the project's key, through the CLI.
    fn trusting() -> Cli {
        let cli = Cli::new();
        cli.ok(&[
            "plugin",
            "trust",
            built("OPENFACTORY_PROJECT_KEY", "target/signing/project.pub")
                .to_str()
                .unwrap(),
        ]);
        cli
    }

    /// A home with the project key trusted and every first-party bundle installed, through the CLI.
    fn installed() -> Cli {
        let cli = Cli::trusting();
        let mut bundles: Vec<PathBuf> =
            std::fs::read_dir(built("OPENFACTORY_BUNDLES", "target/bundles"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
        bundles.sort();
        for b in bundles {
            cli.ok(&[
                "plugin",
                "install",
                "--grant",
                "declared",
                b.to_str().unwrap(),
            ]);
        }
        cli
    }

    /// A home with the project key trusted and only the first-party `ssh` installed.
    fn with_ssh() -> Cli {
        let cli = Cli::trusting();
        let ssh = built("OPENFACTORY_BUNDLES", "target/bundles").join("ssh");
        cli.ok(&["plugin", "install", ssh.to_str().unwrap()]);
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
        succeeded(args, self.run(args))
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

/// Standard output and error together.
fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_plugin_is_its_directory_and_verify_name_checks_the_installed_one() {
    let cli = Cli::with_ssh();
    // A directory called `ssh` where the operator happens to stand holds
    // another (valid, signed) bundle: `verify ssh` is about the installed ssh.
    let cwd = tempfile::tempdir().unwrap();
    let hostile = built("OPENFACTORY_TEST_BUNDLES", "target/test-bundles").join("hostile");
    copy_dir(&hostile, &cwd.path().join("ssh"));
    let verify = |args: &[&str]| cli.command(args).current_dir(cwd.path()).output().unwrap();
    let out = verify(&["plugin", "verify", "ssh"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        both(&out).starts_with("ssh 0.1.0: OK (signed by"),
        "{}",
        both(&out)
    );
    // A path says it is a path.
    let out = verify(&["plugin", "verify", "./ssh"]);
    assert!(
        both(&out).starts_with("hostile 0.1.0: OK"),
        "{}",
        both(&out)
    );
    let out = verify(&["plugin", "verify", "nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        both(&out).contains("plugin `nothing` is not installed")
            && both(&out).contains("`./nothing`"),
        "{}",
        both(&out)
    );

    // The installed ssh, copied under another directory, is not loaded, and
    // `verify` of that directory says why.
    let plugins = cli.home.path().join("plugins");
    copy_dir(&plugins.join("ssh"), &plugins.join("zzz"));
    let list = cli.run(&["plugin", "list"]);
    assert_eq!(list.status.code(), Some(1));
    let text = both(&list);
    assert!(
        text.contains("zzz")
            && text.contains("NOT LOADED")
            && text.contains("a plugin's directory is its name"),
        "{text}"
    );
    let out = cli.run(&["plugin", "verify", "zzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        both(&out).contains("FAILED") && both(&out).contains("names it `ssh`"),
        "{}",
        both(&out)
    );
}

#[test]
fn another_signers_bundle_replaces_a_plugin_only_with_new_signer_and_keys_may_be_tied_to_names() {
    let cli = Cli::with_ssh();
    let author = tempfile::tempdir().unwrap();
    let key = author.path().join("jane.key");
    cli.ok(&[
        "plugin",
        "keygen",
        key.to_str().unwrap(),
        "--comment",
        "Jane Author",
    ]);
    let public = key.with_extension("pub");
    let theirs = author.path().join("ssh");
    copy_dir(
        &built("OPENFACTORY_BUNDLES", "target/bundles").join("ssh"),
        &theirs,
    );
    cli.ok(&[
        "plugin",
        "sign",
        theirs.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let theirs = theirs.to_str().unwrap();

    // Trusted for docker only, the key cannot sign ssh.
    let trusted = cli.ok(&[
        "plugin",
        "trust",
        public.to_str().unwrap(),
        "--names",
        "docker",
    ]);
    assert!(
        trusted.contains("(Jane Author) for bundles named docker only"),
        "{trusted}"
    );
    let out = cli.run(&["plugin", "install", "--replace", "--new-signer", theirs]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        both(&out).contains("trusted to sign only bundles named docker, not `ssh`"),
        "{}",
        both(&out)
    );
    let bad = cli.run(&[
        "plugin",
        "trust",
        public.to_str().unwrap(),
        "--names",
        "recipe",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        both(&bad).contains("--names: `recipe` is reserved"),
        "{}",
        both(&bad)
    );

    // Trusted for any name, it may sign ssh, but replacing the project's
    // ssh with Jane's needs consent, and the message names both signers.
    let project = std::fs::read_to_string(built(
        "OPENFACTORY_PROJECT_KEY",
        "target/signing/project.pub",
    ))
    .unwrap();
    let project = format!(
        "signed by {}",
        project.trim().splitn(3, ' ').nth(2).unwrap()
    );
    let trusted = cli.ok(&["plugin", "trust", public.to_str().unwrap()]);
    assert!(trusted.contains("for any bundle name"), "{trusted}");
    let out = cli.run(&["plugin", "install", "--replace", theirs]);
    assert_eq!(out.status.code(), Some(2));
    let text = both(&out);
    assert!(
        text.contains(&format!("the installed version 0.1.0 is {project}"))
            && text.contains("this bundle (version 0.1.0) is signed by Jane Author")
            && text.contains("--new-signer"),
        "{text}"
    );
    assert!(
        cli.ok(&["plugin", "verify", "ssh"]).contains(&project),
        "still the project's"
    );
    // --new-signer alone (without --replace) is refused by the parser.
    assert!(
        !cli.run(&["plugin", "install", "--new-signer", theirs])
            .status
            .success()
    );
    let done = cli.ok(&["plugin", "install", "--replace", "--new-signer", theirs]);
    assert!(
        done.contains(&format!(
            "SIGNER CHANGED: replaced version 0.1.0 ({project}"
        )) && done.contains("with a bundle signed by Jane Author"),
        "{done}"
    );
    assert!(
        cli.ok(&["plugin", "verify", "ssh"])
            .contains("OK (signed by Jane Author")
    );
}

#[test]
fn pack_keeps_what_is_not_a_bundle_and_install_asks_the_component_who_it_is() {
    let cli = Cli::new();
    let author = tempfile::tempdir().unwrap();
    let key = author.path().join("author.key");
    cli.ok(&[
        "plugin",
        "keygen",
        key.to_str().unwrap(),
        "--comment",
        "Author",
    ]);
    cli.ok(&[
        "plugin",
        "trust",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    let wasm = built("OPENFACTORY_TEST_BUNDLES", "target/test-bundles").join("hostile/plugin.wasm");
    let out = author.path().join("work");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let pack = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "pack",
            wasm.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli.run(&args)
    };
    let refused = pack(&[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        both(&refused).contains("neither empty nor a bundle") && both(&refused).contains("--force"),
        "{}",
        both(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert!(pack(&["--force"]).status.success());
    assert!(!out.join("notes.txt").exists());
    // A previous bundle is replaced without --force.
    let again = pack(&[]);
    assert!(again.status.success(), "{}", both(&again));

    // A manifest that says another version than its component, signed by a
    // trusted key, is refused at install, and nothing is installed.
    let manifest = out.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"0.2.0\"");
    std::fs::write(&manifest, text).unwrap();
    cli.ok(&[
        "plugin",
        "sign",
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let installed = cli.run(&["plugin", "install", out.to_str().unwrap()]);
    assert_eq!(installed.status.code(), Some(2));
    assert!(
        both(&installed).contains("the manifest says version 0.2.0 but the component says 0.1.0"),
        "{}",
        both(&installed)
    );
    assert!(cli.ok(&["plugin", "list"]).contains("No plugins installed"));
}

#[test]
fn install_shows_what_a_plugin_may_touch_and_which_privileges_wait_for_a_grant() {
    let cli = Cli::trusting();
    let docker = built("OPENFACTORY_BUNDLES", "target/bundles").join("docker");
    let out = cli.ok(&["plugin", "install", docker.to_str().unwrap()]);
    for shown in [
        "may touch:",
        "packages: docker.io",
        "units: docker.service",
        "groups: docker",
        "not granted: privileged-groups",
        "openfactory plugin grant docker privileged-groups",
    ] {
        assert!(out.contains(shown), "{shown:?} missing from:\n{out}");
    }
    // Granted later, and said so.
    let granted = cli.ok(&["plugin", "grant", "docker", "privileged-groups"]);
    assert!(granted.contains("privileged-groups"), "{granted}");
    let info = cli.ok(&["plugin", "info", "docker"]);
    assert!(
        info.contains("privileged-groups") && info.contains("granted"),
        "{info}"
    );
}

#[test]
fn validate_plans_too_so_a_plugins_refusal_makes_a_recipe_invalid() {
    // `recipe validate` says invalid what `recipe plan` would refuse: here a
    // plugin's step that overwrites what the recipe itself writes.
    let cli = Cli::trusting();
    let hostile = built("OPENFACTORY_TEST_BUNDLES", "target/test-bundles").join("hostile");
    cli.ok(&[
        "plugin",
        "install",
        "--grant",
        "declared",
        hostile.to_str().unwrap(),
    ]);
    let file = cli.home.path().join("r.toml");
    std::fs::write(
        &file,
        "name = \"web\"\nbase_image = \"debian-bookworm\"\n\n[[features]]\nname = \"hostile\"\noptions = { attack = \"overwrite\" }\n",
    )
    .unwrap();
    let out = cli.run(&["recipe", "validate", file.to_str().unwrap()]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("plan.write-conflict") && text.contains("/etc/hosts"),
        "{text}"
    );
}

/// Where `plugin test` builds authors' plugins in these tests: a target
/// directory of their own beside this build's (cargo locks the one it runs
/// the tests from), kept between runs like it.
fn authors_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("authors-loop")
}

impl Cli {
    /// `args` as an author runs them: with the tools `plugin test` uses.
    fn author(&self, args: &[&str]) -> Output {
        self.command(args)
            .env("CARGO_TARGET_DIR", authors_target())
            .env(
                "COMPONENTIZE_PY",
                built("COMPONENTIZE_PY", "target/authoring/bin/componentize-py"),
            )
            .env(
                "COMPONENTIZE_JS",
                built(
                    "COMPONENTIZE_JS",
                    "/var/cache/openfactory/tools/componentize-js-0.23.0/node_modules/.bin/componentize-js",
                ),
            )
            .output()
            .unwrap()
    }

    fn author_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.author(args))
    }
}

/// The author's loop as a new author lives it: `plugin new` scaffolds a
/// plugin that builds at once, and `plugin test` builds it, installs it in a
/// throwaway home beside the operator's plugins (whose home it leaves as it
/// was) and shows its steps in a real plan, also with a recipe of the
/// author's that uses an installed first-party feature too.
#[test]
fn a_new_plugin_builds_and_plans_at_once_in_the_authors_loop() {
    let cli = Cli::with_ssh();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("greeter");
    let sdk = workspace().join("plugins/sdk");
    let made = cli.ok(&[
        "plugin",
        "new",
        "greeter",
        "--dir",
        dir.to_str().unwrap(),
        "--sdk",
        sdk.to_str().unwrap(),
    ]);
    assert!(made.contains("created plugin `greeter`"), "{made}");
    for file in ["Cargo.toml", "src/lib.rs", "capabilities.toml", "README.md"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    // Not over what exists, and not under a name no plugin may have.
    let again = cli.run(&["plugin", "new", "greeter", "--dir", dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    let reserved = cli.run(&[
        "plugin",
        "new",
        "recipe",
        "--dir",
        work.path().join("r").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&reserved.stderr).contains("reserved"));
    assert!(!work.path().join("r").exists());

    let tested = cli.author_ok(&["plugin", "test", dir.to_str().unwrap()]);
    assert!(
        tested.contains("plugin greeter 0.1.0: built, packed and installed in a throwaway home"),
        "{tested}"
    );
    assert!(tested.contains("/etc/greeter.conf"), "{tested}");
    assert!(tested.contains("greeter/config-present"), "{tested}");
    // The operator's home is as it was.
    let listed = cli.ok(&["plugin", "list"]);
    assert!(
        listed.contains("ssh") && !listed.contains("greeter"),
        "{listed}"
    );

    // The author's recipe, with an installed feature beside the new one, and
    // an option the schema refuses: named by its field.
    let recipe = work.path().join("mine.toml");
    std::fs::write(
        &recipe,
        "name = \"mine\"\nbase_image = \"debian-bookworm\"\nusers = [{ name = \"ops\" }]\nfeatures = [{ name = \"ssh\" }, { name = \"greeter\", options = { greeting = \"hi\" } }]\n",
    )
    .unwrap();
    let args = [
        "plugin",
        "test",
        dir.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
    ];
    let mine = cli.author_ok(&args);
    assert!(
        mine.contains("ssh") && mine.contains("/etc/greeter.conf"),
        "{mine}"
    );
    std::fs::write(
        &recipe,
        "name = \"mine\"\nbase_image = \"debian-bookworm\"\nfeatures = [{ name = \"greeter\", options = { greeting = \"\" } }]\n",
    )
    .unwrap();
    let bad = cli.author(&args);
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stdout);
    assert!(said.contains("features[0].options.greeting"), "{said}");
}

/// The same loop in Python: the scaffold (its helper library and contract
/// copied in) builds with componentize-py and plans; the plugin's own
/// validation names its field; a bug in it is a diagnostic that says so, not
/// a crash; the sandbox's budgets hold for an interpreter as for Rust (a
/// loop, a memory hoard); what is not a plugin is refused with what to do.
#[test]
fn a_new_python_plugin_builds_and_plans_at_once_in_the_authors_loop() {
    another_languages_loop(
        "python",
        "pygreeter",
        &["app.py", "openfactory_plugin/__init__.py"],
        Attacks {
            anchor: "    def plan(self, ctx):\n",
            call: "        attack(ctx.options.get(\"greeting\"))\n",
            code: r#"

def attack(how):
    if how == "bug":
        return {}["missing"]
    if how == "loop":
        while True:
            pass
    if how == "hog":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
"#,
            raised: "KeyError",
        },
    );
}

/// And in JavaScript, with componentize-js and its helper library.
#[test]
fn a_new_javascript_plugin_builds_and_plans_at_once_in_the_authors_loop() {
    another_languages_loop(
        "js",
        "jsgreeter",
        &["app.js", "openfactory-plugin.js"],
        Attacks {
            anchor: "  plan(ctx) {\n",
            call: "    attack(ctx.options.greeting);\n",
            code: r#"
function attack(how) {
  if (how === "bug") return null.missing;
  if (how === "loop") for (;;) {}
  if (how === "hog") {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
  }
}
"#,
            raised: "TypeError",
        },
    );
}

/// Code added to a scaffold's plan: `call` after the line `anchor` calls
/// `code`'s `attack(greeting)`, which for `bug` raises `raised`, for `loop`
/// never returns and for `hog` takes memory until it has no more.
struct Attacks {
    anchor: &'static str,
    call: &'static str,
    code: &'static str,
    raised: &'static str,
}

/// `plugin new --lang LANG NAME`, then `plugin test` as an author runs it:
/// `source` holds the scaffold's own files.
fn another_languages_loop(lang: &str, name: &str, source: &[&str], attacks: Attacks) {
    let cli = Cli::with_ssh();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join(name);
    let made = cli.ok(&[
        "plugin",
        "new",
        name,
        "--lang",
        lang,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(made.contains(&format!("created plugin `{name}`")), "{made}");
    for file in source
        .iter()
        .chain(&["wit/feature.wit", "capabilities.toml"])
    {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let tested = cli.author_ok(&["plugin", "test", dir.to_str().unwrap()]);
    assert!(
        tested.contains(&format!(
            "plugin {name} 0.1.0: built, packed and installed in a throwaway home"
        )),
        "{tested}"
    );
    assert!(tested.contains(&format!("/etc/{name}.conf")), "{tested}");
    assert!(
        tested.contains(&format!("{name}/config-present")),
        "{tested}"
    );

    let recipe = work.path().join("mine.toml");
    std::fs::write(
        &recipe,
        format!("name = \"mine\"\nbase_image = \"debian-bookworm\"\nfeatures = [{{ name = \"{name}\", options = {{ greeting = \"one\\ntwo\" }} }}]\n"),
    )
    .unwrap();
    let args = [
        "plugin",
        "test",
        dir.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
    ];
    let bad = cli.author(&args);
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stdout);
    assert!(
        said.contains("features[0].options.greeting") && said.contains("remove the line breaks"),
        "{said}"
    );

    // A bug in the author's plan is reported as the plugin's, with its
    // cause; a loop and a hoard are stopped by the budgets Rust plugins have.
    let app = dir.join(source[0]);
    let text = std::fs::read_to_string(&app).unwrap();
    assert!(
        text.contains(attacks.anchor),
        "the scaffold changed: {text}"
    );
    let armed = text.replace(
        attacks.anchor,
        &format!("{}{}", attacks.anchor, attacks.call),
    ) + attacks.code;
    std::fs::write(&app, armed).unwrap();
    let bug = format!("{name}.bug");
    for (how, says) in [
        ("bug", [bug.as_str(), attacks.raised]),
        ("loop", ["plugin.failed", "CPU budget"]),
        ("hog", ["plugin.failed", "memory limit"]),
    ] {
        std::fs::write(
            &recipe,
            format!("name = \"mine\"\nbase_image = \"debian-bookworm\"\nfeatures = [{{ name = \"{name}\", options = {{ greeting = \"{how}\" }} }}]\n"),
        )
        .unwrap();
        // Built once more, for the first: nothing changed after it.
        let out = cli.author(&args);
        assert_eq!(out.status.code(), Some(1), "{how}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(says.iter().all(|s| said.contains(s)), "{how}: {said}");
    }

    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let refused = cli.author(&["plugin", "test", empty.to_str().unwrap()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("holds neither Cargo.toml"), "{said}");
}
