//! The plugin author's loop: `openfactory plugin new` scaffolds a plugin (in
//! Rust, Python or JavaScript) that builds at once, and `openfactory plugin test` builds
//! it, plans a recipe with it in a throwaway home, shows the steps and, with
//! `--boot`, builds and boots the image and runs its checks.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use openfactory_plugin_host::{TrustStore, bundle, cache, grants, registry};

use crate::config::Config;
use crate::render::safe;

/// The languages `plugin new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate built with cargo against the SDK in plugins/sdk.
    Rust,
    /// An app module built with componentize-py, with the helper library in
    /// plugins/sdk-python and the contract copied in.
    Python,
    /// An ES module built with componentize-js, with the helper library in
    /// plugins/sdk-js and the contract copied in.
    Js,
}

/// The componentize-py release `plugin test` is tested with (and `cargo
/// xtask test` installs).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The componentize-js release `plugin test` is tested with (and `cargo
/// xtask test` installs).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// The contract this host supports, written into Python plugins.
const FEATURE_WIT: &str = include_str!("../../../../wit/feature.wit");

/// The Python helper library, copied into Python plugins.
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "openfactory_plugin/__init__.py",
        include_str!("../../../../plugins/sdk-python/openfactory_plugin/__init__.py"),
    ),
    (
        "openfactory_plugin/check.py",
        include_str!("../../../../plugins/sdk-python/openfactory_plugin/check.py"),
    ),
    (
        "openfactory_plugin/diag.py",
        include_str!("../../../../plugins/sdk-python/openfactory_plugin/diag.py"),
    ),
    (
        "openfactory_plugin/step.py",
        include_str!("../../../../plugins/sdk-python/openfactory_plugin/step.py"),
    ),
];

/// The JavaScript helper library, copied into JavaScript plugins.
const JS_SDK: (&str, &str) = (
    "openfactory-plugin.js",
    include_str!("../../../../plugins/sdk-js/openfactory-plugin.js"),
);

/// `plugin new NAME`: a plugin in `dir` (default `./NAME`) that builds for
/// wasm32-wasip2 and packs as it is: a Rust crate against the SDK at `sdk`,
/// or a Python app with its helper library and contract beside it.
pub fn new(
    name: &str,
    lang: Lang,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    bundle::check_name(name).map_err(|r| anyhow::anyhow!("`{}`: {r}", safe(name)))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --dir, or remove it",
            dir.display()
        );
    }
    let files = match lang {
        Lang::Rust => {
            let sdk = match sdk {
                Some(path) => path,
                None => default_sdk().context(
                    "cannot find the plugin SDK (plugins/sdk in an OpenFactory checkout): pass --sdk PATH",
                )?,
            };
            let sdk = std::fs::canonicalize(&sdk)
                .with_context(|| format!("--sdk {}: no such directory", sdk.display()))?;
            if !sdk.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: holds no Cargo.toml (the SDK is plugins/sdk)",
                    sdk.display()
                );
            }
            rust_scaffold(name, &sdk)
        }
        Lang::Python | Lang::Js if sdk.is_some() => {
            bail!(
                "--sdk is for --lang rust: a Python or JavaScript plugin carries its helper library"
            )
        }
        Lang::Python => python_scaffold(name),
        Lang::Js => js_scaffold(name),
    };
    for (path, text) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("created plugin `{name}` in {}:", dir.display());
    for (path, _) in &files {
        println!("  {path}");
    }
    println!(
        "next: openfactory plugin test {}   (builds it, plans a recipe with it, shows the steps)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The SDK of the checkout this binary was built from, if it is still there.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// The files of a new Rust plugin, by path.
fn rust_scaffold(name: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let type_name = if type_name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Feature{type_name}")
    } else {
        type_name
    };
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "openfactory-feature-{name}"
description = "OpenFactory feature `{name}`."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
openfactory-plugin-sdk = {{ path = "{sdk}" }}
schemars = "1.2"
serde = {{ version = "1", features = ["derive"] }}

# A workspace of its own: it builds where it is, inside a checkout or not.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#
            ),
        ),
        (
            ".cargo/config.toml",
            "[build]\ntarget = \"wasm32-wasip2\"\n".to_owned(),
        ),
        ("capabilities.toml", capabilities(name)),
        (".gitignore", "target/\n".to_owned()),
        (
            "src/lib.rs",
            format!(
                r#"//! `{name}`: one configuration file, written from its options.

use openfactory_plugin_sdk::prelude::*;

/// Options of `{name}`. Doc comments become the schema's descriptions, which
/// people and assistants read to fill the options in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {{
    /// The line written to /etc/{name}.conf.
    #[schemars(length(min = 1, max = 200))]
    pub greeting: String,
}}

impl Default for Options {{
    fn default() -> Self {{
        Options {{
            greeting: "hello from {name}".into(),
        }}
    }}
}}

pub struct {type_name};

impl Feature for {type_name} {{
    type Options = Options;

    fn info() -> Info {{
        Info::new("{name}", env!("CARGO_PKG_VERSION"), "Writes /etc/{name}.conf", "system")
    }}

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {{
        // What the schema cannot say, with a path and a fix for each problem.
        if ctx.options.greeting.contains('\n') {{
            return vec![
                diag::error("{name}.multi-line", "options.greeting", "the greeting is one line")
                    .suggest("remove the line breaks"),
            ];
        }}
        Vec::new()
    }}

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {{
        Ok(vec![step::write_file(
            "/etc/{name}.conf",
            &format!("{{}}\n", ctx.options.greeting),
        )])
    }}

    fn checks(_ctx: &Context<Options>) -> Vec<BootCheck> {{
        vec![check::file_exists(
            "config-present",
            "the configuration file is in place",
            "/etc/{name}.conf",
        )]
    }}
}}

export_feature!({type_name});
"#
            ),
        ),
        (
            "README.md",
            format!(
                "# {name}\n\nAn OpenFactory feature plugin.\n\n```sh\n\
                 openfactory plugin test .                  # build, plan a recipe with it, show the steps\n\
                 openfactory plugin test . --boot           # and build, boot and check an image (root)\n\
                 openfactory plugin keygen me.key           # once\n\
                 openfactory plugin pack target/wasm32-wasip2/release/openfactory_feature_{}.wasm \\\n    \
                 --capabilities capabilities.toml --key me.key   # {name}-0.1.0.ofbundle\n```\n\n\
                 The guide: plugins/README.md in the OpenFactory repository.\n",
                name.replace('-', "_")
            ),
        ),
    ]
}

/// The files of a new Python plugin, by path.
fn python_scaffold(name: &str) -> Vec<(&'static str, String)> {
    let mut files = vec![
        (
            "app.py",
            format!(
                r#""""`{name}`: one configuration file, written from its options."""

import openfactory_plugin as of
from openfactory_plugin import check, diag, step


class Feature(of.Feature):
    info = of.Info("{name}", "0.1.0", "Writes /etc/{name}.conf", "system")

    # The JSON Schema of the options: the host checks options against it
    # before the plugin runs, so they arrive well-formed. Descriptions are
    # what people and assistants read to fill them in.
    options_schema = {{
        "type": "object",
        "additionalProperties": False,
        "properties": {{
            "greeting": {{
                "type": "string",
                "description": "The line written to /etc/{name}.conf.",
                "minLength": 1,
                "maxLength": 200,
                "default": "hello from {name}",
            }},
        }},
    }}

    def validate(self, ctx):
        # What the schema cannot say, with a path and a fix for each problem.
        if "\n" in ctx.options.get("greeting", ""):
            return [
                diag.error(
                    "{name}.multi-line",
                    "options.greeting",
                    "the greeting is one line",
                    "remove the line breaks",
                )
            ]
        return []

    def plan(self, ctx):
        greeting = ctx.options.get("greeting", "hello from {name}")
        return [step.write_file("/etc/{name}.conf", greeting + "\n")]

    def checks(self, ctx):
        return [
            check.file_exists(
                "config-present", "the configuration file is in place", "/etc/{name}.conf"
            )
        ]
"#
            ),
        ),
        ("capabilities.toml", capabilities(name)),
        ("wit/feature.wit", FEATURE_WIT.to_owned()),
        (".gitignore", "target/\n__pycache__/\n".to_owned()),
        (
            "README.md",
            format!(
                "# {name}\n\nAn OpenFactory feature plugin in Python (built with componentize-py {COMPONENTIZE_PY_VERSION}:\n\
                 `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`).\n\n```sh\n\
                 openfactory plugin test .                  # build, plan a recipe with it, show the steps\n\
                 openfactory plugin test . --boot           # and build, boot and check an image (root)\n\
                 openfactory plugin keygen me.key           # once\n\
                 openfactory plugin pack target/plugin.wasm --capabilities capabilities.toml --key me.key\n```\n\n\
                 `openfactory_plugin/` is the helper library and `wit/feature.wit` the contract this\n\
                 plugin is built against, both copied in by `openfactory plugin new`. The guide:\n\
                 plugins/README.md in the OpenFactory repository.\n"
            ),
        ),
    ];
    files.extend(
        PYTHON_SDK
            .iter()
            .map(|(path, text)| (*path, (*text).to_owned())),
    );
    files
}

/// The files of a new JavaScript plugin, by path.
fn js_scaffold(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "app.js",
            format!(
                r#"// `{name}`: one configuration file, written from its options.

import {{ check, defineFeature, diag, step }} from "./openfactory-plugin.js";

export const feature = defineFeature({{
  info: {{ name: "{name}", version: "0.1.0", summary: "Writes /etc/{name}.conf", category: "system" }},

  // The JSON Schema of the options: the host checks options against it before
  // the plugin runs, so they arrive well-formed. Descriptions are what people
  // and assistants read to fill them in.
  optionsSchema: {{
    type: "object",
    additionalProperties: false,
    properties: {{
      greeting: {{
        type: "string",
        description: "The line written to /etc/{name}.conf.",
        minLength: 1,
        maxLength: 200,
        default: "hello from {name}",
      }},
    }},
  }},

  // What the schema cannot say, with a path and a fix for each problem.
  validate(ctx) {{
    if ((ctx.options.greeting ?? "").includes("\n")) {{
      return [diag.error("{name}.multi-line", "options.greeting", "the greeting is one line", "remove the line breaks")];
    }}
    return [];
  }},

  plan(ctx) {{
    const greeting = ctx.options.greeting ?? "hello from {name}";
    return [step.writeFile("/etc/{name}.conf", `${{greeting}}\n`)];
  }},

  checks() {{
    return [check.fileExists("config-present", "the configuration file is in place", "/etc/{name}.conf")];
  }},
}});
"#
            ),
        ),
        (JS_SDK.0, JS_SDK.1.to_owned()),
        ("capabilities.toml", capabilities(name)),
        ("wit/feature.wit", FEATURE_WIT.to_owned()),
        (".gitignore", "target/\nnode_modules/\n".to_owned()),
        (
            "README.md",
            format!(
                "# {name}\n\nAn OpenFactory feature plugin in JavaScript (built with componentize-js {COMPONENTIZE_JS_VERSION}:\n\
                 `npm install -g @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}`).\n\n```sh\n\
                 openfactory plugin test .                  # build, plan a recipe with it, show the steps\n\
                 openfactory plugin test . --boot           # and build, boot and check an image (root)\n\
                 openfactory plugin keygen me.key           # once\n\
                 openfactory plugin pack target/plugin.wasm --capabilities capabilities.toml --key me.key\n```\n\n\
                 `openfactory-plugin.js` is the helper library and `wit/feature.wit` the contract this\n\
                 plugin is built against, both copied in by `openfactory plugin new`. The guide:\n\
                 plugins/README.md in the OpenFactory repository.\n"
            ),
        ),
    ]
}

/// A new plugin's capabilities.toml: the one file the scaffold writes.
fn capabilities(name: &str) -> String {
    format!(
        "# What `{name}`'s steps may touch; the planner refuses anything else (see\n\
         # plugins/README.md, \"Capabilities\"). Declare only what you use.\n\
         files = [\"/etc/{name}.conf\"]\n"
    )
}

/// `plugin test DIR`: build the plugin in `dir`, install it (unsigned, with
/// every privilege it declares) into a throwaway home beside the operator's
/// installed plugins, plan `recipe` (default: a recipe with just this
/// feature), show the plan; with `boot`, build the image and run its checks.
pub fn test(
    dir: &Path,
    recipe: Option<PathBuf>,
    boot: bool,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    let component = if dir.join("Cargo.toml").is_file() {
        build_rust(dir)?
    } else if dir.join("app.py").is_file() {
        build_python(dir)?
    } else if dir.join("app.js").is_file() {
        build_js(dir)?
    } else {
        bail!(
            "{} holds neither Cargo.toml (a Rust plugin), app.py (a Python plugin) nor \
             app.js (a JavaScript plugin); `openfactory plugin new NAME` makes one",
            dir.display()
        );
    };

    // A throwaway home: the operator's plugins and keys, then this one.
    let scratch = tempfile::tempdir()?;
    let home = Config {
        home: scratch.path().join("home"),
        allow_unsigned: true,
        ..config.clone()
    };
    std::fs::create_dir_all(home.plugins_dir())?;
    // Compiled components are keyed by digest: the operator's cache serves
    // (and keeps) them, so a second run compiles nothing it compiled before.
    if std::fs::create_dir_all(config.cache_dir()).is_ok() {
        if let Some(parent) = home.cache_dir().parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(config.cache_dir(), home.cache_dir())?;
    }
    if config.trusted_keys_dir().is_dir() {
        registry::copy_dir(&config.trusted_keys_dir(), &home.trusted_keys_dir())?;
    }
    for installed in registry::bundle_dirs(&config.plugins_dir())? {
        let name = installed
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        registry::copy_dir(&installed, &home.plugins_dir().join(&name))?;
        grants::save(
            &home.plugins_dir(),
            &name,
            &grants::load(&config.plugins_dir(), &name),
        )?;
    }
    let assets = dir.join("assets");
    let capabilities = dir.join("capabilities.toml");
    let packed = scratch.path().join("bundle");
    let (bundle, _) = super::plugin::pack_component(
        &cache::CompiledCache::new(Some(home.cache_dir())),
        &component,
        assets.is_dir().then_some(assets.as_path()),
        capabilities.is_file().then_some(capabilities.as_path()),
        None,
        Some(&packed),
        true,
    )?;
    let name = bundle.name().to_owned();
    let plugins = home.plugins_dir();
    if plugins.join(&name).exists() {
        std::fs::remove_dir_all(plugins.join(&name))?;
    }
    let host = home.host();
    let trust = TrustStore::load(&home.trusted_keys_dir())?;
    let options = registry::InstallOptions {
        allow_unsigned: true,
        cache_dir: host.cache_dir.clone(),
        limits: host.limits,
        ..registry::InstallOptions::new(&trust)
    };
    let done = registry::install_with(&plugins, &packed, &options)
        .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
    let declared = done.bundle.manifest.capabilities.privileges();
    grants::save(&plugins, &name, &declared)?;
    println!(
        "plugin {} {}: built, packed and installed in a throwaway home (unsigned{})",
        safe(&name),
        safe(&done.bundle.manifest.version),
        if declared.is_empty() {
            String::new()
        } else {
            format!(
                "; granted what it declares: {}",
                declared
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );

    let recipe = match recipe {
        Some(path) => path,
        None => {
            let path = scratch.path().join(format!("{name}-test.toml"));
            std::fs::write(
                &path,
                format!(
                    "name = \"{name}-test\"\nbase_image = \"debian-bookworm\"\nfeatures = [{{ name = \"{name}\" }}]\n"
                ),
            )?;
            println!("recipe: a recipe with just `{name}` (give one with --recipe FILE)");
            path
        }
    };
    let outcome = super::recipe::evaluate(&home, &recipe, true)?;
    let Some(plan) = &outcome.plan else {
        print!(
            "{}",
            crate::render::validation(&recipe.display().to_string(), &outcome)
        );
        return Ok(ExitCode::from(1));
    };
    print!("{}", crate::render::plan(plan, &outcome.diagnostics));
    if !boot {
        return Ok(ExitCode::SUCCESS);
    }
    let iso = scratch.path().join(format!("{name}-test.iso"));
    let built = super::build::run(
        super::build::BuildArgs {
            recipe: recipe.clone(),
            output: Some(iso.clone()),
            log: false,
            json: false,
        },
        &home,
    )?;
    if built != ExitCode::SUCCESS {
        return Ok(built);
    }
    super::test::run(
        super::test::TestArgs {
            recipe,
            iso,
            tests: Vec::new(),
            junit: None,
            json: false,
            accel: openfactory_vm::AccelSetting::Auto,
            memory_mb: 1024,
            timeout_seconds: 900,
        },
        &home,
    )
}

/// `cargo build --release` for wasm32-wasip2: the component's path. The
/// target directory is cargo's own choice (`CARGO_TARGET_DIR`, else
/// `DIR/target`).
fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let package: toml::Table = text
        .parse()
        .with_context(|| format!("reading {}", manifest.display()))?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: no [package] name", manifest.display()))?
        .replace('-', "_");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    eprintln!("building {} for wasm32-wasip2 (cargo)…", dir.display());
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context(
            "running cargo (is the Rust toolchain installed, with `rustup target add wasm32-wasip2`?)",
        )?;
    if !status.success() {
        bail!("the plugin did not build (cargo said why, above)");
    }
    Ok(target_dir.join(format!("wasm32-wasip2/release/{crate_name}.wasm")))
}

/// componentize-py (`COMPONENTIZE_PY`, else on the PATH) on `DIR/app.py`
/// against `DIR/wit`: `DIR/target/plugin.wasm`.
fn build_python(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("target/plugin.wasm");
    let mut command = tool_command(dir, "COMPONENTIZE_PY", "componentize-py")?;
    command
        .arg("-d")
        .arg(dir.join("wit"))
        .args(["-w", "plugin", "componentize", "app", "-p"])
        .arg(dir)
        .arg("-o")
        .arg(&out);
    run_tool(
        command,
        "COMPONENTIZE_PY",
        &format!("pip install componentize-py=={COMPONENTIZE_PY_VERSION}"),
    )?;
    Ok(out)
}

/// componentize-js (`COMPONENTIZE_JS`, else on the PATH) on `DIR/app.js`
/// against `DIR/wit/feature.wit`: `DIR/target/plugin.wasm`. The host offers
/// no HTTP, so the component imports none.
fn build_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("target/plugin.wasm");
    let mut command = tool_command(dir, "COMPONENTIZE_JS", "componentize-js")?;
    command
        .arg(dir.join("app.js"))
        .arg("--wit")
        .arg(dir.join("wit/feature.wit"))
        .args(["-n", "plugin", "-d", "http", "fetch-event", "-o"])
        .arg(&out);
    run_tool(
        command,
        "COMPONENTIZE_JS",
        &format!("npm install -g @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}"),
    )?;
    Ok(out)
}

/// The component-building tool named by `var` (else `default` on the PATH),
/// once `DIR/wit` holds the contract and `DIR/target` exists.
fn tool_command(dir: &Path, var: &str, default: &str) -> anyhow::Result<Command> {
    if !dir.join("wit/feature.wit").is_file() {
        bail!(
            "{} holds no wit/feature.wit: copy the contract there (wit/feature.wit of \
             OpenFactory; `openfactory plugin new --lang python|js` does)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("target"))?;
    let tool = std::env::var_os(var).unwrap_or_else(|| default.into());
    eprintln!(
        "building {} for wasm32-wasip2 ({})…",
        dir.display(),
        Path::new(&tool).display()
    );
    Ok(Command::new(tool))
}

/// Run a component-building tool; if it is missing, say how to install it
/// (or that `var` names where it is).
fn run_tool(mut command: Command, var: &str, install: &str) -> anyhow::Result<()> {
    let tool = Path::new(command.get_program()).display().to_string();
    let status = command.status().with_context(|| {
        format!("running {tool}: install it (`{install}`), or set {var} to its path")
    })?;
    if !status.success() {
        bail!("the plugin did not build ({tool} said why, above)");
    }
    Ok(())
}
