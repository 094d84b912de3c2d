//! What OpenFactory does for a caller, whoever the caller is and however it
//! arrives: the MCP tools (`openfactory-mcp`) and the web console
//! (`openfactory-web`) are two front ends on these functions.
//!
//! Each operation takes the shared [`App`] (or, where another caller such
//! as the CLI needs it without plugins or a VM backend, only the parts of it
//! it uses: the store, the signer…), the calling owner and typed ids
//! ([`ids`]), and returns a serialisable answer or an [`Error`]: its kind
//! (what a front end maps to a status), a message that names the field and
//! the fix, and the operation that helps ([`Action`]), which each front end
//! words its own way: no message here names an MCP tool or a page. Every
//! lookup of an owner's recipes, builds, VMs and test runs goes through the
//! owner-scoped store, so another owner's things answer exactly like missing
//! ones. Nothing here knows JSON-RPC, HTML or an HTTP framework.

pub mod app;
pub mod auth;
pub mod builds;
pub mod error;
pub mod ids;
pub mod links;
pub mod metrics;
pub mod next;
pub mod owner;
pub mod recipes;
pub mod schema;
pub mod test_runs;
pub mod throttle;
pub mod vms;
pub mod workers;

pub use app::{App, Planner, Settings, Vms, Wake};
pub use error::{Error, ErrorKind, Result};
pub use ids::{BuildId, RecipeId, RunId, VmName};
pub use next::{Action, Next};
pub use owner::{Anonymous, OwnerPolicy};
