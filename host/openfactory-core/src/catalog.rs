//! The template catalog: `recipes/<category>/<template>.toml`, with category
//! descriptions in `recipes/categories.toml`.
//!
//! A template's id is its file stem, unique across the catalog, and equal to
//! the recipe's `name`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::proof::{self, Proofs};
use crate::recipe::Recipe;
use crate::validate::{Format, check_text};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Category {
    pub name: String,
    pub title: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Template {
    /// The template id, e.g. `gxp-medtech`.
    pub id: String,
    pub category: String,
    pub recipe: Recipe,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub categories: Vec<Category>,
    pub templates: Vec<Template>,
    /// Each template's last catalog run ([`crate::proof`]).
    pub proofs: Proofs,
}

/// Something wrong in the catalog's files.
#[derive(Debug, Clone)]
pub struct Problem {
    pub file: PathBuf,
    pub diagnostic: Diagnostic,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.diagnostic)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    title: String,
    description: String,
}

impl Catalog {
    /// Load every template below `dir`. Problems are returned next to what
    /// did load, so one broken file does not hide the rest.
    pub fn load(dir: &Path) -> (Catalog, Vec<Problem>) {
        let mut problems = Vec::new();
        fn problem_at(problems: &mut Vec<Problem>, file: &Path, code: &str, message: String) {
            problems.push(Problem {
                file: file.to_owned(),
                diagnostic: Diagnostic::error(code, "", message),
            });
        }
        macro_rules! problem {
            ($file:expr, $code:expr, $msg:expr) => {
                problem_at(&mut problems, $file, $code, $msg)
            };
        }
        let index = dir.join("categories.toml");
        let categories: BTreeMap<String, CategoryFile> = match std::fs::read_to_string(&index) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                problem!(
                    &index,
                    "catalog.categories",
                    format!("cannot parse: {}", e.message())
                );
                BTreeMap::new()
            }),
            Err(e) => {
                problem!(&index, "catalog.categories", format!("cannot read: {e}"));
                BTreeMap::new()
            }
        };
        let mut catalog = Catalog {
            categories: categories
                .into_iter()
                .map(|(name, c)| Category {
                    name,
                    title: c.title,
                    description: c.description,
                })
                .collect(),
            templates: Vec::new(),
            proofs: Proofs::default(),
        };
        let proofs_file = dir.join(proof::FILE);
        match std::fs::read_to_string(&proofs_file) {
            Ok(text) => match Proofs::parse(&text) {
                Ok(proofs) => catalog.proofs = proofs,
                Err(e) => problem!(&proofs_file, "catalog.proofs", e),
            },
            // No catalog run recorded yet: every template is unproven.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problem!(&proofs_file, "catalog.proofs", format!("cannot read: {e}")),
        }

        let mut files: Vec<PathBuf> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir()
                    && let Ok(inner) = std::fs::read_dir(&path)
                {
                    let toml = |p: &PathBuf| p.extension().is_some_and(|e| e == "toml");
                    files.extend(inner.flatten().map(|e| e.path()).filter(toml));
                }
            }
        }
        files.sort();

        let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            let category = file
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let id = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            if !catalog.categories.iter().any(|c| c.name == category) {
                problem!(
                    &file,
                    "catalog.unknown-category",
                    format!("category `{category}` is not described in categories.toml")
                );
            }
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problem!(&file, "catalog.read", format!("cannot read: {e}"));
                    continue;
                }
            };
            let checked = check_text(&text, Format::Toml);
            let mut ok = true;
            for d in checked.diagnostics.errors() {
                ok = false;
                problems.push(Problem {
                    file: file.clone(),
                    diagnostic: d.clone(),
                });
            }
            let Some(recipe) = checked.recipe.filter(|_| ok) else {
                continue;
            };
            if recipe.name != id {
                problem!(
                    &file,
                    "catalog.name",
                    format!(
                        "the recipe is named `{}` but the file is `{id}.toml`; they must match",
                        recipe.name
                    )
                );
                continue;
            }
            if recipe.description.trim().is_empty() {
                problem!(
                    &file,
                    "catalog.description",
                    "templates need a description".into()
                );
            }
            if let Some(other) = ids.insert(id.clone(), file.clone()) {
                problem!(
                    &file,
                    "catalog.duplicate-id",
                    format!("template id `{id}` is also used by {}", other.display())
                );
                continue;
            }
            catalog.templates.push(Template {
                id,
                category,
                recipe,
            });
        }
        for id in catalog.proofs.templates.keys() {
            if catalog.template(id).is_none() {
                problem!(
                    &proofs_file,
                    "catalog.stale-proof",
                    format!("`{id}` is no template; run `cargo xtask catalog` to rewrite the file")
                );
            }
        }
        (catalog, problems)
    }

    pub fn template(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }

    pub fn count(&self, category: &str) -> usize {
        self.templates
            .iter()
            .filter(|t| t.category == category)
            .count()
    }

    /// Templates in `category` (if given) matching every word of `query`.
    pub fn search(&self, category: Option<&str>, query: Option<&str>) -> Vec<&Template> {
        self.templates
            .iter()
            .filter(|t| t.matches(category, query))
            .collect()
    }
}

impl Template {
    /// Whether the template is in `category` (if given) and every word of
    /// `query` appears in its name, description, category, tags, packages or
    /// features (case-insensitive).
    pub fn matches(&self, category: Option<&str>, query: Option<&str>) -> bool {
        if category.is_some_and(|c| !self.category.eq_ignore_ascii_case(c)) {
            return false;
        }
        let r = &self.recipe;
        let haystack: Vec<String> = [
            r.name.as_str(),
            r.description.as_str(),
            self.category.as_str(),
        ]
        .into_iter()
        .chain(r.tags.iter().map(String::as_str))
        .chain(r.packages.iter().map(String::as_str))
        .chain(r.features.iter().map(|f| f.name.as_str()))
        .map(str::to_lowercase)
        .collect();
        query
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .all(|w| haystack.iter().any(|h| h.contains(w.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn loads_searches_and_reports_problems() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "categories.toml",
            "[server]\ntitle = \"Servers\"\ndescription = \"General servers\"\n",
        );
        write(
            dir.path(),
            "server/web.toml",
            "name = \"web\"\ndescription = \"An nginx box\"\ntags = [\"http\"]\nbase_image = \"debian-bookworm\"\npackages = [\"nginx\"]\nfeatures = [\"ssh\"]\n",
        );
        write(
            dir.path(),
            "server/broken.toml",
            "name = \"other\"\nbase_image = \"debian-bookworm\"\ndescription = \"x\"\n",
        );
        write(
            dir.path(),
            "misc/orphan.toml",
            "name = \"orphan\"\nbase_image = \"debian-bookworm\"\ndescription = \"x\"\n",
        );
        let (catalog, problems) = Catalog::load(dir.path());
        let codes: Vec<&str> = problems
            .iter()
            .map(|p| p.diagnostic.code.as_str())
            .collect();
        assert!(codes.contains(&"catalog.name"), "{codes:?}");
        assert!(codes.contains(&"catalog.unknown-category"), "{codes:?}");
        assert_eq!(catalog.count("server"), 1);
        assert_eq!(catalog.search(None, Some("NGINX")).len(), 1);
        assert_eq!(catalog.search(None, Some("ssh http")).len(), 1);
        assert_eq!(catalog.search(Some("server"), Some("postgres")).len(), 0);
        assert!(catalog.template("web").is_some());
    }
}
