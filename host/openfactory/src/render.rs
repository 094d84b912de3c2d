//! Human-readable output. JSON output is the serde form of the same types.
//!
//! Every value that a plugin or a caller supplied (step descriptions, argv,
//! paths, versions, diagnostics, option descriptions) passes through
//! [`safe`]: a plugin must not be able to clear a line, move the cursor or
//! hide its own `sh -c` step on an operator's terminal.

use std::fmt::Write as _;

use openfactory_core::catalog::Template;
use openfactory_core::plan::{Outcome, Plan};
use openfactory_core::{Diagnostic, Diagnostics};
use serde_json::Value;

/// `value` with control characters and bidirectional overrides escaped, and
/// bounded.
pub fn safe(value: impl std::fmt::Display) -> String {
    openfactory_core::rules::printable(&value.to_string(), 4000)
}

pub fn plan(plan: &Plan, diagnostics: &Diagnostics) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for {} — digest {}",
        safe(&plan.recipe_name),
        plan.recipe_digest
    );
    let _ = writeln!(
        out,
        "Base: {} ({} {})",
        plan.base_image, plan.suite, plan.architecture
    );
    let features: Vec<String> = plan
        .features
        .iter()
        .map(|f| format!("{} {}", safe(&f.name), safe(&f.version)))
        .collect();
    let _ = writeln!(
        out,
        "Features: {}",
        if features.is_empty() {
            "none".into()
        } else {
            features.join(", ")
        }
    );
    let _ = writeln!(out, "\nSteps ({}):", plan.steps.len());
    let width = plan.steps.iter().map(|s| s.source.len()).max().unwrap_or(6);
    for (i, s) in plan.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>4}  {:<width$}  {}",
            i + 1,
            safe(&s.source),
            safe(&s.step)
        );
    }
    let _ = writeln!(out, "\nBoot checks ({}):", plan.checks.len());
    let width = plan.checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    for c in &plan.checks {
        let _ = writeln!(
            out,
            "      {:<width$}  {} ({}s)",
            safe(&c.name),
            safe(&c.kind),
            c.timeout_seconds
        );
    }
    diagnostics_block(&mut out, diagnostics.warnings(), "Warnings");
    out
}

pub fn validation(label: &str, outcome: &Outcome) -> String {
    let mut out = String::new();
    let d = &outcome.diagnostics;
    let errors = d.errors().count();
    let warnings = d.warnings().count();
    if errors == 0 {
        let digest = outcome
            .recipe_digest
            .as_ref()
            .map(|d| format!(" (digest {})", d.short()))
            .unwrap_or_default();
        let _ = writeln!(out, "{label}: valid{digest}, {warnings} warning(s)");
    } else {
        let _ = writeln!(out, "{label}: {errors} error(s), {warnings} warning(s)");
    }
    diagnostics_block(&mut out, d.errors(), "Errors");
    diagnostics_block(&mut out, d.warnings(), "Warnings");
    out
}

fn diagnostics_block<'a>(
    out: &mut String,
    items: impl Iterator<Item = &'a Diagnostic>,
    title: &str,
) {
    let items: Vec<_> = items.collect();
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for d in items {
        let path = if d.path.is_empty() {
            "(recipe)".to_owned()
        } else {
            safe(&d.path)
        };
        let by = d
            .plugin
            .as_ref()
            .map(|p| format!(" (from plugin {})", safe(p)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {path}: {} [{}]{by}",
            safe(&d.message),
            safe(&d.code)
        );
        if let Some(s) = &d.suggestion {
            let _ = writeln!(out, "    hint: {}", safe(s));
        }
    }
}

pub fn templates(found: &[&Template]) -> String {
    let mut out = String::new();
    if found.is_empty() {
        out.push_str("No template matches.\n");
    }
    for t in found {
        let features: Vec<&str> = t.recipe.features.iter().map(|f| f.name.as_str()).collect();
        let _ = writeln!(
            out,
            "{:<28} {:<12} {:<16} [{}]",
            t.id,
            t.category,
            t.recipe.base_image,
            features.join(", ")
        );
        let _ = writeln!(
            out,
            "    {}",
            t.recipe.description.lines().next().unwrap_or("")
        );
    }
    out
}

/// One line per option: name, type, default, description.
pub fn options(schema: &Value) -> String {
    let mut out = String::new();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return "  (none)\n".into();
    };
    for (name, prop) in props {
        let prop = resolve(schema, prop);
        let kind = prop
            .get("type")
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| t.to_string())
            })
            .or_else(|| prop.get("enum").map(|e| format!("one of {e}")))
            .or_else(|| prop.get("oneOf").map(|_| "choice".into()))
            .unwrap_or_else(|| "value".into());
        let default = prop
            .get("default")
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        let description = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('\n', " ");
        let _ = writeln!(
            out,
            "  {} ({}{})\n      {}",
            safe(name),
            safe(kind),
            safe(default),
            safe(description)
        );
    }
    out
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
    {
        Some(target) => target,
        None => node,
    }
}
