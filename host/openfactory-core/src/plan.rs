//! The planner: recipe → feature checks → plugins → an ordered plan.
//!
//! The planner is pure: it never runs a process, touches a file or opens a
//! socket. Plugins are reached through the [`FeatureSet`] trait, which the
//! wasmtime host implements; tests can implement it in memory.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capability::{Capabilities, Privilege};
use crate::diagnostic::{Diagnostic, Diagnostics, Path, did_you_mean};
use crate::digest::RecipeDigest;
use crate::recipe::{BaseImage, Recipe};
use crate::rules;
use crate::schema::Schema;
use crate::step::{CheckKind, Step};
use crate::system;
use crate::validate;

/// Where a step or check comes from: `recipe`, `base`, or a feature's name.
pub const SOURCE_RECIPE: &str = "recipe";
pub const SOURCE_BASE: &str = "base";
/// Names no plugin may take: the sources the planner gives its own steps and
/// checks. A plugin called `recipe` would pass its steps off as the recipe's.
/// Bundles with these names are refused at pack, install and load.
pub const RESERVED_NAMES: &[&str] = &[SOURCE_RECIPE, SOURCE_BASE];

/// Whether `name` is one of [`RESERVED_NAMES`].
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name)
}

/// What a feature plugin says about itself (WIT `feature-info`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureInfo {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub category: String,
    /// JSON Schema of the feature's options.
    pub options_schema: Value,
    /// Top-level recipe fields the plugin reads.
    pub reads: Vec<String>,
    pub requires: Vec<String>,
    pub conflicts: Vec<String>,
}

/// Bounds on what a plugin says about itself: every field is shown to
/// operators and clients, so each is one short line of visible text.
pub const MAX_SUMMARY_CHARS: usize = 200;
pub const MAX_LABEL_CHARS: usize = 64;
pub const MAX_NAMED_FIELDS: usize = 32;

impl FeatureInfo {
    /// Refuse a description that could not be shown honestly: over-long
    /// text, control or bidi characters, or names that are not names. The
    /// message names the field and the limit (the plugin's author fixes it).
    pub fn check(&self) -> Result<(), String> {
        fn line(field: &str, value: &str, max: usize) -> Result<(), String> {
            if value.trim().is_empty() {
                return Err(format!(
                    "its {field} is empty; say in a few words what it is"
                ));
            }
            rules::plain_text(value, max).map_err(|why| format!("its {field} {why}"))
        }
        fn names(field: &str, values: &[String]) -> Result<(), String> {
            if values.len() > MAX_NAMED_FIELDS {
                return Err(format!(
                    "it lists {} {field}; the limit is {MAX_NAMED_FIELDS}",
                    values.len()
                ));
            }
            for v in values {
                let ok = !v.is_empty()
                    && v.len() <= MAX_LABEL_CHARS
                    && v.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !ok {
                    return Err(format!(
                        "its {field} entry `{}` is not a name (lower-case letters, digits, `-` and `_`, at most {MAX_LABEL_CHARS})",
                        rules::printable(v, 80)
                    ));
                }
            }
            Ok(())
        }
        line("summary", &self.summary, MAX_SUMMARY_CHARS)?;
        line("version", &self.version, MAX_LABEL_CHARS)?;
        line("category", &self.category, MAX_LABEL_CHARS)?;
        names("category", std::slice::from_ref(&self.category))?;
        names("reads", &self.reads)?;
        names("requires", &self.requires)?;
        names("conflicts", &self.conflicts)
    }
}

/// An installed feature: its description, the digest of its component, its
/// compiled options schema, and what it may do.
#[derive(Debug)]
pub struct Feature {
    pub info: FeatureInfo,
    /// The plugin digest: sha256 (hex) over its bundle's component and assets.
    pub digest: String,
    schema: Schema,
    /// What its bundle declares it touches; nothing until set.
    pub capabilities: Capabilities,
    /// The privileges the operator granted it.
    pub granted: BTreeSet<Privilege>,
}

impl Feature {
    /// `Err` when the plugin's options schema is not a usable JSON Schema.
    /// The feature may emit no step until [`Feature::with_capabilities`].
    pub fn new(info: FeatureInfo, digest: String) -> Result<Feature, String> {
        info.check()?;
        let schema = Schema::compile(info.options_schema.clone())
            .map_err(|e| format!("its options schema is invalid: {e}"))?;
        Ok(Feature {
            info,
            digest,
            schema,
            capabilities: Capabilities::default(),
            granted: BTreeSet::new(),
        })
    }

    /// What the feature may do: its declaration, and the privileges the
    /// operator granted (only those the declaration implies count).
    pub fn with_capabilities(
        mut self,
        capabilities: Capabilities,
        granted: BTreeSet<Privilege>,
    ) -> Feature {
        let reachable = capabilities.privileges();
        self.granted = granted.intersection(&reachable).copied().collect();
        self.capabilities = capabilities;
        self
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// The recipe as one feature sees it (WIT `plan-context`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanContext {
    /// The fields the feature reads, plus `name` and `base_image`.
    pub recipe: Value,
    /// The feature's options object.
    pub options: Value,
}

/// What one plugin returned for a recipe.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// From `validate` (and from `plan` when it refused).
    pub diagnostics: Vec<Diagnostic>,
    /// From `plan`, when it was asked for and succeeded.
    pub steps: Vec<Step>,
    pub checks: Vec<FeatureCheck>,
}

/// A boot check as a plugin declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureCheck {
    pub name: String,
    pub description: String,
    pub kind: CheckKind,
    pub timeout_seconds: u32,
}

/// Running a plugin failed (not: the plugin reported problems).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The plugin trapped, ran out of a budget, or answered nonsense.
    #[error("{0}")]
    Failed(String),
    /// The host is running as many plugin evaluations as it allows: nothing
    /// is wrong with the plugin or the recipe; trying again shortly works.
    #[error("{0}")]
    Busy(String),
}

/// The code of the diagnostic a planner too busy to evaluate a plugin gives.
pub const PLANNER_BUSY: &str = "planner.busy";

/// The installed features and a way to run them.
pub trait FeatureSet {
    /// Every installed feature, sorted by name.
    fn features(&self) -> Vec<&Feature>;

    fn feature(&self, name: &str) -> Option<&Feature> {
        self.features().into_iter().find(|f| f.name() == name)
    }

    /// Run the feature's `validate`; when `plan` is true and it found no
    /// error, also `plan` and `checks`.
    fn evaluate(
        &self,
        feature: &str,
        ctx: &PlanContext,
        plan: bool,
    ) -> Result<Evaluation, RuntimeError>;
}

/// An ordered, typed build plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// The recipe's content digest (also read from plans stored as `recipe_id`).
    #[serde(alias = "recipe_id")]
    pub recipe_digest: RecipeDigest,
    pub recipe_name: String,
    pub base_image: BaseImage,
    pub suite: String,
    pub architecture: String,
    /// Whether the image carries the QEMU guest agent (see `Recipe::guest_agent`).
    pub guest_agent: bool,
    /// Features in planning order (required features first).
    pub features: Vec<PlannedFeature>,
    pub steps: Vec<PlannedStep>,
    pub checks: Vec<PlannedCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedFeature {
    pub name: String,
    pub version: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedStep {
    /// `recipe` or the feature that emitted the step.
    pub source: String,
    #[serde(flatten)]
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedCheck {
    /// `source/name`, unique in the plan: `docker/daemon-active`.
    pub name: String,
    /// `base`, `recipe` or the feature that declared it.
    pub source: String,
    pub description: String,
    #[serde(flatten)]
    pub kind: CheckKind,
    pub timeout_seconds: u32,
}

/// The result of planning: a plan when nothing was wrong, and every
/// diagnostic (warnings accompany a plan; errors replace it).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Option<Plan>,
    pub diagnostics: Diagnostics,
    /// Known when the recipe and all its features are known, even with errors.
    pub recipe_digest: Option<RecipeDigest>,
}

/// Validate a recipe with its features, without planning.
pub fn validate(recipe: &Recipe, features: &dyn FeatureSet) -> Outcome {
    run(recipe, features, false)
}

/// Validate and plan a recipe.
pub fn plan(recipe: &Recipe, features: &dyn FeatureSet) -> Outcome {
    run(recipe, features, true)
}

/// Check recipe text by itself and then with its features.
pub fn plan_text(
    text: &str,
    format: validate::Format,
    features: &dyn FeatureSet,
    want_plan: bool,
) -> Outcome {
    from_checked(validate::check_text(text, format), features, want_plan)
}

/// Check a recipe given as JSON (as MCP clients send it) by itself and then
/// with its features.
pub fn plan_value(value: serde_json::Value, features: &dyn FeatureSet, want_plan: bool) -> Outcome {
    from_checked(validate::check_value(value), features, want_plan)
}

fn from_checked(checked: validate::Checked, features: &dyn FeatureSet, want_plan: bool) -> Outcome {
    match checked.recipe {
        Some(recipe) => {
            let mut outcome = run_checked(&recipe, checked.diagnostics, features, want_plan);
            outcome.diagnostics.sort();
            outcome
        }
        None => Outcome {
            plan: None,
            diagnostics: checked.diagnostics,
            recipe_digest: None,
        },
    }
}

fn run(recipe: &Recipe, features: &dyn FeatureSet, want_plan: bool) -> Outcome {
    // A typed recipe may still break rules (it can be built in code): check them.
    let value = serde_json::to_value(recipe).expect("a recipe serialises");
    let checked = validate::check_value(value);
    let mut outcome = run_checked(recipe, checked.diagnostics, features, want_plan);
    outcome.diagnostics.sort();
    outcome
}

fn run_checked(
    recipe: &Recipe,
    mut diagnostics: Diagnostics,
    set: &dyn FeatureSet,
    want_plan: bool,
) -> Outcome {
    let features_path = Path::root().field("features");

    // 1. Every feature must be installed, with options its schema accepts.
    let mut resolved: Vec<(usize, &Feature)> = Vec::new();
    let mut options_ok: BTreeSet<usize> = BTreeSet::new();
    for (i, fref) in recipe.features.iter().enumerate() {
        let at = features_path.index(i);
        let Some(feature) = set.feature(&fref.name) else {
            let installed: Vec<&str> = set.features().iter().map(|f| f.name()).collect();
            let hint = match did_you_mean(&fref.name, installed.iter().copied()) {
                Some(m) => format!("did you mean `{m}`?"),
                None if installed.is_empty() => "no feature plugins are installed; an operator installs them with `openfactory plugin install`".into(),
                None => format!("installed features: {}", installed.join(", ")),
            };
            diagnostics.push(
                Diagnostic::error(
                    "recipe.unknown-feature",
                    at.field("name"),
                    format!(
                        "unknown feature `{}`",
                        crate::rules::truncate(&fref.name, 64)
                    ),
                )
                .suggest(hint),
            );
            continue;
        };
        let options = Value::Object(fref.options.clone().into_iter().collect());
        let problems = feature.schema.check(
            &options,
            &at.field("options"),
            &format!("{}.options", feature.name()),
        );
        if problems.is_empty() {
            options_ok.insert(i);
        }
        diagnostics.extend(problems);
        resolved.push((i, feature));
    }

    // 2. Requirements and conflicts.
    let present: BTreeMap<&str, usize> = recipe
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    for &(i, feature) in &resolved {
        for required in &feature.info.requires {
            if !present.contains_key(required.as_str()) {
                let installed = set.feature(required).is_some();
                diagnostics.push(
                    Diagnostic::error(
                        "recipe.missing-requirement",
                        features_path.index(i).field("name"),
                        format!("feature `{}` requires feature `{required}`, which the recipe does not include", feature.name()),
                    )
                    .suggest(if installed {
                        format!("add \"{required}\" to features (it is planned before `{}`)", feature.name())
                    } else {
                        format!("install the `{required}` plugin, then add it to features")
                    }),
                );
            }
        }
        for other in &feature.info.conflicts {
            if let Some(&j) = present.get(other.as_str()) {
                // Report each pair once, at the later entry.
                let reverse = set
                    .feature(other)
                    .is_some_and(|o| o.info.conflicts.iter().any(|c| c == feature.name()));
                if j < i || !reverse {
                    let (later, earlier) = if j < i { (i, j) } else { (j, i) };
                    diagnostics.push(
                        Diagnostic::error(
                            "recipe.feature-conflict",
                            features_path.index(later).field("name"),
                            format!(
                                "features `{}` and `{other}` cannot be used together",
                                feature.name()
                            ),
                        )
                        .suggest(format!("remove features[{later}] or features[{earlier}]")),
                    );
                }
            }
        }
    }

    // 3. Planning order: required features first, otherwise recipe order.
    let order = match planning_order(&resolved) {
        Ok(order) => order,
        Err(cycle) => {
            diagnostics.push(Diagnostic::error(
                "recipe.requirement-cycle",
                "features",
                format!(
                    "features require each other in a cycle: {}",
                    cycle.join(" → ")
                ),
            ));
            Vec::new()
        }
    };

    let all_known = resolved.len() == recipe.features.len();
    let recipe_digest = all_known.then(|| {
        RecipeDigest::compute(
            recipe,
            resolved.iter().map(|(_, f)| (f.name(), f.digest.as_str())),
        )
    });

    // 4. Each feature's own validation, and its plan when nothing is wrong so far.
    let plan_now = want_plan && !diagnostics.has_errors() && all_known;
    let recipe_value = serde_json::to_value(recipe).expect("a recipe serialises");
    let mut feature_steps: Vec<(String, Vec<Step>)> = Vec::new();
    let mut checks: Vec<PlannedCheck> = Vec::new();
    for &(i, feature) in &order {
        if !options_ok.contains(&i) {
            continue;
        }
        let at = features_path.index(i);
        let ctx = PlanContext {
            recipe: project(&recipe_value, &feature.info.reads),
            options: Value::Object(recipe.features[i].options.clone().into_iter().collect()),
        };
        match set.evaluate(feature.name(), &ctx, plan_now) {
            Err(RuntimeError::Busy(why)) => diagnostics.push(
                Diagnostic::error(PLANNER_BUSY, at.field("name"), why)
                    .suggest("the server is planning many recipes at once; nothing is wrong with the recipe: try again in a few seconds"),
            ),
            Err(e) => diagnostics.push(
                Diagnostic::error("plugin.failed", at.field("name"), format!("plugin `{}` failed: {e}", feature.name()))
                    .suggest("this is a fault in the plugin, not in the recipe; report it to the plugin's author or remove the feature"),
            ),
            Ok(eval) => {
                for d in eval.diagnostics {
                    diagnostics.push(rebase(d, feature.name(), &at));
                }
                let mut bad = false;
                for (n, step) in eval.steps.iter().enumerate() {
                    let problems = step.check();
                    for (field, reason) in &problems {
                        bad = true;
                        diagnostics.push(Diagnostic::error(
                            "plugin.invalid-step",
                            at.field("name"),
                            format!("plugin `{}` emitted an invalid step #{n} ({}): `{field}` {}", feature.name(), step.kind(), crate::rules::printable(reason, 300)),
                        ));
                    }
                    if !problems.is_empty() {
                        continue;
                    }
                    for refusal in feature.capabilities.permits(&feature.granted, step) {
                        bad = true;
                        diagnostics.push(capability_refused(feature, n, step, &refusal, &at));
                    }
                }
                let mut names = BTreeSet::new();
                for check in eval.checks {
                    let problems = check.kind.check();
                    let name_ok = crate::rules::slug(&check.name).is_ok() && names.insert(check.name.clone());
                    let description_ok = crate::rules::plain_text(&check.description, crate::step::MAX_DESCRIPTION_CHARS).is_ok();
                    if !problems.is_empty() || !name_ok || !description_ok {
                        bad = true;
                        diagnostics.push(Diagnostic::error(
                            "plugin.invalid-check",
                            at.field("name"),
                            format!("plugin `{}` declared an invalid or duplicate boot check `{}` (its name, kind, or a description over {} characters or with control characters)", feature.name(), crate::rules::printable(&check.name, 64), crate::step::MAX_DESCRIPTION_CHARS),
                        ));
                        continue;
                    }
                    checks.push(PlannedCheck {
                        name: format!("{}/{}", feature.name(), check.name),
                        source: feature.name().to_owned(),
                        description: check.description,
                        kind: check.kind,
                        timeout_seconds: check.timeout_seconds.clamp(1, 3600),
                    });
                }
                if !bad {
                    feature_steps.push((feature.name().to_owned(), eval.steps));
                }
            }
        }
    }

    if !plan_now || diagnostics.has_errors() {
        return Outcome {
            plan: None,
            diagnostics,
            recipe_digest,
        };
    }
    let Ok(base_image) = recipe.base_image.parse::<BaseImage>() else {
        return Outcome {
            plan: None,
            diagnostics,
            recipe_digest,
        };
    };

    // 5. Assemble: recipe prelude, features in order, recipe epilogue.
    let mut steps: Vec<PlannedStep> = Vec::new();
    let tag = |source: &str, steps: Vec<Step>| {
        steps
            .into_iter()
            .map(|step| PlannedStep {
                source: source.to_owned(),
                step,
            })
            .collect::<Vec<_>>()
    };
    steps.extend(tag(SOURCE_RECIPE, system::prelude(recipe)));
    for (source, s) in feature_steps {
        steps.extend(tag(&source, s));
    }
    steps.extend(tag(SOURCE_RECIPE, system::epilogue(recipe)));
    diagnostics.extend(write_conflicts(&steps));
    diagnostics.extend(run_packages(&steps, set));
    if diagnostics.has_errors() {
        return Outcome {
            plan: None,
            diagnostics,
            recipe_digest,
        };
    }

    let mut all_checks: Vec<PlannedCheck> = Vec::new();
    for (source, list) in [
        (SOURCE_BASE, system::base_checks()),
        (SOURCE_RECIPE, system::recipe_checks(recipe)),
    ] {
        all_checks.extend(
            list.into_iter()
                .map(|(name, description, kind)| PlannedCheck {
                    timeout_seconds: if source == SOURCE_RECIPE {
                        system::check_timeout(recipe, &name)
                    } else {
                        system::DEFAULT_CHECK_SECONDS
                    },
                    name: format!("{source}/{name}"),
                    source: source.to_owned(),
                    description,
                    kind,
                }),
        );
    }
    all_checks.extend(checks);

    let plan = Plan {
        recipe_digest: recipe_digest.clone().expect("all features are known"),
        recipe_name: recipe.name.clone(),
        base_image,
        suite: base_image.suite().to_owned(),
        architecture: recipe.architecture.clone(),
        guest_agent: recipe.guest_agent,
        features: order
            .iter()
            .map(|(_, f)| PlannedFeature {
                name: f.name().to_owned(),
                version: f.info.version.clone(),
                digest: f.digest.clone(),
            })
            .collect(),
        steps,
        checks: all_checks,
    };
    Outcome {
        plan: Some(plan),
        diagnostics,
        recipe_digest,
    }
}

/// A step a plugin may not emit, as a diagnostic that names the plugin, the
/// step and the capability.
fn capability_refused(
    feature: &Feature,
    n: usize,
    step: &Step,
    refusal: &crate::capability::Refusal,
    at: &Path,
) -> Diagnostic {
    let name = feature.name();
    let (code, fix) = match refusal {
        crate::capability::Refusal::Undeclared { what, .. } => (
            "plugin.undeclared-capability",
            format!(
                "the plugin's author declares it in the bundle's capabilities (`{what}`), or the recipe drops feature `{name}`"
            ),
        ),
        crate::capability::Refusal::NotGranted(p) => (
            "plugin.privilege-not-granted",
            format!(
                "an operator who trusts `{name}` with this grants it: `openfactory plugin grant {name} {p}`"
            ),
        ),
    };
    Diagnostic::error(
        code,
        at.field("name"),
        format!("plugin `{name}` step #{n} ({}) {refusal}", step.kind()),
    )
    .suggest(fix)
}

/// What a plan writes, by path: the first writer and the step's number.
fn written_paths(step: &Step) -> Vec<String> {
    match step {
        Step::WriteFile(f) => vec![f.path.clone()],
        Step::AddAptSource(s) => vec![format!("apt source `{}`", s.name)],
        Step::SetSysctl { key, .. } => vec![format!("sysctl `{}`", key.replace('/', "."))],
        // What a program does with a path it is given is unknown: it counts
        // as written (`sed -i … /etc/login.defs`), as the capability check
        // counts it.
        Step::Run { argv, .. } => crate::capability::run_paths(argv)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Two sources that write one path (or set one sysctl, or add one apt
/// source) are a conflict: the later would silently win.
fn write_conflicts(steps: &[PlannedStep]) -> Vec<Diagnostic> {
    let mut first: BTreeMap<String, &str> = BTreeMap::new();
    let mut reported: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut out = Vec::new();
    let who = |source: &str| {
        if source == SOURCE_RECIPE {
            "the recipe".to_owned()
        } else {
            format!("plugin `{source}`")
        }
    };
    for planned in steps {
        for target in written_paths(&planned.step) {
            match first.get(&target) {
                None => {
                    first.insert(target, &planned.source);
                }
                Some(&earlier) if earlier != planned.source => {
                    let key = (target.clone(), earlier.to_owned(), planned.source.clone());
                    if reported.insert(key) {
                        out.push(
                            Diagnostic::error(
                                "plan.write-conflict",
                                "features",
                                format!(
                                    "{} and {} both write {}; the later would silently change what the earlier wrote",
                                    who(earlier),
                                    who(&planned.source),
                                    crate::rules::printable(&target, 300)
                                ),
                            )
                            .suggest("remove one of the two (a recipe file that a feature also writes is set through the feature's options)"),
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// A plugin's `run` step executes a program its bundle says comes from a
/// package; that package must be in the base system or installed by an
/// earlier step. (The planner cannot know that the declaration is true: the
/// catalog build proves it.)
fn run_packages(steps: &[PlannedStep], set: &dyn FeatureSet) -> Vec<Diagnostic> {
    let mut installed: BTreeSet<&str> = system::BASE_SYSTEM_PACKAGES.iter().copied().collect();
    let mut out = Vec::new();
    for (n, planned) in steps.iter().enumerate() {
        match &planned.step {
            Step::InstallPackages { packages } => {
                installed.extend(packages.iter().map(String::as_str));
            }
            Step::Run { argv, .. } if planned.source != SOURCE_RECIPE => {
                let Some(feature) = set.feature(&planned.source) else {
                    continue;
                };
                let program = argv.first().map(String::as_str).unwrap_or_default();
                let Some(package) = feature.capabilities.run.get(program) else {
                    continue; // refused already as undeclared
                };
                if !installed.contains(package.as_str()) {
                    out.push(
                        Diagnostic::error(
                            "plugin.program-not-installed",
                            "features",
                            format!(
                                "plugin `{}` runs `{}` (plan step #{n}), which its bundle says package `{package}` ships, but nothing in the plan installs `{package}` before it",
                                planned.source,
                                crate::rules::printable(program, 100)
                            ),
                        )
                        .suggest(format!(
                            "this is a fault in the plugin: it must install `{package}` before running `{program}`"
                        )),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

/// Only the fields a feature reads, plus `name` and `base_image`.
fn project(recipe: &Value, reads: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    if let Value::Object(map) = recipe {
        for (k, v) in map {
            if k == "name" || k == "base_image" || reads.iter().any(|r| r == k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Put a plugin's diagnostic in recipe terms: `options.x` → `features[i].options.x`,
/// and namespace its code by the feature.
fn rebase(mut d: Diagnostic, feature: &str, at: &Path) -> Diagnostic {
    if d.path.is_empty() {
        d.path = at.to_string();
    } else if d.path == "options"
        || d.path.starts_with("options.")
        || d.path.starts_with("options[")
    {
        d.path = at.join(&Path::parse(&d.path)).to_string();
    }
    if !d.code.starts_with(&format!("{feature}.")) {
        d.code = format!("{feature}.{}", d.code);
    }
    d.code = crate::rules::printable(&d.code, 128);
    d.path = crate::rules::printable(&d.path, 256);
    d.message = crate::rules::printable(&d.message, 1000);
    d.suggestion = d.suggestion.map(|s| crate::rules::printable(&s, 1000));
    d.plugin = Some(feature.to_owned());
    d
}

/// Topological order by `requires`, stable in recipe order. `Err` names a cycle.
fn planning_order<'a>(
    resolved: &[(usize, &'a Feature)],
) -> Result<Vec<(usize, &'a Feature)>, Vec<String>> {
    let by_name: BTreeMap<&str, (usize, &Feature)> =
        resolved.iter().map(|&(i, f)| (f.name(), (i, f))).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, (usize, &'a Feature)>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<(usize, &'a Feature)>,
    ) -> Result<(), Vec<String>> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = stack.iter().position(|s| *s == name) {
            let mut cycle: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_owned());
            return Err(cycle);
        }
        let Some(&(i, feature)) = by_name.get(name) else {
            return Ok(());
        };
        stack.push(name);
        for required in &feature.info.requires {
            visit(required, by_name, done, stack, order)?;
        }
        stack.pop();
        done.insert(name);
        order.push((i, feature));
        Ok(())
    }
    for &(_, f) in resolved {
        visit(f.name(), &by_name, &mut done, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// One feature that reads `packages`, and a record of every context the
    /// planner handed it.
    struct Recording {
        feature: Feature,
        seen: Mutex<Vec<PlanContext>>,
    }

    impl Recording {
        fn new() -> Recording {
            let info = FeatureInfo {
                name: "probe".into(),
                version: "1.0.0".into(),
                summary: "records its context".into(),
                category: "testing".into(),
                options_schema: serde_json::json!({"type": "object"}),
                reads: vec!["packages".into()],
                requires: vec![],
                conflicts: vec![],
            };
            Recording {
                feature: Feature::new(info, "00".repeat(32)).unwrap(),
                seen: Mutex::new(Vec::new()),
            }
        }
    }

    #[test]
    fn a_description_that_cannot_be_shown_honestly_is_refused() {
        let good = Recording::new().feature.info;
        let with = |f: &dyn Fn(&mut FeatureInfo)| {
            let mut info = good.clone();
            f(&mut info);
            Feature::new(info, "00".repeat(32)).map(|_| ()).unwrap_err()
        };
        let long = with(&|i| i.summary = "x".repeat(MAX_SUMMARY_CHARS + 1));
        assert!(
            long.contains("summary") && long.contains("limit is 200"),
            "{long}"
        );
        let hidden = with(&|i| i.summary = "fine\x1b[2K\rsigned by: project".into());
        assert!(
            hidden.contains("summary") && hidden.contains("\\u{1b}"),
            "{hidden}"
        );
        let bidi = with(&|i| i.version = "1.0\u{202e}0".into());
        assert!(bidi.contains("version"), "{bidi}");
        let category = with(&|i| i.category = "Not A Name".into());
        assert!(category.contains("category"), "{category}");
        let reads = with(&|i| i.reads = (0..40).map(|n| format!("f{n}")).collect());
        assert!(
            reads.contains("reads") && reads.contains("limit is 32"),
            "{reads}"
        );
        let empty = with(&|i| i.summary = "  ".into());
        assert!(empty.contains("summary is empty"), "{empty}");
        assert!(Feature::new(good, "00".repeat(32)).is_ok());
    }

    impl FeatureSet for Recording {
        fn features(&self) -> Vec<&Feature> {
            vec![&self.feature]
        }

        fn evaluate(
            &self,
            _feature: &str,
            ctx: &PlanContext,
            _plan: bool,
        ) -> Result<Evaluation, RuntimeError> {
            self.seen.lock().unwrap().push(ctx.clone());
            Ok(Evaluation::default())
        }
    }

    #[test]
    fn a_plugin_sees_only_the_fields_it_reads_plus_name_and_base_image() {
        let set = Recording::new();
        let recipe = serde_json::json!({
            "name": "secretive",
            "base_image": "debian-bookworm",
            "packages": ["vim"],
            "users": [{"name": "alice", "password_hash": "$6$secret"}],
            "files": [{"path": "/etc/token", "content": "hunter2"}],
            "features": [{"name": "probe", "options": {"x": 1}}],
        });
        let outcome = plan_value(recipe, &set, true);
        assert!(outcome.plan.is_some(), "{:#?}", outcome.diagnostics);
        let seen = set.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for ctx in seen.iter() {
            let keys: Vec<&str> = ctx
                .recipe
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["base_image", "name", "packages"], "{ctx:?}");
            assert_eq!(ctx.options, serde_json::json!({"x": 1}));
        }
    }

    /// One feature that emits the given steps, with the given capabilities.
    struct Emitting {
        feature: Feature,
        steps: Vec<Step>,
        /// More plugins, after `feature`, each with the steps it emits.
        others: Vec<(Feature, Vec<Step>)>,
    }

    impl Emitting {
        fn new(steps: Vec<Step>, capabilities: Capabilities, granted: &[Privilege]) -> Emitting {
            Emitting {
                feature: emitting_feature("emitter", capabilities, granted),
                steps,
                others: Vec::new(),
            }
        }

        /// One more plugin, `name`, that the recipe lists after the others.
        fn and(mut self, name: &str, steps: Vec<Step>, capabilities: Capabilities) -> Emitting {
            self.others
                .push((emitting_feature(name, capabilities, &[]), steps));
            self
        }

        fn plan(&self, mut recipe: Value) -> Outcome {
            for (other, _) in &self.others {
                recipe["features"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"name": other.name()}));
            }
            plan_value(recipe, self, true)
        }
    }

    fn emitting_feature(name: &str, capabilities: Capabilities, granted: &[Privilege]) -> Feature {
        {
            let info = FeatureInfo {
                name: name.into(),
                version: "1.0.0".into(),
                summary: "emits what it is told".into(),
                category: "testing".into(),
                options_schema: serde_json::json!({"type": "object"}),
                reads: vec![],
                requires: vec![],
                conflicts: vec![],
            };
            Feature::new(info, "00".repeat(32))
                .unwrap()
                .with_capabilities(capabilities, granted.iter().copied().collect())
        }
    }

    impl FeatureSet for Emitting {
        fn features(&self) -> Vec<&Feature> {
            std::iter::once(&self.feature)
                .chain(self.others.iter().map(|(f, _)| f))
                .collect()
        }

        fn evaluate(
            &self,
            name: &str,
            _: &PlanContext,
            _: bool,
        ) -> Result<Evaluation, RuntimeError> {
            let steps = if name == self.feature.name() {
                &self.steps
            } else {
                let (_, steps) = self.others.iter().find(|(f, _)| f.name() == name).unwrap();
                steps
            };
            Ok(Evaluation {
                steps: steps.clone(),
                ..Default::default()
            })
        }
    }

    fn recipe() -> Value {
        serde_json::json!({"name": "r", "base_image": "debian-bookworm", "features": [{"name": "emitter"}]})
    }

    fn codes(outcome: &Outcome) -> Vec<String> {
        outcome
            .diagnostics
            .errors()
            .map(|d| d.code.clone())
            .collect()
    }

    fn write(path: &str) -> Step {
        Step::WriteFile(crate::step::FileStep {
            path: path.into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            content: "x".into(),
        })
    }

    #[test]
    fn a_plugin_that_declares_nothing_plans_nothing() {
        let set = Emitting::new(vec![write("/etc/motd")], Capabilities::default(), &[]);
        let outcome = set.plan(recipe());
        assert!(outcome.plan.is_none());
        let error = outcome.diagnostics.errors().next().unwrap();
        assert_eq!(error.code, "plugin.undeclared-capability");
        assert_eq!(error.path, "features[0].name");
        assert!(
            error
                .message
                .contains("plugin `emitter` step #0 (write_file)")
                && error.message.contains("`/etc/motd`")
                && error.message.contains("(`files`)"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_privileged_step_needs_the_operators_grant() {
        let caps = Capabilities {
            files: vec!["/etc/sudoers.d/".into()],
            ..Default::default()
        };
        let step = write("/etc/sudoers.d/emitter");
        let refused = Emitting::new(vec![step.clone()], caps.clone(), &[]).plan(recipe());
        assert_eq!(codes(&refused), ["plugin.privilege-not-granted"]);
        let hint = refused
            .diagnostics
            .errors()
            .next()
            .unwrap()
            .suggestion
            .clone();
        assert!(
            hint.unwrap()
                .contains("openfactory plugin grant emitter sudoers")
        );
        let granted = Emitting::new(vec![step], caps, &[Privilege::Sudoers]).plan(recipe());
        assert!(granted.plan.is_some(), "{:?}", granted.diagnostics);
        // A grant the declaration does not reach gives nothing.
        let stray = Emitting::new(
            vec![write("/etc/sudoers.d/x")],
            Capabilities {
                files: vec!["/etc/sudoers.d/x".into(), "/etc/motd".into()],
                ..Default::default()
            },
            &[Privilege::Sudoers, Privilege::Interpreter],
        );
        assert_eq!(stray.feature.granted, BTreeSet::from([Privilege::Sudoers]));
    }

    #[test]
    fn two_writers_of_one_path_are_a_conflict() {
        let caps = Capabilities {
            files: vec!["/etc/".into()],
            ..Default::default()
        };
        // The recipe's prelude writes /etc/hosts; a later plugin write would win.
        let outcome = Emitting::new(vec![write("/etc/hosts")], caps.clone(), &[]).plan(recipe());
        assert_eq!(codes(&outcome), ["plan.write-conflict"]);
        let message = &outcome.diagnostics.errors().next().unwrap().message;
        assert!(
            message.contains("the recipe and plugin `emitter` both write /etc/hosts"),
            "{message}"
        );
        // A recipe file the plugin also writes: the recipe would win, silently.
        let mut r = recipe();
        r["files"] = serde_json::json!([{"path": "/etc/motd", "content": "hi"}]);
        let outcome = Emitting::new(vec![write("/etc/motd")], caps.clone(), &[]).plan(r);
        assert_eq!(codes(&outcome), ["plan.write-conflict"]);
    }

    #[test]
    fn two_plugins_that_write_or_edit_one_path_are_a_conflict() {
        let caps = Capabilities {
            files: vec!["/etc/".into()],
            run: BTreeMap::from([("sed".into(), "sed".into())]),
            ..Default::default()
        };
        let sed = |path: &str| Step::Run {
            argv: vec!["sed".into(), "-i".into(), "s/^A/B/".into(), path.into()],
            description: "edit".into(),
        };
        // Two plugins write one file: the second would silently win.
        let outcome = Emitting::new(vec![write("/etc/motd")], caps.clone(), &[])
            .and("second", vec![write("/etc/motd")], caps.clone())
            .plan(recipe());
        assert_eq!(codes(&outcome), ["plan.write-conflict"]);
        let message = &outcome.diagnostics.errors().next().unwrap().message;
        assert!(
            message.contains("plugin `emitter` and plugin `second` both write /etc/motd"),
            "{message}"
        );
        // A program given a path counts as a writer of it, either way round.
        for (first, second) in [
            (write("/etc/login.defs"), sed("/etc/login.defs")),
            (sed("/etc/login.defs"), sed("/etc/login.defs")),
            (sed("/etc/login.defs"), write("/etc/login.defs")),
        ] {
            let outcome = Emitting::new(vec![first], caps.clone(), &[])
                .and("second", vec![second], caps.clone())
                .plan(recipe());
            assert_eq!(
                codes(&outcome),
                ["plan.write-conflict"],
                "{:?}",
                outcome.diagnostics
            );
        }
        // A program that edits what the recipe wrote (its prelude writes /etc/hosts).
        let outcome = Emitting::new(vec![sed("/etc/hosts")], caps.clone(), &[]).plan(recipe());
        assert_eq!(codes(&outcome), ["plan.write-conflict"]);
        // One plugin may write a file and then edit it; two plugins may write
        // two files.
        let outcome = Emitting::new(vec![write("/etc/a"), sed("/etc/a")], caps.clone(), &[])
            .and("second", vec![write("/etc/b"), sed("/etc/b")], caps)
            .plan(recipe());
        assert!(outcome.plan.is_some(), "{:?}", outcome.diagnostics);
    }

    #[test]
    fn a_program_is_run_only_after_its_package_is_installed() {
        let caps = Capabilities {
            packages: vec!["aide".into(), "aide-common".into()],
            run: BTreeMap::from([("aideinit".into(), "aide-common".into())]),
            ..Default::default()
        };
        let run = Step::Run {
            argv: vec!["aideinit".into(), "--yes".into()],
            description: "initialise".into(),
        };
        let install = |p: &str| Step::InstallPackages {
            packages: vec![p.into()],
        };
        // The gxp defect: `aide` is installed, `aideinit` ships in `aide-common`.
        let outcome =
            Emitting::new(vec![install("aide"), run.clone()], caps.clone(), &[]).plan(recipe());
        assert_eq!(codes(&outcome), ["plugin.program-not-installed"]);
        assert!(
            outcome
                .diagnostics
                .errors()
                .next()
                .unwrap()
                .message
                .contains("package `aide-common`")
        );
        // Installed after the run is still too late.
        let late = Emitting::new(vec![run.clone(), install("aide-common")], caps.clone(), &[]);
        assert_eq!(
            codes(&late.plan(recipe())),
            ["plugin.program-not-installed"]
        );
        let fixed = Emitting::new(vec![install("aide-common"), run], caps, &[]).plan(recipe());
        assert!(fixed.plan.is_some(), "{:?}", fixed.diagnostics);
    }

    #[test]
    fn a_plugins_diagnostics_are_marked_bounded_and_escaped() {
        let d = Diagnostic::error("x", "options.a", format!("\x1b[2Kfake{}", "y".repeat(5000)));
        let at = Path::root().field("features").index(0);
        let rebased = rebase(d, "emitter", &at);
        assert_eq!(rebased.plugin.as_deref(), Some("emitter"));
        assert_eq!(rebased.code, "emitter.x");
        assert_eq!(rebased.path, "features[0].options.a");
        assert!(!rebased.message.chars().any(char::is_control));
        assert!(rebased.message.chars().count() <= 1001);
    }

    #[test]
    fn plans_stored_before_the_rename_still_read() {
        let set = Recording::new();
        let recipe = serde_json::json!({"name": "old", "base_image": "debian-bookworm"});
        let plan = plan_value(recipe, &set, true).plan.unwrap();
        let mut stored = serde_json::to_value(&plan).unwrap();
        let digest = stored
            .as_object_mut()
            .unwrap()
            .remove("recipe_digest")
            .unwrap();
        stored["recipe_id"] = digest;
        let read: Plan = serde_json::from_value(stored).unwrap();
        assert_eq!(read, plan);
    }
}
