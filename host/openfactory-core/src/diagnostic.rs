//! Diagnostics: what validation and planning report.
//!
//! Every check in OpenFactory reports problems as [`Diagnostic`]s and keeps
//! going, so a caller sees every problem at once, never just the first.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, located by a field path such as `features[2].options.port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable, machine-readable code: `recipe.unknown-field`, `docker.unknown-user`.
    pub code: String,
    /// Field path from the recipe root (`packages[3]`); empty for the whole recipe.
    pub path: String,
    pub message: String,
    /// How to fix it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The plugin that wrote this diagnostic, when a plugin did: its text is
    /// the plugin's, not OpenFactory's (bounded and escaped by the planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: code.to_owned(),
            path: path.into(),
            message: message.into(),
            suggestion: None,
            plugin: None,
        }
    }

    pub fn warning(code: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, path, message)
        }
    }

    pub fn suggest(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }

    pub fn maybe_suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion.or(self.suggestion);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = if self.path.is_empty() {
            "(recipe)"
        } else {
            &self.path
        };
        write!(f, "{severity}[{}] {path}: {}", self.code, self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, " (hint: {suggestion})")?;
        }
        if let Some(plugin) = &self.plugin {
            // The words above are the plugin's, not OpenFactory's.
            write!(f, " (from plugin `{plugin}`)")?;
        }
        Ok(())
    }
}

/// A collection of diagnostics, errors and warnings together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Diagnostics(Vec::new())
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn extend(&mut self, diagnostics: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(diagnostics);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }

    /// Errors first, then by path, keeping the order of equal paths.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then_with(|| a.path.cmp(&b.path))
        });
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<T: IntoIterator<Item = Diagnostic>>(iter: T) -> Self {
        Diagnostics(iter.into_iter().collect())
    }
}

/// Build field paths: `Path::root().field("features").index(2)` → `features[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Path(String::new())
    }

    /// A plain name (letters, digits, `_ - / : @`) as `.name`; any other key, the
    /// empty one included, quoted as `["a key"]`, so a path always says where.
    pub fn field(&self, name: &str) -> Self {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/:@".contains(c));
        if !plain {
            let quoted = serde_json::to_string(name).expect("a string serialises");
            Path(format!("{}[{quoted}]", self.0))
        } else if self.0.is_empty() {
            Path(name.to_owned())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `features[2]` joined with `options.port` → `features[2].options.port`.
    pub fn join(&self, rel: &Path) -> Path {
        if self.0.is_empty() {
            rel.clone()
        } else if rel.0.is_empty() {
            self.clone()
        } else if rel.0.starts_with('[') {
            Path(format!("{}{}", self.0, rel.0))
        } else {
            Path(format!("{}.{}", self.0, rel.0))
        }
    }

    /// The path cut to a readable length: paths can hold user-chosen keys.
    pub fn bounded(self) -> Path {
        if self.0.len() <= 256 {
            self
        } else {
            Path(crate::rules::truncate(&self.0, 256))
        }
    }

    /// A path given as text, e.g. by a plugin.
    pub fn parse(text: &str) -> Path {
        Path(text.to_owned())
    }

    /// Convert a JSON pointer (`/features/2/options/port`) to a field path.
    pub fn from_json_pointer(pointer: &str) -> Self {
        let mut path = Path::root();
        for segment in pointer.split('/').skip(1) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            path = match segment.parse::<usize>() {
                Ok(i) => path.index(i),
                Err(_) => path.field(&segment),
            };
        }
        path
    }
}

impl From<Path> for String {
    fn from(path: Path) -> String {
        path.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The closest candidate to `input`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input_lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::jaro_winkler(&input_lower, &c.to_ascii_lowercase()),
            )
        })
        .filter(|(c, score)| {
            *score >= 0.8 || c.contains(input_lower.as_str()) && input_lower.len() >= 3
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointer_becomes_field_path() {
        assert_eq!(
            Path::from_json_pointer("/features/2/options/port").as_str(),
            "features[2].options.port"
        );
        assert_eq!(Path::from_json_pointer("").as_str(), "");
        // Keys that are not plain names are quoted; the empty key too.
        assert_eq!(Path::root().field("").as_str(), "[\"\"]");
        assert_eq!(
            Path::root().field("options").field("a.b c").as_str(),
            "options[\"a.b c\"]"
        );
        assert_eq!(Path::from_json_pointer("/a~1b").as_str(), "a/b");
    }

    #[test]
    fn a_plugins_words_say_whose_they_are_wherever_they_are_shown() {
        let mut d = Diagnostic::error(
            "docker.unknown-user",
            "features[0].options.users[0]",
            "no such user",
        );
        assert!(!d.to_string().contains("from plugin"), "{d}");
        d.plugin = Some("docker".into());
        assert!(d.to_string().ends_with(" (from plugin `docker`)"), "{d}");
    }

    #[test]
    fn suggestions_find_typos_and_ignore_noise() {
        let features = ["ssh", "docker", "monitoring", "firewall"];
        assert_eq!(did_you_mean("monitorng", features), Some("monitoring"));
        assert_eq!(did_you_mean("Docker", features), Some("docker"));
        assert_eq!(did_you_mean("kubernetes", features), None);
    }

    #[test]
    fn errors_sort_before_warnings() {
        let mut d: Diagnostics = [
            Diagnostic::warning("w", "a", "w"),
            Diagnostic::error("e", "b", "e"),
        ]
        .into_iter()
        .collect();
        d.sort();
        assert!(d.iter().next().unwrap().is_error());
        assert_eq!(d.errors().count(), 1);
        assert_eq!(d.warnings().count(), 1);
    }
}
