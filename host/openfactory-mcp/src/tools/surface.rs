//! The MCP surface around the tools: prompts, completions, resources and
//! their subscriptions, and logging. Owner-scoped like every tool: the
//! caller is resolved per request, and what is listed, read, completed or
//! watched is only ever theirs (or the catalog's).

#![allow(deprecated)] // rmcp marks logging deprecated (SEP-2577); 2025-11-25 clients use it.

use std::collections::BTreeMap;

use openfactory_core::recipe::BaseImage;
use openfactory_service::{builds, recipes, test_runs, vms};
use rmcp::RoleServer;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionContext, CompletionInfo, ErrorData,
    GetPromptRequestParams, GetPromptResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, LoggingLevel, LoggingMessageNotificationParam, ReadResourceRequestParams,
    ReadResourceResult, Reference, ResourceContents, SubscriptionFilter,
};
use rmcp::service::RequestContext;
use serde::Serialize;

use super::{OpenFactoryServer, tool_error};
use crate::complete::{self, Names};
use crate::prompts::{self, Offer};
use crate::resources::{self, Resource};
use crate::watch;

/// How many of the caller's builds, runs and VMs `resources/list` shows.
const LISTED: i64 = 20;

/// Where a message stands among the levels (RFC 5424 order, debug lowest).
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn json<T: Serialize>(uri: &str, value: &T) -> Result<ReadResourceResult, ErrorData> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ErrorData::internal_error(format!("unserialisable: {e}"), None))?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type("application/json"),
    ]))
}

/// A service error where the protocol (not a tool) answers: an internal error
/// with the service's words.
pub(crate) fn internal(e: openfactory_service::Error) -> ErrorData {
    ErrorData::internal_error(tool_error(e), None)
}

impl OpenFactoryServer {
    /// The caller of a protocol request (not a tool call): its refusal is an
    /// invalid request.
    pub(crate) async fn protocol_caller(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<openfactory_store::OwnerId, ErrorData> {
        self.caller(ctx)
            .await
            .map_err(|e| ErrorData::invalid_request(e, None))
    }

    /// The level the client asked for: this request's (2026-07-28), else the
    /// session's (`logging/setLevel`); `None`: no log messages.
    pub(crate) fn log_level(&self, ctx: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
        ctx.meta
            .log_level()
            .or(*self.log_level.lock().expect("log level lock"))
    }

    /// Send `message` as an info log message, if the client asked for them.
    pub(crate) async fn log_info(&self, ctx: &RequestContext<RoleServer>, data: serde_json::Value) {
        if self
            .log_level(ctx)
            .is_some_and(|l| rank(l) <= rank(LoggingLevel::Info))
        {
            let _ = ctx
                .peer
                .notify_logging_message(
                    LoggingMessageNotificationParam::new(LoggingLevel::Info, data)
                        .with_logger("openfactory"),
                )
                .await;
        }
    }

    pub(crate) fn set_log_level(&self, level: LoggingLevel) {
        *self.log_level.lock().expect("log level lock") = Some(level);
    }

    fn offer(&self, templates: Vec<String>) -> Offer {
        let features = recipes::features(&self.app).features;
        Offer {
            templates,
            features: features.iter().map(|f| f.name.clone()).collect(),
            bases: BaseImage::ALL.iter().map(|b| b.name().to_owned()).collect(),
            options: features
                .into_iter()
                .map(|f| (f.name, option_names(&f.options_schema)))
                .collect(),
        }
    }

    async fn template_ids(&self) -> Vec<String> {
        recipes::list(&self.app, None, None, None)
            .await
            .map(|l| l.recipes.into_iter().map(|r| r.id).collect())
            .unwrap_or_default()
    }

    pub(crate) fn prompts_list(&self) -> ListPromptsResult {
        ListPromptsResult::with_all_items(prompts::list())
    }

    pub(crate) async fn prompt(
        &self,
        request: GetPromptRequestParams,
    ) -> Result<GetPromptResult, ErrorData> {
        let mut arguments = BTreeMap::new();
        for (name, value) in request.arguments.unwrap_or_default() {
            let serde_json::Value::String(text) = value else {
                return Err(ErrorData::invalid_params(
                    format!(
                        "argument `{}`: expected a string, got {}",
                        openfactory_core::rules::printable(&name, 40),
                        openfactory_core::rules::json_kind(&value)
                    ),
                    None,
                ));
            };
            arguments.insert(name, text);
        }
        let offer = self.offer(self.template_ids().await);
        prompts::get(&request.name, &arguments, &offer)
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))
    }

    /// The values that complete an argument of a prompt or a resource template.
    pub(crate) async fn completion(
        &self,
        request: CompleteRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let argument = request.argument.name.as_str();
        let names = match &request.r#ref {
            Reference::Prompt(p) => prompts::definition(&p.name)
                .and_then(|d| d.arguments.iter().find(|a| a.name == argument))
                .map(|a| a.names),
            Reference::Resource(r) => resources::template(&r.uri)
                .filter(|t| t.variable == argument)
                .map(|t| t.names),
            _ => None,
        };
        let Some(names) = names else {
            return Ok(CompleteResult::new(CompletionInfo::default()));
        };
        let candidates = self
            .candidates(names, request.context.as_ref(), ctx)
            .await?;
        Ok(CompleteResult::new(complete::complete(
            names,
            &request.argument.value,
            &candidates,
        )))
    }

    /// Everything an argument of kind `names` may name, for this caller
    /// (and the arguments the client already chose, in `context`).
    async fn candidates(
        &self,
        names: Names,
        context: Option<&CompletionContext>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Vec<String>, ErrorData> {
        let app = &*self.app;
        let earlier = |name: &str| context.and_then(|c| c.get_argument(name)).cloned();
        Ok(match names {
            Names::Text => Vec::new(),
            Names::Template => self.template_ids().await,
            Names::Features | Names::Feature => self.offer(Vec::new()).features,
            Names::FeatureOption => earlier("feature")
                .and_then(|feature| self.offer(Vec::new()).options.remove(&feature))
                .unwrap_or_default(),
            Names::BuildStatus => prompts::build_statuses(),
            Names::Base => self.offer(Vec::new()).bases,
            Names::Recipe => {
                let owner = self.protocol_caller(ctx).await?;
                recipes::list(app, Some(&owner), None, None)
                    .await
                    .map_err(internal)?
                    .recipes
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            }
            Names::Build => {
                let owner = self.protocol_caller(ctx).await?;
                builds::list(app, &owner, None, Some(100))
                    .await
                    .map_err(internal)?
                    .builds
                    .into_iter()
                    .map(|b| b.build_id)
                    .collect()
            }
            Names::TestRun => {
                let owner = self.protocol_caller(ctx).await?;
                test_runs::list(app, &owner, None, Some(100))
                    .await
                    .map_err(internal)?
                    .runs
                    .into_iter()
                    .map(|r| r.run_id)
                    .collect()
            }
            Names::Vm => {
                let owner = self.protocol_caller(ctx).await?;
                vms::list(app, &owner, None)
                    .await
                    .map_err(internal)?
                    .vms
                    .into_iter()
                    .map(|v| v.name)
                    .collect()
            }
        })
    }

    pub(crate) fn resource_templates(&self) -> ListResourceTemplatesResult {
        ListResourceTemplatesResult::with_all_items(resources::templates())
    }

    /// The caller's newest builds, test runs and VMs, their recipes and the
    /// catalog's templates.
    pub(crate) async fn resources_list(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let app = &*self.app;
        let owner = self.protocol_caller(ctx).await?;
        let mut out = Vec::new();
        for b in builds::list(app, &owner, None, Some(LISTED))
            .await
            .map_err(internal)?
            .builds
        {
            out.push(
                rmcp::model::Resource::new(
                    format!("build://{}", b.build_id),
                    format!("build {}", b.build_id),
                )
                .with_title(format!("Build of {} ({})", b.recipe_name, b.status))
                .with_mime_type("application/json"),
            );
            out.push(
                rmcp::model::Resource::new(
                    format!("build://{}/log", b.build_id),
                    format!("build {} log", b.build_id),
                )
                .with_title(format!("Log of the build of {}", b.recipe_name))
                .with_mime_type("text/plain"),
            );
        }
        for r in test_runs::list(app, &owner, None, Some(LISTED))
            .await
            .map_err(internal)?
            .runs
        {
            out.push(
                rmcp::model::Resource::new(
                    format!("test-run://{}", r.run_id),
                    format!("test run {}", r.run_id),
                )
                .with_title(format!("Test run of build {} ({})", r.build_id, r.status))
                .with_mime_type("application/json"),
            );
        }
        for v in vms::list(app, &owner, None).await.map_err(internal)?.vms {
            out.push(
                rmcp::model::Resource::new(format!("vm://{}", v.name), format!("vm {}", v.name))
                    .with_title(format!("VM {} ({:?})", v.name, v.state).to_lowercase())
                    .with_mime_type("application/json"),
            );
        }
        for r in recipes::list(app, Some(&owner), None, None)
            .await
            .map_err(internal)?
            .recipes
        {
            out.push(
                rmcp::model::Resource::new(
                    format!("recipe://{}", r.id),
                    format!("recipe {}", r.id),
                )
                .with_title(format!("{} ({})", r.name, r.source))
                .with_description(r.description)
                .with_mime_type("application/json"),
            );
        }
        Ok(ListResourcesResult::with_all_items(out))
    }

    pub(crate) async fn resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<ReadResourceResult, ErrorData> {
        let uri = request.uri.as_str();
        let resource = Resource::parse(uri)?;
        let owner = self.protocol_caller(ctx).await?;
        let app = &*self.app;
        let missing = |e| resources::not_found(uri, tool_error(e));
        match &resource {
            Resource::Build(id) => json(
                uri,
                &builds::details(app, &owner, id).await.map_err(missing)?,
            ),
            Resource::BuildLog(id) => {
                let log = builds::log(app, &owner, id, Some(5000))
                    .await
                    .map_err(missing)?;
                let mut text = log.lines.join("\n");
                text.push('\n');
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(text, uri).with_mime_type("text/plain"),
                ]))
            }
            Resource::TestRun(id) => {
                let run = test_runs::find(app, &owner, id).await.map_err(missing)?;
                json(uri, &test_runs::results(&run, false))
            }
            Resource::Recipe(id) => json(
                uri,
                &recipes::get(app, Some(&owner), id).await.map_err(missing)?,
            ),
            Resource::Vm(name) => json(uri, &vms::get(app, &owner, name).await.map_err(missing)?),
        }
    }

    /// `resources/subscribe`: watch one of the caller's resources for the
    /// session's life.
    pub(crate) async fn subscribe_to(
        &self,
        uri: &str,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let resource = Resource::parse(uri)?;
        let owner = self.protocol_caller(ctx).await?;
        if watch::version(&self.app, &owner, &resource).await.is_none() {
            return Err(resources::not_found(
                uri,
                format!(
                    "resource `{}` not found",
                    openfactory_core::rules::printable(uri, 100)
                ),
            ));
        }
        self.subscriptions
            .add(self.app.clone(), owner, resource, ctx.peer.clone())
            .map_err(|e| ErrorData::invalid_request(e, None))
    }

    pub(crate) fn unsubscribe_from(&self, uri: &str) {
        self.subscriptions.remove(uri);
    }

    /// `subscriptions/listen` (2026-07-28): the resource URIs it accepts are
    /// those that are resources at all; whose they are is checked per
    /// request in [`Self::listen_to`], and another owner's is never told.
    pub(crate) fn subscription_filter(requested: &SubscriptionFilter) -> SubscriptionFilter {
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| Resource::parse(u).is_ok_and(|r| r.changes()))
                .take(watch::MAX_PER_SESSION)
                .cloned()
                .collect()
        });
        accepted
    }

    pub(crate) async fn listen_to(
        &self,
        subscription: rmcp::service::SubscriptionContext,
    ) -> Result<(), ErrorData> {
        let ctx = subscription.request_context().clone();
        let owner = self.protocol_caller(&ctx).await?;
        let resources: Vec<Resource> = subscription
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .filter_map(|u| Resource::parse(u).ok())
            .collect();
        let sink = subscription.sink().clone();
        watch::watch(
            self.app.clone(),
            owner,
            resources,
            ctx.ct.clone(),
            move |uri| {
                let sink = sink.clone();
                async move { sink.notify_resource_updated(uri).await.is_ok() }
            },
        )
        .await;
        Ok(())
    }
}

/// The option names an options schema declares, in its order.
fn option_names(schema: &serde_json::Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}
