//! Write an OpenFactory feature plugin.
//!
//! A feature plugin is a WebAssembly component (`wasm32-wasip2`) that turns
//! one recipe feature into typed build steps and boot checks. With this crate
//! a plugin is one type implementing [`Feature`] and one [`export_feature!`]:
//!
//! ```ignore
//! use openfactory_plugin_sdk::prelude::*;
//!
//! #[derive(Default, Deserialize, JsonSchema)]
//! #[serde(default, deny_unknown_fields)]
//! pub struct Options {
//!     /// Extra greeting written to /etc/motd.
//!     greeting: String,
//! }
//!
//! struct Motd;
//!
//! impl Feature for Motd {
//!     type Options = Options;
//!     fn info() -> Info {
//!         Info::new("motd", env!("CARGO_PKG_VERSION"), "A message of the day", "system")
//!     }
//!     fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
//!         Ok(vec![step::write_file("/etc/motd", &ctx.options.greeting)])
//!     }
//! }
//!
//! export_feature!(Motd);
//! ```
//!
//! The options schema comes from the `Options` type (through `schemars`), so
//! the host rejects bad options with field paths before the plugin runs.

pub mod recipe;
pub mod step;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "openfactory:feature/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "openfactory_plugin_sdk::bindings",
    });
}

use bindings::exports::openfactory::feature::feature as wit;
pub use bindings::openfactory::feature::host::{Level, log};
pub use bindings::openfactory::feature::types::{
    AptSource, BootCheck, CheckKind, Command, Diagnostic, File, Group, Port, Protocol, Severity,
    Step, Sysctl, User,
};
pub use recipe::RecipeView;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::recipe::RecipeView;
    pub use crate::step::{self, check};
    pub use crate::{
        BootCheck, CheckKind, Context, Diagnostic, Feature, Info, Port, Protocol, Severity, Step,
        diag, export_feature,
    };
    pub use schemars::JsonSchema;
    pub use serde::Deserialize;
}

/// The static description of a feature.
#[derive(Debug, Clone)]
pub struct Info {
    pub name: &'static str,
    pub version: &'static str,
    pub summary: &'static str,
    pub category: &'static str,
    /// Top-level recipe fields the plugin reads (`users`, `security`, `networking`, …).
    pub reads: &'static [&'static str],
    pub requires: &'static [&'static str],
    pub conflicts: &'static [&'static str],
}

impl Info {
    pub const fn new(
        name: &'static str,
        version: &'static str,
        summary: &'static str,
        category: &'static str,
    ) -> Self {
        Info {
            name,
            version,
            summary,
            category,
            reads: &[],
            requires: &[],
            conflicts: &[],
        }
    }
    pub const fn reads(mut self, fields: &'static [&'static str]) -> Self {
        self.reads = fields;
        self
    }
    pub const fn requires(mut self, features: &'static [&'static str]) -> Self {
        self.requires = features;
        self
    }
    pub const fn conflicts(mut self, features: &'static [&'static str]) -> Self {
        self.conflicts = features;
        self
    }
}

/// The recipe and options as the plugin sees them.
pub struct Context<O> {
    pub recipe: RecipeView,
    pub options: O,
}

/// A feature plugin.
pub trait Feature {
    /// The feature's options. Its JSON Schema is what the host validates
    /// against; use `#[serde(default, deny_unknown_fields)]` and doc comments.
    type Options: serde::de::DeserializeOwned + schemars::JsonSchema;

    fn info() -> Info;

    /// Problems beyond what the options schema catches. Report every one.
    fn validate(_ctx: &Context<Self::Options>) -> Vec<Diagnostic> {
        Vec::new()
    }

    /// The ordered build steps. Called only when [`Feature::validate`] found
    /// no error, so it may rely on everything `validate` checks.
    fn plan(ctx: &Context<Self::Options>) -> Result<Vec<Step>, Vec<Diagnostic>>;

    /// Boot checks that prove the feature works in a booted image.
    fn checks(_ctx: &Context<Self::Options>) -> Vec<BootCheck> {
        Vec::new()
    }
}

/// Build diagnostics tersely: `diag::error("ssh.port", "options.port", "…")`.
pub mod diag {
    use super::{Diagnostic, Severity};

    pub fn error(code: &str, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code: code.into(),
            path: path.into(),
            message: message.into(),
            suggestion: None,
        }
    }

    pub fn warning(code: &str, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..error(code, path, message)
        }
    }

    /// The candidate within two edits of `input`, if any: for "did you mean".
    pub fn closest<'a>(
        input: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        candidates
            .into_iter()
            .map(|c| (distance(input, c), c))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, c)| c)
    }

    /// Levenshtein distance.
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }

    impl Diagnostic {
        pub fn suggest(mut self, suggestion: impl Into<String>) -> Self {
            self.suggestion = Some(suggestion.into());
            self
        }
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn describe<F: Feature>() -> wit::FeatureInfo {
        let info = F::info();
        let schema = schemars::schema_for!(F::Options);
        let strings = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        wit::FeatureInfo {
            name: info.name.into(),
            version: info.version.into(),
            summary: info.summary.into(),
            category: info.category.into(),
            options_schema: serde_json::to_string(&schema).expect("a schema serialises"),
            reads: strings(info.reads),
            requires: strings(info.requires),
            conflicts: strings(info.conflicts),
        }
    }

    fn context<F: Feature>(ctx: wit::PlanContext) -> Result<Context<F::Options>, Vec<Diagnostic>> {
        let recipe = serde_json::from_str(&ctx.recipe).map_err(|e| {
            vec![diag::error(
                "plugin.context",
                "",
                format!("the host sent a recipe this plugin cannot read: {e}"),
            )]
        })?;
        let options = serde_json::from_str(&ctx.options).map_err(|e| {
            vec![diag::error(
                "plugin.options",
                "options",
                format!("options not accepted: {e}"),
            )]
        })?;
        Ok(Context { recipe, options })
    }

    pub fn validate<F: Feature>(ctx: wit::PlanContext) -> Vec<Diagnostic> {
        match context::<F>(ctx) {
            Ok(ctx) => F::validate(&ctx),
            Err(diags) => diags,
        }
    }

    pub fn plan<F: Feature>(ctx: wit::PlanContext) -> Result<Vec<Step>, Vec<Diagnostic>> {
        // The host calls `plan` only after `validate` returned no error.
        F::plan(&context::<F>(ctx)?)
    }

    pub fn checks<F: Feature>(ctx: wit::PlanContext) -> Vec<BootCheck> {
        context::<F>(ctx)
            .map(|ctx| F::checks(&ctx))
            .unwrap_or_default()
    }
}

/// Export a [`Feature`] implementation as the component's `feature` interface.
#[macro_export]
macro_rules! export_feature {
    ($feature:ty) => {
        #[doc(hidden)]
        pub struct __OpenFactoryExport;

        impl $crate::bindings::exports::openfactory::feature::feature::Guest for __OpenFactoryExport {
            fn describe() -> $crate::bindings::exports::openfactory::feature::feature::FeatureInfo {
                $crate::__private::describe::<$feature>()
            }
            fn validate(
                ctx: $crate::bindings::exports::openfactory::feature::feature::PlanContext,
            ) -> ::std::vec::Vec<$crate::Diagnostic> {
                $crate::__private::validate::<$feature>(ctx)
            }
            fn plan(
                ctx: $crate::bindings::exports::openfactory::feature::feature::PlanContext,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::Step>, ::std::vec::Vec<$crate::Diagnostic>> {
                $crate::__private::plan::<$feature>(ctx)
            }
            fn checks(
                ctx: $crate::bindings::exports::openfactory::feature::feature::PlanContext,
            ) -> ::std::vec::Vec<$crate::BootCheck> {
                $crate::__private::checks::<$feature>(ctx)
            }
        }

        $crate::bindings::__export_plugin!(__OpenFactoryExport with_types_in $crate::bindings);
    };
}
