//! The pure planning core of OpenFactory.
//!
//! recipe text → [`validate`] (syntax, structure, field rules) → [`plan`]
//! (features, their plugins through [`plan::FeatureSet`], ordering) → a
//! [`plan::Plan`] of typed [`step::Step`]s and boot checks.
//!
//! Nothing here runs a process, opens a socket, or needs root: the build,
//! VM and test executors consume plans at the edges.

pub mod capability;
pub mod catalog;
pub mod diagnostic;
pub mod digest;
pub mod plan;
pub mod proof;
pub mod recipe;
pub mod rules;
pub mod schema;
pub mod step;
pub mod system;
pub mod validate;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use digest::RecipeDigest;
pub use plan::{Feature, FeatureInfo, FeatureSet, Outcome, Plan};
pub use recipe::{BaseImage, Recipe};
