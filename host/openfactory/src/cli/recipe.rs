//! `openfactory recipe …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use openfactory_core::catalog::Catalog;
use openfactory_core::plan::{self, Outcome};
use openfactory_core::validate::Format;
use openfactory_plugin_host::PluginHost;
use serde_json::json;

use crate::config::Config;
use crate::render;

#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Check a recipe and report every problem, planning it with its features
    /// as a build would (exit 1 if there are errors).
    Validate {
        /// Recipe file (.toml, or .json); `-` reads TOML from stdin.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the ordered build steps and boot checks a build would execute.
    Plan {
        /// Recipe file (.toml, or .json), or a template id from the catalog.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the catalog's templates.
    List {
        #[arg(long)]
        category: Option<String>,
        /// Words to find in name, description, tags, packages or features.
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the catalog's categories.
    Categories {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: RecipeCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        RecipeCommand::Validate { file, json } => {
            // Validation plans too: a recipe that `recipe plan` (and a build)
            // would reject is not valid.
            let outcome = evaluate(config, &file, true)?;
            if json {
                super::print_json(&json!({
                    "valid": !outcome.diagnostics.has_errors(),
                    "recipe_digest": outcome.recipe_digest,
                    "errors": outcome.diagnostics.errors().collect::<Vec<_>>(),
                    "warnings": outcome.diagnostics.warnings().collect::<Vec<_>>(),
                }))?;
            } else {
                print!(
                    "{}",
                    render::validation(&file.display().to_string(), &outcome)
                );
            }
            Ok(exit(&outcome))
        }
        RecipeCommand::Plan { file, json } => {
            let outcome = evaluate(config, &file, true)?;
            match (&outcome.plan, json) {
                (Some(plan), true) => super::print_json(&json!({
                    "plan": plan,
                    "warnings": outcome.diagnostics.warnings().collect::<Vec<_>>(),
                }))?,
                (Some(plan), false) => print!("{}", render::plan(plan, &outcome.diagnostics)),
                (None, true) => super::print_json(
                    &json!({ "plan": null, "errors": outcome.diagnostics.errors().collect::<Vec<_>>(), "warnings": outcome.diagnostics.warnings().collect::<Vec<_>>() }),
                )?,
                (None, false) => print!(
                    "{}",
                    render::validation(&file.display().to_string(), &outcome)
                ),
            }
            Ok(exit(&outcome))
        }
        RecipeCommand::List {
            category,
            search,
            json,
        } => {
            let catalog = load_catalog(config)?;
            let found = catalog.search(category.as_deref(), search.as_deref());
            if json {
                super::print_json(&found)?;
            } else {
                print!("{}", render::templates(&found));
            }
            Ok(ExitCode::SUCCESS)
        }
        RecipeCommand::Categories { json } => {
            let catalog = load_catalog(config)?;
            if json {
                let rows: Vec<_> = catalog
                    .categories
                    .iter()
                    .map(|c| json!({"name": c.name, "title": c.title, "description": c.description, "count": catalog.count(&c.name)}))
                    .collect();
                super::print_json(&rows)?;
            } else {
                for c in &catalog.categories {
                    println!(
                        "{:<14} {:>3}  {}",
                        c.name,
                        catalog.count(&c.name),
                        c.description
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit(outcome: &Outcome) -> ExitCode {
    if outcome.diagnostics.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn load_catalog(config: &Config) -> anyhow::Result<Catalog> {
    let (catalog, problems) = Catalog::load(&config.recipes_dir);
    for p in &problems {
        tracing::warn!("catalog: {p}");
    }
    if catalog.templates.is_empty() && !problems.is_empty() {
        anyhow::bail!(
            "no template could be loaded from {} (see the warnings above)",
            config.recipes_dir.display()
        );
    }
    Ok(catalog)
}

/// Read the recipe (a file, `-`, or a template id) and run the planner.
/// The recipe's plan, with its warnings printed; or, when it is invalid, its
/// diagnostics printed and `None` (the command then exits 1).
pub(super) fn plan_or_report(
    config: &Config,
    source: &std::path::Path,
) -> anyhow::Result<Option<openfactory_core::Plan>> {
    let outcome = evaluate(config, source, true)?;
    let Some(plan) = outcome.plan.clone() else {
        eprint!(
            "{}",
            crate::render::validation(&source.display().to_string(), &outcome)
        );
        return Ok(None);
    };
    for warning in outcome.diagnostics.warnings() {
        eprintln!("warning: {}: {}", warning.path, warning.message);
    }
    Ok(Some(plan))
}

pub(super) fn evaluate(
    config: &Config,
    source: &std::path::Path,
    want_plan: bool,
) -> anyhow::Result<Outcome> {
    let (text, format) = if source == std::path::Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the recipe from stdin")?;
        (text, Format::Toml)
    } else if source.exists() {
        let text = std::fs::read_to_string(source)
            .with_context(|| format!("reading {}", source.display()))?;
        (text, Format::from_path(source))
    } else {
        let id = source.to_string_lossy();
        let catalog = load_catalog(config)?;
        let template = catalog.template(&id).with_context(|| {
            format!("{id} is neither a file nor a template id (see `openfactory recipe list`)")
        })?;
        (serde_json::to_string(&template.recipe)?, Format::Json)
    };
    let host = PluginHost::load(&config.host()).context("loading plugins")?;
    for problem in host.problems() {
        eprintln!(
            "warning: plugin bundle `{}` was not loaded: {}",
            render::safe(&problem.bundle),
            render::safe(&problem.reason)
        );
    }
    Ok(plan::plan_text(&text, format, &host, want_plan))
}
