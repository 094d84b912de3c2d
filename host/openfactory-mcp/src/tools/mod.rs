//! The MCP tools, one module per area. Each tool is a thin wrapper: check its arguments
//! ([`args`]), resolve the caller, call `openfactory_service`, count the outcome. Tool errors
//! (`isError`) carry a message that names the field and the fix.

use std::sync::Arc;

use openfactory_store::OwnerId;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Json;
use rmcp::model::{Implementation, InitializeResult, ServerCapabilities};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool_handler};
use tracing::Instrument;

use openfactory_service::app::App;
use openfactory_service::owner::OwnerPolicy;

pub mod args;
mod builds;
mod recipes;
mod test_runs;
#[cfg(test)]
mod tests;
mod vms;
mod wait;

/// One MCP server instance. Legacy SSE and stdio sessions fix the owner when
/// they start; Streamable HTTP resolves it from each request.
#[derive(Clone)]
pub struct OpenFactoryServer {
    pub(crate) app: Arc<App>,
    policy: Arc<OwnerPolicy>,
    owner: Option<OwnerId>,
    tool_router: ToolRouter<OpenFactoryServer>,
}

pub(crate) type ToolResult<T> = Result<Json<T>, String>;

/// A service error as the tool error the caller reads. Every error from
/// `openfactory_service` goes through here: the one place to adapt when the
/// service's errors become typed.
pub(crate) use crate::wording::tool_error;

impl OpenFactoryServer {
    pub fn new(app: Arc<App>, policy: Arc<OwnerPolicy>, owner: Option<OwnerId>) -> Self {
        OpenFactoryServer {
            app,
            policy,
            owner,
            tool_router: Self::router(),
        }
    }

    /// Every tool, from each area's router.
    pub(crate) fn router() -> ToolRouter<Self> {
        Self::recipe_router() + Self::build_router() + Self::vm_router() + Self::test_run_router()
    }

    /// The caller: fixed for the session, or from the HTTP request.
    pub(crate) async fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<OwnerId, String> {
        let owner = match &self.owner {
            Some(owner) => owner.clone(),
            None => {
                let parts = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .ok_or("the transport did not identify the caller")?;
                crate::http::caller(
                    &self.policy,
                    parts.uri.path(),
                    &parts.extensions,
                    &parts.headers,
                )?
            }
        };
        openfactory_service::owner::touch(&self.app, &owner)
            .await
            .map_err(tool_error)?;
        Ok(owner)
    }

    /// Run a tool call in its own span, log its outcome and count it.
    pub(crate) async fn run<T>(
        &self,
        tool: &'static str,
        call: impl Future<Output = ToolResult<T>>,
    ) -> ToolResult<T> {
        let span = tracing::info_span!("tool", name = tool);
        let started = std::time::Instant::now();
        let result = call.instrument(span.clone()).await;
        self.app.metrics.tool(tool, result.is_ok());
        span.in_scope(|| match &result {
            Ok(_) => tracing::info!(elapsed_us = started.elapsed().as_micros() as u64, "tool call"),
            Err(e) => tracing::info!(elapsed_us = started.elapsed().as_micros() as u64, error = %e, "tool call failed"),
        });
        result
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OpenFactoryServer {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
            .with_server_info(Implementation::new("openfactory", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "OpenFactory builds bootable Debian images from recipes. Browse with list_recipe_categories and \
                 list_recipes, inspect with get_recipe and list_features, check with validate_recipe and plan_recipe, \
                 customise a template with create_recipe_from_template, then build with create_build and follow it with \
                 get_build_status (wait_seconds) until get_iso_download_url gives the ISO.",
            )
    }

    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, rmcp::ErrorData> {
        let mut log = rmcp::model::ResourceTemplate::new("build://{build_id}/log", "build-log");
        log.title = Some("Build log".into());
        log.description = Some("The full log of one of your builds.".into());
        log.mime_type = Some("text/plain".into());
        Ok(rmcp::model::ListResourceTemplatesResult::with_all_items(
            vec![log],
        ))
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, rmcp::ErrorData> {
        let not_found = |message: String| rmcp::ErrorData::resource_not_found(message, None);
        let Some(id) = request
            .uri
            .strip_prefix("build://")
            .and_then(|rest| rest.strip_suffix("/log"))
        else {
            return Err(not_found(format!(
                "unknown resource `{}`; the server has build://{{build_id}}/log",
                openfactory_core::rules::truncate(&request.uri, 100)
            )));
        };
        let id = openfactory_service::BuildId::parse("build_id", id)
            .map_err(|e| not_found(tool_error(e)))?;
        let owner = self.caller(&ctx).await.map_err(not_found)?;
        let log = openfactory_service::builds::log(&self.app, &owner, &id, Some(5000))
            .await
            .map_err(|e| not_found(tool_error(e)))?;
        let mut text = log.lines.join("\n");
        text.push('\n');
        Ok(
            rmcp::model::ReadResourceResult::new(vec![rmcp::model::ResourceContents::text(
                text,
                request.uri.clone(),
            )])
            .into(),
        )
    }
}
