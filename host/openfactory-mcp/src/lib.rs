//! OpenFactory's MCP server.
//!
//! Only this crate knows JSON-RPC and MCP. It serves the operations of
//! `openfactory-service` as MCP tools over three transports: legacy HTTP+SSE
//! (`/api/mcp/sse` + `/api/mcp/messages`) and Streamable HTTP (`/api/mcp`),
//! each also under `/api/mcp/account` for signed-in callers only,
//! whose routes [`router`] gives to the HTTP server (`openfactory-server`,
//! which puts them behind its Host check, rate limits and API keys); and
//! stdio, which [`serve_stdio`] serves.

pub mod complete;
pub mod events;
pub mod http;
pub mod jsonrpc;
pub mod prompts;
pub mod resources;
pub mod sse;
pub mod stdio;
pub mod tools;
pub mod watch;
pub mod wording;

pub use http::{
    ACCOUNT_PATH, MAX_MESSAGE, RESOURCE_PATHS, rate_limited, refusal, refused, requires_account,
    resource_path, router,
};
pub use stdio::serve_stdio;
