//! What `openfactory plugin new` writes: a plugin that builds and plans as it
//! is, in Rust (a crate against the SDK), Python or JavaScript (an app with
//! its helper library and the contract copied in).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::toolchain::{COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION};

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

/// The contract this host supports, written into Python plugins.
const FEATURE_WIT: &str = include_str!("../../../../../wit/feature.wit");

/// The Python helper library, copied into Python plugins.
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "openfactory_plugin/__init__.py",
        include_str!("../../../../../plugins/sdk-python/openfactory_plugin/__init__.py"),
    ),
    (
        "openfactory_plugin/check.py",
        include_str!("../../../../../plugins/sdk-python/openfactory_plugin/check.py"),
    ),
    (
        "openfactory_plugin/diag.py",
        include_str!("../../../../../plugins/sdk-python/openfactory_plugin/diag.py"),
    ),
    (
        "openfactory_plugin/step.py",
        include_str!("../../../../../plugins/sdk-python/openfactory_plugin/step.py"),
    ),
];

/// The JavaScript helper library, copied into JavaScript plugins.
const JS_SDK: (&str, &str) = (
    "openfactory-plugin.js",
    include_str!("../../../../../plugins/sdk-js/openfactory-plugin.js"),
);

/// The files of a new plugin `name` in `lang`, by path (`sdk`: where a Rust
/// plugin's SDK is, by default the checkout this binary was built from).
pub fn files(
    name: &str,
    lang: Lang,
    sdk: Option<PathBuf>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(match lang {
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
    })
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
