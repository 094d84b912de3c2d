//! What OpenFactory does for a caller, whoever the caller is and however it
//! arrives: the MCP tools (`openfactory-mcp`) and the web console
//! (`openfactory-web`) are two front ends on these functions.
//!
//! Each operation takes the shared [`App`] and the calling owner, and returns
//! a serialisable answer or a message that names the field and the fix. Every
//! lookup of an owner's recipes, builds, VMs and test runs goes through the
//! owner-scoped store, so another owner's things answer exactly like missing
//! ones. Nothing here knows JSON-RPC, HTML or an HTTP framework.

pub mod app;
pub mod auth;
pub mod builds;
pub mod links;
pub mod metrics;
pub mod owner;
pub mod recipes;
pub mod test_runs;
pub mod vms;

pub use app::{App, store_error};
pub use owner::OwnerPolicy;
