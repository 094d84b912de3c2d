//! What the recipe operations do: each function takes the application state
//! and the caller, and returns a serialisable answer or an [`Error`]. Every read and write of a caller's recipes goes
//! through the owner-scoped [`openfactory_store::Store`].

use std::collections::BTreeMap;

use openfactory_core::catalog::Template;
use openfactory_core::plan::{self, Plan};
use openfactory_core::recipe::FeatureRef;
use openfactory_core::{Diagnostic, Diagnostics, FeatureSet, Recipe, rules};
use openfactory_core::{proof, validate};
use openfactory_store::OwnerId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::App;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::RecipeId;
use crate::next::Action;

/// `template` for catalog templates, `custom` for the caller's own recipes.
pub const TEMPLATE: &str = "template";
pub const CUSTOM: &str = "custom";

#[derive(Debug, Serialize, JsonSchema)]
pub struct Categories {
    pub categories: Vec<CategoryOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CategoryOut {
    pub name: String,
    pub title: String,
    pub description: String,
    /// Templates in the category plus the caller's own recipes in it.
    pub count: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecipeList {
    pub recipes: Vec<RecipeSummary>,
    pub total: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecipeSummary {
    /// Use this to get, plan, build or copy the recipe.
    pub id: String,
    pub name: String,
    pub category: String,
    /// `template` (catalog) or `custom` (yours).
    pub source: String,
    pub description: String,
    pub base_image: String,
    pub features: Vec<String>,
    pub tags: Vec<String>,
    /// For templates: what the catalog's last run (build, boot, checks) says of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<ProofOut>,
}

/// What the catalog's last run says of a template (`cargo xtask catalog`
/// builds every template, boots it and runs its checks, on every change).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProofOut {
    /// `proven`: this template, with the installed plugins, was built, booted and passed every check;
    /// `failed`: its last catalog run failed; `unproven`: it or a plugin changed since, or it never ran.
    pub status: proof::Status,
    /// When the catalog last ran it (RFC 3339); absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven_at: Option<String>,
    /// Checks passed of checks run, in that run (`14/14`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
    /// What failed first in that run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

impl ProofOut {
    /// Template `id`'s proof, as the installed plugins plan it now.
    pub async fn of(app: &App, id: &str) -> ProofOut {
        let status = app.planner.proof_status(id).await;
        let last = app.planner.catalog.proofs.templates.get(id);
        ProofOut {
            status,
            proven_at: last.map(|p| p.proven_at.clone()),
            checks: last.map(|p| format!("{}/{}", p.checks_passed, p.checks_total)),
            first_failure: last.and_then(|p| p.first_failure.clone()),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecipeDetails {
    pub id: String,
    pub source: String,
    pub category: String,
    /// For custom recipes: the template it was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// The complete recipe, with defaults applied.
    pub recipe: Recipe,
    /// Content-addressed id of the recipe with the installed plugins (sha256).
    pub recipe_digest: Option<String>,
    /// For templates: what the catalog's last run (build, boot, checks) says of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<ProofOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Validation {
    pub valid: bool,
    pub recipe_digest: Option<String>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// What a build would do, when the recipe is valid.
    pub plan_summary: Option<PlanSummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanSummary {
    pub steps: usize,
    pub checks: usize,
    /// Features in planning order.
    pub features: Vec<String>,
    /// Steps per source (`recipe` or a feature name).
    pub steps_by_source: BTreeMap<String, usize>,
}

impl PlanSummary {
    pub fn of(plan: &Plan) -> PlanSummary {
        let mut steps_by_source = BTreeMap::new();
        for s in &plan.steps {
            *steps_by_source.entry(s.source.clone()).or_insert(0) += 1;
        }
        PlanSummary {
            steps: plan.steps.len(),
            checks: plan.checks.len(),
            features: plan.features.iter().map(|f| f.name.clone()).collect(),
            steps_by_source,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanOut {
    pub valid: bool,
    pub plan: Option<Plan>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Created {
    /// The new recipe's id (its name), usable to get, plan and build it.
    pub id: String,
    pub recipe_digest: String,
    pub recipe: Recipe,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Features {
    pub features: Vec<FeatureOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FeatureOut {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub category: String,
    pub requires: Vec<String>,
    pub conflicts: Vec<String>,
    /// Top-level recipe fields the feature reads.
    pub reads: Vec<String>,
    /// JSON Schema of the feature's `options`.
    pub options_schema: Value,
}

/// Changes applied to a template when a recipe is made from it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Modifications {
    /// Replace the description.
    pub description: Option<String>,
    /// Switch the base image (`debian-bookworm` or `debian-trixie`).
    pub base_image: Option<String>,
    pub hostname: Option<String>,
    pub timezone: Option<String>,
    /// Debian packages to add.
    #[serde(default)]
    pub add_packages: Vec<String>,
    /// Packages to remove from the template's list.
    #[serde(default)]
    pub remove_packages: Vec<String>,
    /// Features to add, by name or as `{ "name": …, "options": {…} }`. An
    /// existing feature given again gets the new options.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::features")]
    pub add_features: Vec<Value>,
    #[serde(default)]
    pub remove_features: Vec<String>,
    /// systemd units to enable.
    #[serde(default)]
    pub add_services: Vec<String>,
    #[serde(default)]
    pub remove_services: Vec<String>,
    /// Replace the `networking` section (`dhcp`, `nameservers`, `allowed_ports`).
    pub networking: Option<Value>,
    /// Replace the `security` section (`root_login`, `password_authentication`).
    pub security: Option<Value>,
}

fn summary(t: &Template, source: &str) -> RecipeSummary {
    RecipeSummary {
        id: t.id.clone(),
        name: t.recipe.name.clone(),
        category: t.category.clone(),
        source: source.into(),
        description: t.recipe.description.clone(),
        base_image: t.recipe.base_image.clone(),
        features: t.recipe.features.iter().map(|f| f.name.clone()).collect(),
        tags: t.recipe.tags.clone(),
        proof: None,
    }
}

/// The caller's recipes as templates, so one search serves both. Without a
/// caller (a visitor to the web catalog), none.
async fn custom(app: &App, owner: Option<&OwnerId>) -> Result<Vec<Template>> {
    let Some(owner) = owner else {
        return Ok(Vec::new());
    };
    let stored = app.store.recipes(owner).await?;
    Ok(stored
        .into_iter()
        .map(|s| Template {
            id: s.id,
            category: s.category,
            recipe: s.recipe,
        })
        .collect())
}

/// The catalog's categories, counting the caller's own recipes too (if any caller).
pub async fn categories(app: &App, owner: Option<&OwnerId>) -> Result<Categories> {
    let mine = custom(app, owner).await?;
    Ok(Categories {
        categories: app
            .planner
            .catalog
            .categories
            .iter()
            .map(|c| CategoryOut {
                name: c.name.clone(),
                title: c.title.clone(),
                description: c.description.clone(),
                count: app.planner.catalog.count(&c.name)
                    + mine.iter().filter(|t| t.category == c.name).count(),
            })
            .collect(),
    })
}

/// Templates and the caller's recipes (if any caller) in `category` that
/// match every word of `search`.
pub async fn list(
    app: &App,
    owner: Option<&OwnerId>,
    category: Option<&str>,
    search: Option<&str>,
) -> Result<RecipeList> {
    if let Some(c) = category
        && !app
            .planner
            .catalog
            .categories
            .iter()
            .any(|k| k.name.eq_ignore_ascii_case(c))
    {
        let names: Vec<&str> = app
            .planner
            .catalog
            .categories
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        return Err(Error::invalid(
            "category",
            format!(
                "unknown category `{}`; categories: {}",
                rules::truncate(c, 64),
                names.join(", ")
            ),
        )
        .see(Action::ListRecipeCategories));
    }
    let mine = custom(app, owner).await?;
    let mut recipes: Vec<RecipeSummary> = app
        .planner
        .catalog
        .search(category, search)
        .into_iter()
        .map(|t| summary(t, TEMPLATE))
        .collect();
    recipes.extend(
        mine.iter()
            .filter(|t| t.matches(category, search))
            .map(|t| summary(t, CUSTOM)),
    );
    for r in recipes.iter_mut().filter(|r| r.source == TEMPLATE) {
        r.proof = Some(ProofOut::of(app, &r.id).await);
    }
    Ok(RecipeList {
        total: recipes.len(),
        recipes,
    })
}

fn not_found(id: &RecipeId) -> Error {
    Error::not_found(format!(
        "recipe `{}` not found",
        rules::truncate(id.as_str(), 80)
    ))
    .see(Action::ListRecipes)
}

fn template_details(t: &Template) -> RecipeDetails {
    RecipeDetails {
        id: t.id.clone(),
        source: TEMPLATE.into(),
        category: t.category.clone(),
        template_id: None,
        recipe: t.recipe.clone(),
        recipe_digest: None,
        proof: None,
    }
}

/// A template, or one of the caller's recipes.
pub(crate) async fn find(app: &App, owner: &OwnerId, id: &RecipeId) -> Result<RecipeDetails> {
    if let Some(t) = app.planner.catalog.template(id.as_str()) {
        return Ok(template_details(t));
    }
    match app.store.recipe(owner, id.as_str()).await? {
        Some(s) => Ok(RecipeDetails {
            id: s.id,
            source: CUSTOM.into(),
            category: s.category,
            template_id: s.template_id,
            recipe: s.recipe,
            recipe_digest: Some(s.recipe_digest),
            proof: None,
        }),
        None => Err(not_found(id)),
    }
}

/// A template or one of the caller's recipes, with its content-addressed id.
/// Without a caller, templates only.
pub async fn get(app: &App, owner: Option<&OwnerId>, id: &RecipeId) -> Result<RecipeDetails> {
    let mut details = match owner {
        Some(owner) => find(app, owner, id).await?,
        None => app
            .planner
            .catalog
            .template(id.as_str())
            .map(template_details)
            .ok_or_else(|| not_found(id))?,
    };
    if details.recipe_digest.is_none() {
        let recipe = details.recipe.clone();
        let outcome = app
            .planner
            .run(move |set| plan::validate(&recipe, set))
            .await?;
        details.recipe_digest = outcome.recipe_digest.map(|i| i.to_string());
    }
    if details.source == TEMPLATE {
        details.proof = Some(ProofOut::of(app, &details.id).await);
    }
    Ok(details)
}

fn unserialisable(e: serde_json::Error) -> Error {
    tracing::error!(error = %e, "a recipe did not serialise");
    Error::internal(format!("the recipe could not be serialised: {e}"))
}

pub(crate) fn split(d: Diagnostics) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    d.into_iter().partition(Diagnostic::is_error)
}

pub async fn validate(app: &App, recipe: Value) -> Result<Validation> {
    let outcome = app.planner.plan(recipe).await?;
    let plan_summary = outcome.plan.as_ref().map(PlanSummary::of);
    let (errors, warnings) = split(outcome.diagnostics);
    let valid = errors.is_empty();
    Ok(Validation {
        valid,
        recipe_digest: outcome
            .recipe_digest
            .filter(|_| valid)
            .map(|i| i.to_string()),
        errors,
        warnings,
        plan_summary,
    })
}

pub async fn plan_recipe(
    app: &App,
    owner: &OwnerId,
    recipe_id: Option<RecipeId>,
    recipe: Option<Value>,
) -> Result<PlanOut> {
    let value = match (recipe_id, recipe) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "recipe_id",
                "give either `recipe_id` or `recipe`, not both",
            ));
        }
        (None, None) => {
            return Err(
                Error::invalid("recipe_id", "give `recipe_id` or a `recipe` object")
                    .see(Action::ListRecipes),
            );
        }
        (Some(id), None) => {
            serde_json::to_value(find(app, owner, &id).await?.recipe).map_err(unserialisable)?
        }
        (None, Some(v)) => v,
    };
    plan_value(app, value).await
}

/// The plan of a recipe object (every error, or the steps and checks).
pub async fn plan_value(app: &App, recipe: Value) -> Result<PlanOut> {
    let outcome = app.planner.plan(recipe).await?;
    let (errors, warnings) = split(outcome.diagnostics);
    Ok(PlanOut {
        valid: errors.is_empty(),
        plan: outcome.plan,
        errors,
        warnings,
    })
}

pub fn features(app: &App) -> Features {
    Features {
        features: app
            .planner
            .plugins
            .features()
            .into_iter()
            .map(|f| FeatureOut {
                name: f.info.name.clone(),
                version: f.info.version.clone(),
                summary: f.info.summary.clone(),
                category: f.info.category.clone(),
                requires: f.info.requires.clone(),
                conflicts: f.info.conflicts.clone(),
                reads: f.info.reads.clone(),
                options_schema: f.info.options_schema.clone(),
            })
            .collect(),
    }
}

/// Errors as a list for a message: as many as fit in about 700 characters
/// (each cut at 300), then how many more there are. A message stays
/// readable however broken the recipe; validating it gives every one.
pub(crate) fn render(diagnostics: &[Diagnostic]) -> String {
    const ROOM: usize = 700;
    let mut out = String::new();
    for (shown, d) in diagnostics.iter().enumerate() {
        let line = format!("- {}", rules::truncate(&d.to_string(), 300));
        if shown > 0 && out.len() + line.len() > ROOM {
            out.push_str(&format!(
                "\n- …and {} more (validating the recipe lists every one)",
                diagnostics.len() - shown
            ));
            break;
        }
        if shown > 0 {
            out.push('\n');
        }
        out.push_str(&line);
    }
    out
}

pub async fn create_from_template(
    app: &App,
    owner: &OwnerId,
    template_id: &RecipeId,
    name: &str,
    modifications: Option<Value>,
) -> Result<Created> {
    // A template, or one of the caller's own recipes.
    let base = match find(app, owner, template_id).await {
        Ok(base) => base,
        Err(e) if e.kind == ErrorKind::NotFound => {
            let hint = openfactory_core::diagnostic::did_you_mean(
                template_id.as_str(),
                app.planner.catalog.templates.iter().map(|t| t.id.as_str()),
            )
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_default();
            return Err(Error::not_found(format!(
                "template_id: recipe `{}` not found{hint}",
                rules::truncate(template_id.as_str(), 80)
            ))
            .see(Action::ListRecipes));
        }
        Err(e) => return Err(e),
    };
    if let Err(reason) = rules::slug(name) {
        return Err(Error::invalid(
            "name",
            format!("name: `{}` {reason}", rules::truncate(name, 80)),
        ));
    }
    if app.planner.catalog.template(name).is_some() {
        return Err(Error::invalid(
            "name",
            format!("name: `{name}` is a template id; choose another name for your recipe"),
        ));
    }
    let modifications: Modifications = match modifications {
        None | Some(Value::Null) => Modifications::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            Error::invalid("modifications", format!(
                "modifications: {e}. Accepted fields: description, base_image, hostname, timezone, add_packages, remove_packages, add_features, remove_features, add_services, remove_services, networking, security"
            ))
        })?,
    };

    let mut problems = Vec::new();
    let recipe = apply(&base.recipe, name, modifications, &mut problems);
    if !problems.is_empty() {
        return Err(Error::invalid(
            "modifications",
            format!(
                "the modifications cannot be applied; nothing was saved:\n{}",
                render(&problems)
            ),
        ));
    }
    let value = serde_json::to_value(&recipe).map_err(unserialisable)?;
    let outcome = app
        .planner
        .run(move |set| plan::plan_value(value, set, true))
        .await?;
    let (errors, warnings) = split(outcome.diagnostics);
    if !errors.is_empty() {
        return Err(Error::invalid(
            "modifications",
            format!(
                "the resulting recipe is invalid; nothing was saved:\n{}",
                render(&errors)
            ),
        ));
    }
    let digest = outcome
        .recipe_digest
        .map(|i| i.to_string())
        .unwrap_or_default();
    let stored = app
        .store
        .insert_recipe(
            owner,
            name,
            Some(base.template_id.as_deref().unwrap_or(&base.id)),
            &base.category,
            &recipe,
            &digest,
        )
        .await
        .map_err(|e| match Error::from(e) {
            e if e.kind == ErrorKind::Conflict => e.prefixed("name: "),
            e => e,
        })?;
    Ok(Created {
        id: stored.id,
        recipe_digest: digest,
        recipe: stored.recipe,
        warnings,
    })
}

/// Apply modifications to a copy of the template. Removals of things the
/// template does not have are reported, never silently ignored.
fn apply(
    template: &Recipe,
    name: &str,
    m: Modifications,
    problems: &mut Vec<Diagnostic>,
) -> Recipe {
    let mut r = template.clone();
    r.name = name.to_owned();
    if r.hostname.as_deref() == Some(template.name.as_str()) {
        r.hostname = None;
    }
    if let Some(d) = m.description {
        r.description = d;
    }
    if let Some(b) = m.base_image {
        r.base_image = b;
    }
    if let Some(h) = m.hostname {
        r.hostname = Some(h);
    }
    if let Some(t) = m.timezone {
        r.timezone = t;
    }
    let mut remove = |list: &mut Vec<String>, items: &[String], field: &str| {
        for (i, item) in items.iter().enumerate() {
            match list.iter().position(|x| x == item) {
                Some(pos) => {
                    list.remove(pos);
                }
                None => problems.push(Diagnostic::error(
                    "modifications.not-present",
                    format!("modifications.{field}[{i}]"),
                    format!(
                        "`{}` is not in the template, so it cannot be removed",
                        rules::truncate(item, 80)
                    ),
                )),
            }
        }
    };
    remove(&mut r.packages, &m.remove_packages, "remove_packages");
    remove(&mut r.services, &m.remove_services, "remove_services");
    let mut names: Vec<String> = r.features.iter().map(|f| f.name.clone()).collect();
    remove(&mut names, &m.remove_features, "remove_features");
    r.features.retain(|f| names.contains(&f.name));
    for p in m.add_packages {
        if !r.packages.contains(&p) {
            r.packages.push(p);
        }
    }
    for s in m.add_services {
        if !r.services.contains(&s) {
            r.services.push(s);
        }
    }
    for (i, f) in m.add_features.into_iter().enumerate() {
        let parsed: std::result::Result<FeatureRef, String> = match f {
            Value::String(name) => Ok(FeatureRef::new(&name)),
            other => serde_json::from_value(other).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(feature) => match r.features.iter_mut().find(|x| x.name == feature.name) {
                Some(existing) => existing.options = feature.options,
                None => r.features.push(feature),
            },
            Err(e) => problems.push(Diagnostic::error(
                "modifications.feature",
                format!("modifications.add_features[{i}]"),
                format!("give a feature name or {{\"name\": …, \"options\": {{…}}}}: {e}"),
            )),
        }
    }
    let mut section = |value: Option<Value>, field: &str| -> Option<Value> {
        let v = value?;
        if v.is_object() {
            Some(v)
        } else {
            problems.push(Diagnostic::error(
                "modifications.section",
                format!("modifications.{field}"),
                format!("`{field}` must be an object"),
            ));
            None
        }
    };
    let networking = section(m.networking, "networking");
    let security = section(m.security, "security");
    if networking.is_some() || security.is_some() {
        // Sections go through the recipe's own (strict) model via JSON.
        let mut value = serde_json::to_value(&r).expect("a recipe serialises");
        if let Some(n) = networking {
            value["networking"] = n;
        }
        if let Some(s) = security {
            value["security"] = s;
        }
        let checked = validate::check_value(value);
        match checked.recipe {
            Some(updated) if !checked.diagnostics.has_errors() => r = updated,
            _ => problems.extend(checked.diagnostics.into_iter().filter(Diagnostic::is_error)),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use openfactory_core::validate::{Format, check_text};
    use serde_json::json;

    fn template() -> Recipe {
        check_text(
            "name = \"base\"\nbase_image = \"debian-bookworm\"\nfeatures = [\"ssh\", { name = \"docker\", options = { compose = true } }]\npackages = [\"vim\"]\nservices = [\"ssh.service\"]\n",
            Format::Toml,
        )
        .recipe
        .unwrap()
    }

    fn modifications(v: Value) -> Modifications {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn modifications_add_remove_and_replace() {
        let mut problems = Vec::new();
        let m = modifications(json!({
            "add_packages": ["htop", "vim"],
            "remove_packages": ["vim"],
            "add_features": ["monitoring", {"name": "docker", "options": {"compose": false}}],
            "remove_features": ["ssh"],
            "security": {"root_login": true},
            "hostname": "box-1",
        }));
        let r = apply(&template(), "mine", m, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(r.name, "mine");
        assert_eq!(r.packages, ["htop", "vim"]);
        let names: Vec<&str> = r.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["docker", "monitoring"]);
        assert_eq!(r.features[0].options["compose"], json!(false));
        assert!(r.security.root_login);
        assert_eq!(r.hostname.as_deref(), Some("box-1"));
    }

    #[test]
    fn impossible_modifications_are_all_reported() {
        let mut problems = Vec::new();
        let m = modifications(json!({
            "remove_packages": ["emacs"],
            "remove_services": ["nginx.service"],
            "add_features": [42],
            "networking": {"dhcp": "yes", "bogus": 1},
        }));
        apply(&template(), "mine", m, &mut problems);
        let paths: Vec<&str> = problems.iter().map(|d| d.path.as_str()).collect();
        assert!(
            paths.contains(&"modifications.remove_packages[0]"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"modifications.remove_services[0]"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"modifications.add_features[0]"),
            "{paths:?}"
        );
        assert!(paths.contains(&"networking.dhcp"), "{paths:?}");
        assert!(paths.contains(&"networking.bogus"), "{paths:?}");
    }

    #[test]
    fn unknown_modification_fields_are_refused() {
        assert!(serde_json::from_value::<Modifications>(json!({"add_package": ["vim"]})).is_err());
    }
}
