//! Recipe digests: content addresses of what a recipe builds.
//!
//! A recipe's digest is the SHA-256 of its canonical form together with the
//! digests of the plugins that plan it: the same inputs always give the same
//! digest, and a new plugin build gives a new one. (A recipe's *id* is
//! something else: the name a caller refers to it by.) The canonical form is the
//! typed recipe with defaults applied (so `"ssh"` and `{name = "ssh"}` are the
//! same), object keys sorted, and without `description` and `tags`, which
//! describe an image but do not change it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::recipe::Recipe;

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct RecipeDigest(String);

impl RecipeDigest {
    /// `plugins`: `(feature name, sha256 of its component)` for every feature the recipe uses.
    pub fn compute<'a>(
        recipe: &Recipe,
        plugins: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> RecipeDigest {
        let mut value = serde_json::to_value(recipe).expect("a recipe serialises");
        if let Value::Object(map) = &mut value {
            map.remove("description");
            map.remove("tags");
        }
        let mut plugins: Vec<_> = plugins.into_iter().collect();
        plugins.sort();
        let mut hasher = Sha256::new();
        hasher.update(b"openfactory-recipe-v1\n");
        hasher.update(canonical_json(&value).as_bytes());
        for (name, digest) in plugins {
            hasher.update(format!("\nplugin {name} {digest}").as_bytes());
        }
        RecipeDigest(hex::encode(hasher.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for RecipeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// JSON with object keys sorted and no insignificant white space.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Format, check_text};

    fn recipe(text: &str) -> Recipe {
        check_text(text, Format::Toml).recipe.unwrap()
    }

    #[test]
    fn same_inputs_same_id_and_metadata_does_not_count() {
        let a = recipe(
            "name = \"a1\"\nbase_image = \"debian-bookworm\"\nfeatures = [\"ssh\"]\ndescription = \"one\"\n",
        );
        let b = recipe(
            "base_image = \"debian-bookworm\"\nname = \"a1\"\nfeatures = [{ name = \"ssh\", options = {} }]\ntags = [\"x\"]\n",
        );
        let plugins = [("ssh", "abc")];
        assert_eq!(
            RecipeDigest::compute(&a, plugins),
            RecipeDigest::compute(&b, plugins)
        );
        assert_eq!(RecipeDigest::compute(&a, plugins).as_str().len(), 64);
    }

    #[test]
    fn content_and_plugin_digests_change_the_id() {
        let a = recipe("name = \"a1\"\nbase_image = \"debian-bookworm\"\n");
        let b = recipe("name = \"a1\"\nbase_image = \"debian-trixie\"\n");
        assert_ne!(RecipeDigest::compute(&a, []), RecipeDigest::compute(&b, []));
        assert_ne!(
            RecipeDigest::compute(&a, [("ssh", "1")]),
            RecipeDigest::compute(&a, [("ssh", "2")])
        );
    }

    #[test]
    fn canonical_json_sorts_keys_deeply() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }
}
