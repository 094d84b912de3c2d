//! The MCP tools, one module per area. Each tool is a thin wrapper: check its arguments
//! ([`args`]), resolve the caller, call `openfactory_service`, count the outcome. Tool errors
//! (`isError`) carry a message that names the field and the fix.

use std::sync::Arc;

use openfactory_store::OwnerId;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Json;
#[allow(deprecated)] // resources/subscribe and logging: 2025-11-25 clients use them.
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CompleteRequestParams,
    CompleteResult, ErrorData, GetPromptRequestParams, GetPromptResponse, GetTaskParams,
    GetTaskResult, Implementation, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, SetLevelRequestParams,
    SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::service::SubscriptionContext;
use rmcp::{RoleServer, ServerHandler, tool_handler};
use tracing::Instrument;

use openfactory_service::app::App;
use openfactory_service::owner::OwnerPolicy;

pub mod args;
mod ask;
mod builds;
mod recipes;
mod surface;
mod tasks;
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
    /// What `logging/setLevel` asked for in this session.
    #[allow(deprecated)]
    log_level: Arc<std::sync::Mutex<Option<rmcp::model::LoggingLevel>>>,
    /// This session's `resources/subscribe` watches; they end with it.
    subscriptions: Arc<crate::watch::Subscriptions>,
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
            log_level: Arc::default(),
            subscriptions: Arc::default(),
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
        openfactory_service::owner::touch(&self.app, &owner).await;
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

#[allow(deprecated)] // logging/setLevel and resources/subscribe: 2025-11-25 clients use them.
#[tool_handler(router = self.tool_router)]
impl ServerHandler for OpenFactoryServer {
    /// A method MCP does not define and this server does not add: said so,
    /// with what to call instead (rmcp's default says only the method).
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        let method = openfactory_core::rules::truncate(&request.method, 100);
        Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!(
                "method not found: `{method}` is not a method of MCP or of this server; \
                 call tools/list for the tools, and tools/call to use one"
            ),
            None,
        ))
    }

    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_completions()
                .enable_logging()
                .enable_tasks()
                .build(),
        )
            .with_server_info(Implementation::new("openfactory", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "OpenFactory builds bootable Debian images from recipes. Browse with list_recipe_categories and \
                 list_recipes, inspect with get_recipe and list_features, check with validate_recipe and plan_recipe, \
                 customise a template with create_recipe_from_template, then build with create_build and follow it with \
                 get_build_status (wait_seconds) until get_iso_download_url gives the ISO. Builds, test runs, recipes \
                 and VMs are also resources (build://{build_id}, build://{build_id}/log, test-run://{run_id}, \
                 recipe://{recipe_id}, vm://{vm_name}); subscribe to one to be told when it changes.",
            )
    }

    /// A tool call: first any question it needs answered ([`ask`]); then,
    /// for one that starts long work from a client that declared the tasks
    /// extension, a task backed by its record.
    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(question) = ask::Question::for_call(&request.name, request.arguments.as_ref())
            && let Some(answer) = self.ask(&question, &mut request, &ctx).await
        {
            return Ok(answer);
        }
        let wants_task = ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        let tool = request.name.to_string();
        let answer = self
            .tool_router
            .call(rmcp::handler::server::tool::ToolCallContext::new(
                self, request, ctx,
            ))
            .await?;
        match answer {
            CallToolResponse::Complete(result) if wants_task => {
                Ok(match tasks::created(&tool, &result) {
                    Some(task) => CallToolResponse::Task(task),
                    None => CallToolResponse::Complete(result),
                })
            }
            other => Ok(other),
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.task(&request.task_id, &ctx)
            .await
            .map(GetTaskResult::new)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.cancel_task_of(&request.task_id, &ctx).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(self.prompts_list())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.prompt(request).await.map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.completion(request, &ctx).await
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.set_log_level(request.level);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.resources_list(&ctx).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(self.resource_templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.resource(request, &ctx).await.map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribe_to(&request.uri, &ctx).await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.unsubscribe_from(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(Self::subscription_filter(requested))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.listen_to(context).await
    }
}
