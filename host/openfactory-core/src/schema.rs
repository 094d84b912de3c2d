//! JSON Schema checks that report diagnostics with field paths.
//!
//! Used for the recipe's structure (its schema is derived from the Rust types)
//! and for each feature's options (the plugin's own schema). Messages never
//! echo the offending value, so a hostile 1 MB string does not come back.
//!
//! A plugin's schema is evaluated by the host, outside the sandbox, so its work
//! is bounded here ([`bounds`]): at compile, on the document (a refusal refuses
//! the bundle), and at each check, on the work for that instance.

mod bounds;

use jsonschema::ValidationError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

pub use bounds::{
    MAX_CHECK_STEPS, MAX_EXPANSION, MAX_EXPLAIN_STEPS, MAX_INSTANCE_DEPTH, MAX_PATTERN_SIZE,
    MAX_PATTERNS, MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH,
};

use crate::diagnostic::{Diagnostic, Path, did_you_mean};

/// A compiled schema.
pub struct Schema {
    document: Value,
    validator: jsonschema::Validator,
    /// What checking costs, for the per-check budget.
    graph: bounds::Graph,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

impl Schema {
    /// Compile a schema document; `Err` carries why it is not a usable schema,
    /// or which of the host's bounds it exceeds (see [`bounds`]), in one
    /// sentence.
    ///
    /// Nothing is ever fetched: every `$ref` must be local (checked first),
    /// and the validator's retriever is offline besides, whatever features
    /// the `jsonschema` crate is built with. Patterns run on the linear-time
    /// `regex` engine (no look-around, no back-references), each at most
    /// [`MAX_PATTERN_SIZE`] bytes compiled.
    pub fn compile(document: Value) -> Result<Self, String> {
        let graph = bounds::Graph::of(&document)?;
        let patterns = jsonschema::PatternOptions::regex().size_limit(MAX_PATTERN_SIZE);
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(patterns)
            .build(&document)
            .map_err(|e| compile_error(&e))?;
        Ok(Schema {
            document,
            validator,
            graph,
        })
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Every violation of `instance`, as errors at `base` + the instance path.
    /// `code` namespaces the diagnostic codes (`recipe`, `options`).
    ///
    /// The work is bounded first ([`MAX_CHECK_STEPS`], [`MAX_INSTANCE_DEPTH`]):
    /// an instance beyond it gets one error and is not validated. The
    /// validator holds every error in memory at once, so a check that costs
    /// more than [`MAX_EXPLAIN_STEPS`] reports only its first problem, and
    /// one whose first problem could itself carry that many errors (under
    /// `anyOf`/`oneOf`, whose failure keeps every alternative's) only that
    /// it does not match.
    pub fn check(&self, instance: &Value, base: &Path, code: &str) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        match self.graph.cost(instance) {
            Err(exceeded) => out.push(Diagnostic::error(
                &format!("{code}.{}", exceeded.slug()),
                base.clone().bounded(),
                exceeded.message(),
            )),
            Ok(cost) if cost.steps <= MAX_EXPLAIN_STEPS => {
                for error in self.validator.iter_errors(instance) {
                    self.explain(&error, instance, base, code, &mut out);
                }
            }
            Ok(cost) if cost.chosen <= MAX_EXPLAIN_STEPS => {
                if let Err(error) = self.validator.validate(instance) {
                    self.explain(&error, instance, base, code, &mut out);
                }
            }
            Ok(_) if self.validator.is_valid(instance) => {}
            Ok(_) => out.push(Diagnostic::error(
                &format!("{code}.invalid"),
                base.clone().bounded(),
                format!(
                    "does not match its schema, and is too large for the problem to be \
                     located (more than {MAX_EXPLAIN_STEPS} steps to explain); check a smaller part"
                ),
            )),
        }
        out
    }

    /// The diagnostics for one validation error.
    fn explain(
        &self,
        error: &ValidationError<'_>,
        instance: &Value,
        base: &Path,
        code: &str,
        out: &mut Vec<Diagnostic>,
    ) {
        let pointer = error.instance_path().to_string();
        let rel = Path::from_json_pointer(&pointer);
        let path = base.join(&rel).bounded();
        let value = instance.pointer(&pointer);
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = self.property_names(&pointer, instance);
                for field in unexpected {
                    let at = path.field(&crate::rules::truncate(field, 64));
                    let hint = did_you_mean(field, known.iter().map(String::as_str))
                        .map(|m| format!("did you mean `{m}`?"))
                        .or_else(|| {
                            (!known.is_empty())
                                .then(|| format!("known fields: {}", known.join(", ")))
                        });
                    out.push(
                        Diagnostic::error(
                            &format!("{code}.unknown-field"),
                            at,
                            format!("unknown field `{}`", crate::rules::truncate(field, 64)),
                        )
                        .maybe_suggest(hint),
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let field = property.as_str().unwrap_or("?");
                out.push(Diagnostic::error(
                    &format!("{code}.missing-field"),
                    path.field(field),
                    format!("missing required field `{field}`"),
                ));
            }
            ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => {
                let allowed = self.allowed_values(&pointer, instance);
                let message = if allowed.is_empty() {
                    "does not match any of the accepted forms (see the schema)".to_owned()
                } else {
                    format!("must be one of {}", allowed.join(", "))
                };
                out.push(Diagnostic::error(
                    &format!("{code}.not-allowed"),
                    path,
                    message,
                ));
            }
            kind => out.push(Diagnostic::error(
                &format!("{code}.{}", slug(kind)),
                path,
                message(kind, value),
            )),
        }
    }

    /// The schema node that governs the instance at `pointer`, resolved.
    fn node_at(&self, pointer: &str, instance: &Value) -> Option<&Value> {
        let mut node = &self.document;
        let mut current = instance;
        for segment in pointer.split('/').skip(1) {
            node = self.resolve(node);
            let next_instance = match current {
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Object(map) => map.get(segment),
                _ => None,
            }?;
            let next_schema = match current {
                Value::Array(_) => node.get("items"),
                _ => node
                    .get("properties")
                    .and_then(|p| p.get(segment))
                    .or_else(|| node.get("additionalProperties")),
            }?;
            node = next_schema;
            current = next_instance;
        }
        Some(self.resolve(node))
    }

    /// Property names the schema allows for the object at `pointer`.
    fn property_names(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let mut names: Vec<String> = self
            .node_at(pointer, instance)
            .and_then(|n| n.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The values a choice at `pointer` accepts (`enum`, or `oneOf`/`anyOf` of consts).
    fn allowed_values(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let Some(node) = self.node_at(pointer, instance) else {
            return Vec::new();
        };
        let show = |v: &Value| {
            v.as_str()
                .map(|s| format!("`{s}`"))
                .unwrap_or_else(|| v.to_string())
        };
        if let Some(values) = node.get("enum").and_then(Value::as_array) {
            return values.iter().map(show).collect();
        }
        let alternatives = node
            .get("oneOf")
            .or_else(|| node.get("anyOf"))
            .and_then(Value::as_array);
        let mut out = Vec::new();
        for alt in alternatives.into_iter().flatten() {
            let alt = self.resolve(alt);
            if let Some(c) = alt.get("const") {
                out.push(show(c));
            } else if let Some(values) = alt.get("enum").and_then(Value::as_array) {
                out.extend(values.iter().map(show));
            } else if alt.get("type") == Some(&Value::from("null")) {
                out.push("null".into());
            }
        }
        out
    }

    /// Follow a local `$ref` (`#/$defs/User`), and one level of `anyOf` with a null
    /// alternative (how schemars writes `Option<T>`).
    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        for _ in 0..8 {
            if let Some(r) = node.get("$ref").and_then(Value::as_str) {
                match r.strip_prefix('#').and_then(|p| self.document.pointer(p)) {
                    Some(target) => node = target,
                    None => break,
                }
            } else if let Some(alts) = node.get("anyOf").and_then(Value::as_array) {
                match alts
                    .iter()
                    .find(|a| a.get("type") != Some(&Value::from("null")))
                {
                    Some(a) => node = a,
                    None => break,
                }
            } else {
                break;
            }
        }
        node
    }
}

/// The validator's refusal of a schema, with a hint where its own message
/// does not say why (a pattern beyond the `regex` engine or its size limit).
fn compile_error(error: &ValidationError<'_>) -> String {
    let text = error.to_string();
    if text.ends_with("is not a \"regex\"") {
        format!(
            "{text}: patterns must be regular expressions without look-around or \
             back-references, at most {MAX_PATTERN_SIZE} bytes once compiled"
        )
    } else {
        text
    }
}

fn slug(kind: &ValidationErrorKind) -> &'static str {
    match kind {
        ValidationErrorKind::Type { .. } => "wrong-type",
        ValidationErrorKind::Required { .. } => "missing-field",
        ValidationErrorKind::Enum { .. } | ValidationErrorKind::Constant { .. } => "not-allowed",
        ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. }
        | ValidationErrorKind::MultipleOf { .. } => "out-of-range",
        ValidationErrorKind::MinLength { .. }
        | ValidationErrorKind::MaxLength { .. }
        | ValidationErrorKind::MinItems { .. }
        | ValidationErrorKind::MaxItems { .. }
        | ValidationErrorKind::MinProperties { .. }
        | ValidationErrorKind::MaxProperties { .. } => "size",
        ValidationErrorKind::Pattern { .. } | ValidationErrorKind::Format { .. } => "format",
        ValidationErrorKind::UniqueItems => "duplicate",
        _ => "invalid",
    }
}

fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "an integer",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

fn message(kind: &ValidationErrorKind, value: Option<&Value>) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("expected {expected}, found {}", type_name(value))
        }
        ValidationErrorKind::Required { property } => {
            format!(
                "missing required field `{}`",
                property.as_str().unwrap_or("?")
            )
        }
        ValidationErrorKind::Enum { options } => {
            let list: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .map(|s| format!("`{s}`"))
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("must be one of {}", list.join(", "))
        }
        ValidationErrorKind::Constant { expected_value } => format!("must be {expected_value}"),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
        ValidationErrorKind::Pattern { pattern } => {
            format!("does not match the required format `{pattern}`")
        }
        ValidationErrorKind::Format { format } => format!("is not a valid {format}"),
        ValidationErrorKind::UniqueItems => "has duplicate items".into(),
        ValidationErrorKind::MultipleOf { .. } => "is not a multiple of the required step".into(),
        _ => "is not accepted here (see the schema)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options_schema() -> Schema {
        Schema::compile(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "driver": {"enum": ["overlay2", "vfs"]},
                "mode": {"oneOf": [{"const": "fast", "description": "Fast."}, {"const": "safe"}]},
            }
        }))
        .unwrap()
    }

    #[test]
    fn every_violation_is_reported_with_its_path() {
        let base = Path::root().field("features").index(2).field("options");
        let diags = options_schema().check(
            &json!({"port": 70000, "driver": "zfs", "prot": 1}),
            &base,
            "options",
        );
        let mut got: Vec<(String, String)> = diags
            .iter()
            .map(|d| (d.path.clone(), d.code.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (
                    "features[2].options.driver".into(),
                    "options.not-allowed".into()
                ),
                (
                    "features[2].options.port".into(),
                    "options.out-of-range".into()
                ),
                (
                    "features[2].options.prot".into(),
                    "options.unknown-field".into()
                ),
            ]
        );
        let unknown = diags
            .iter()
            .find(|d| d.code == "options.unknown-field")
            .unwrap();
        assert_eq!(unknown.suggestion.as_deref(), Some("did you mean `port`?"));
    }

    #[test]
    fn choices_list_their_values() {
        let diags = options_schema().check(&json!({"mode": "slow"}), &Path::root(), "options");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].path, "mode");
        assert_eq!(diags[0].message, "must be one of `fast`, `safe`");
    }

    #[test]
    fn huge_unknown_keys_are_cut_in_paths() {
        let key = "k".repeat(50_000);
        let diags = options_schema().check(&json!({ key: 1 }), &Path::root(), "options");
        assert_eq!(diags.len(), 1);
        assert!(diags[0].path.len() < 300 && diags[0].message.len() < 300);
    }

    #[test]
    fn messages_do_not_echo_huge_values() {
        let huge = "x".repeat(100_000);
        let diags = options_schema().check(&json!({"port": huge}), &Path::root(), "options");
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.len() < 200, "{}", diags[0].message);
    }
}
