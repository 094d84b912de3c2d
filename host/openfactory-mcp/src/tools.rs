//! The MCP tools. Each is a thin wrapper: resolve the caller, call
//! [`openfactory_service::recipes`], count the outcome. Tool errors (`isError`) carry a
//! message that names the field and the fix.

use std::sync::Arc;

use openfactory_store::OwnerId;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{Implementation, InitializeResult, ServerCapabilities};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use openfactory_service::app::App;
use openfactory_service::builds::{
    self, BuildCreated, BuildDeleted, BuildDetails, BuildList, BuildLog, BuildStatusOut, CancelOut,
    DownloadLink,
};
use openfactory_service::owner::OwnerPolicy;
use openfactory_service::recipes::{
    self, Categories, Created, Features, PlanOut, RecipeDetails, RecipeList, Validation,
};
use openfactory_service::vms::{self, ConsoleLink, SerialLog, VmAction, VmList, VmOut};

use crate::wording::{Worded, args, tool_error};

/// One MCP server instance. Legacy SSE and stdio sessions fix the owner when
/// they start; Streamable HTTP resolves it from each request.
#[derive(Clone)]
pub struct OpenFactoryServer {
    pub(crate) app: Arc<App>,
    policy: Arc<OwnerPolicy>,
    owner: Option<OwnerId>,
    tool_router: ToolRouter<OpenFactoryServer>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListRecipesArgs {
    /// Only this category (see list_recipe_categories), e.g. `healthcare`.
    #[schemars(with = "Option<String>")]
    pub category: Option<Value>,
    /// Words that must all appear in the name, description, tags, packages or features, e.g. `docker monitoring`.
    #[schemars(with = "Option<String>")]
    pub search: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RecipeIdArgs {
    /// A template id or one of your recipes' ids, from list_recipes (e.g. `gxp-medtech`).
    #[schemars(with = "String")]
    pub recipe_id: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ValidateArgs {
    /// The recipe object: `name`, `base_image` (`debian-bookworm` | `debian-trixie`), and optionally
    /// `description`, `tags`, `hostname`, `locale`, `timezone`, `features` (names or {name, options}),
    /// `packages`, `services`, `users`, `files`, `kernel_args`, `networking`, `security`.
    #[schemars(with = "openfactory_core::Recipe")]
    pub recipe: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateFromTemplateArgs {
    /// The template to start from, e.g. `gxp-medtech` (list_recipes shows ids).
    #[schemars(with = "String")]
    pub template_id: Value,
    /// Name and id of the new recipe: lowercase letters, digits and `-`, e.g. `my-gxp-box`.
    #[schemars(with = "String")]
    pub name: Value,
    /// What to change, e.g. `{"add_packages": ["vim", "htop"]}`.
    #[schemars(with = "Option<recipes::Modifications>")]
    #[serde(default)]
    pub modifications: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PlanArgs {
    /// A recipe id from list_recipes; or give `recipe` instead.
    #[schemars(with = "Option<String>")]
    pub recipe_id: Option<Value>,
    /// A full recipe object (as for validate_recipe); or give `recipe_id` instead.
    #[schemars(with = "Option<openfactory_core::Recipe>")]
    pub recipe: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateBuildArgs {
    /// The recipe to build: a full recipe object (as for validate_recipe: `name`, `base_image`, `features`,
    /// `packages`, `services`, `networking`, `security`…), or the id of a template or of one of your recipes
    /// (e.g. `debian-docker-monitoring`).
    #[schemars(with = "Value")]
    pub recipe: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListBuildsArgs {
    /// Only builds with this status: queued, running, completed, failed or cancelled.
    #[schemars(with = "Option<String>")]
    pub status_filter: Option<Value>,
    /// How many, newest first: 1 to 100 (default 20).
    #[schemars(with = "Option<i64>")]
    pub limit: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BuildIdArgs {
    /// A build id from create_build or list_builds (12 hex digits).
    #[schemars(with = "String")]
    pub build_id: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BuildStatusArgs {
    /// A build id from create_build or list_builds (12 hex digits).
    #[schemars(with = "String")]
    pub build_id: Value,
    /// Wait up to this many seconds (0–50) while the build is queued or running, returning early when it
    /// finishes; progress notifications are sent meanwhile if you gave a progress token. Default 0.
    #[schemars(with = "Option<i64>")]
    pub wait_seconds: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BuildLogArgs {
    /// A build id from create_build or list_builds (12 hex digits).
    #[schemars(with = "String")]
    pub build_id: Value,
    /// How many of the last lines: 1 to 5000 (default 200).
    #[schemars(with = "Option<i64>")]
    pub tail_lines: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateVmArgs {
    /// A completed build of yours (from list_builds).
    #[schemars(with = "String")]
    pub build_id: Value,
    /// A name for the VM, unique among yours: lowercase letters, digits and `-`, e.g. `web-1`.
    #[schemars(with = "String")]
    pub name: Value,
    /// Memory in MiB: 256 up to the server's limit (default 1024).
    #[schemars(with = "Option<i64>")]
    pub memory_mb: Option<Value>,
    /// Virtual CPUs: 1 up to the server's limit (default 1).
    #[schemars(with = "Option<i64>")]
    pub vcpus: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListVmsArgs {
    /// Only VMs made from this build.
    #[schemars(with = "Option<String>")]
    pub build_id: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VmNameArgs {
    /// The VM's name (list_vms shows yours).
    #[schemars(with = "String")]
    pub vm_name: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StopVmArgs {
    /// The VM's name (list_vms shows yours).
    #[schemars(with = "String")]
    pub vm_name: Value,
    /// Stop at once instead of asking the guest to power off (ACPI). Default false.
    #[schemars(with = "Option<bool>")]
    pub force: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SerialLogArgs {
    /// The VM's name (list_vms shows yours).
    #[schemars(with = "String")]
    pub vm_name: Value,
    /// How many of the last lines: 1 to 5000 (default 100).
    #[schemars(with = "Option<i64>")]
    pub tail_lines: Option<Value>,
}

fn opt_bool(value: Option<Value>, field: &str) -> Result<Option<bool>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(format!(
            "{field}: expected true or false, got {}",
            kind(&other)
        )),
    }
}

pub(crate) fn opt_int(value: Option<Value>, field: &str) -> Result<Option<i64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(other) => Err(format!(
            "{field}: expected a whole number, got {}",
            kind(&other)
        )),
    }
}

pub(crate) type ToolResult<T> = Result<Json<T>, String>;

/// A string argument, with an error that names the field. (Arguments are
/// taken as JSON values so that a wrong type is a tool error the caller can
/// act on, not a protocol error.)
pub(crate) fn text(value: Value, field: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("{field}: expected a string, got {}", kind(&other))),
    }
}

pub(crate) fn opt_text(value: Option<Value>, field: &str) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => text(v, field).map(Some),
    }
}

pub(crate) use openfactory_core::rules::json_kind as kind;

#[tool_router]
impl OpenFactoryServer {
    pub fn new(app: Arc<App>, policy: Arc<OwnerPolicy>, owner: Option<OwnerId>) -> Self {
        OpenFactoryServer {
            app,
            policy,
            owner,
            tool_router: Self::tool_router() + Self::test_run_router(),
        }
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
                // A key was checked by the HTTP layer before the request got here.
                if let Some(caller) = parts
                    .extensions
                    .get::<openfactory_service::auth::KeyCaller>()
                {
                    return Ok(caller.owner.clone());
                }
                let peer = parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .ok_or("the server could not determine your address")?
                    .0
                    .ip();
                self.policy.resolve(peer, &parts.headers)
            }
        };
        if let Err(e) = self.app.store.touch_owner(&owner).await {
            tracing::error!(error = %e, "could not record the caller");
            return Err("the server could not reach its database; try again later".into());
        }
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

    #[tool(
        title = "List recipe categories",
        description = "List every recipe category (server, containers, monitoring, healthcare, security, edge, development…) with its description and how many recipes it holds. Start here to browse the catalog.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_recipe_categories(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Categories>, String> {
        self.run("list_recipe_categories", async {
            Ok(Json(
                recipes::categories(&self.app, Some(&self.caller(&ctx).await?))
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "List recipes",
        description = "Browse recipe templates and your own recipes. Filter by `category` and/or `search` words (matched in name, description, tags, packages and features). Returns ids to use with get_recipe, plan_recipe and create_recipe_from_template.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_recipes(
        &self,
        Parameters(args): Parameters<ListRecipesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RecipeList>, String> {
        self.run("list_recipes", async {
            let owner = self.caller(&ctx).await?;
            let category = opt_text(args.category, "category")?;
            let search = opt_text(args.search, "search")?;
            Ok(Json(
                recipes::list(
                    &self.app,
                    Some(&owner),
                    category.as_deref(),
                    search.as_deref(),
                )
                .await
                .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Get a recipe",
        description = "Full details of a template or of one of your recipes: base image, features with their options, packages, services, users, files, networking and security, and its content hash.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_recipe(
        &self,
        Parameters(args): Parameters<RecipeIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RecipeDetails>, String> {
        self.run("get_recipe", async {
            let id = args::recipe_id(args.recipe_id, "recipe_id")?;
            Ok(Json(
                recipes::get(&self.app, Some(&self.caller(&ctx).await?), &id)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Validate a recipe",
        description = "Check a recipe without building it. Returns `valid`, every error and warning (each with a field path such as `features[2].options.port`, a code, a message and usually a suggestion), and when valid a summary of the build plan. Fix all errors in one go, then validate again.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn validate_recipe(
        &self,
        Parameters(args): Parameters<ValidateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Validation>, String> {
        self.run("validate_recipe", async {
            self.caller(&ctx).await?;
            Ok(Json(
                recipes::validate(&self.app, args.recipe)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Create a recipe from a template",
        description = "Copy a template under a new name with changes (add/remove packages, features with options, services; replace networking or security; change description, base image, hostname, timezone). The result is validated and saved as your own recipe, usable by its id (the name) afterwards. Nothing is saved if anything is invalid.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_recipe_from_template(
        &self,
        Parameters(args): Parameters<CreateFromTemplateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Created>, String> {
        self.run("create_recipe_from_template", async {
            let owner = self.caller(&ctx).await?;
            let template_id = args::recipe_id(args.template_id, "template_id")?;
            let name = text(args.name, "name")?;
            Ok(Json(
                recipes::create_from_template(
                    &self.app,
                    &owner,
                    &template_id,
                    &name,
                    args.modifications,
                )
                .await
                .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "List features",
        description = "The installed features (ssh, docker, monitoring, firewall, hardening, gxp…) with their version, what they require or conflict with, and the JSON Schema of their `options`. Read this before writing a recipe's features.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_features(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Features>, String> {
        self.run("list_features", async {
            self.caller(&ctx).await?;
            Ok(Json(recipes::features(&self.app)))
        })
        .await
    }

    #[tool(
        title = "Plan a recipe (dry run)",
        description = "Show exactly what a build would do: every typed step in order (packages, files, services, users, firewall ports…, each with the feature that emitted it) and every boot check a test run would execute. Give `recipe_id` or a `recipe` object. Nothing is built.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn plan_recipe(
        &self,
        Parameters(args): Parameters<PlanArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<PlanOut>, String> {
        self.run("plan_recipe", async {
            let owner = self.caller(&ctx).await?;
            let recipe_id = args::opt_recipe_id(args.recipe_id, "recipe_id")?;
            Ok(Json(
                recipes::plan_recipe(&self.app, &owner, recipe_id, args.recipe)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Create a build",
        description = "Build a bootable Debian ISO from a recipe: a full recipe object, or a template / recipe id. The recipe is validated first (an invalid one gives every error and queues nothing). Returns at once with the build id; the build then runs its stages (bootstrap, apply, image, finish): follow it with get_build_status.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn create_build(
        &self,
        Parameters(args): Parameters<CreateBuildArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildCreated>, String> {
        self.run("create_build", async {
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::create(&self.app, &owner, args.recipe, None)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "List builds",
        description = "Your builds, newest first, with status (queued, running, completed, failed, cancelled), stage, progress and features. Filter with `status_filter`; `limit` 1–100 (default 20).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_builds(
        &self,
        Parameters(args): Parameters<ListBuildsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildList>, String> {
        self.run("list_builds", async {
            let owner = self.caller(&ctx).await?;
            let status = opt_text(args.status_filter, "status_filter")?;
            let limit = opt_int(args.limit, "limit")?;
            Ok(Json(
                builds::list(&self.app, &owner, status.as_deref(), limit)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Get a build",
        description = "Full details of one of your builds: its recipe, plan summary (steps per feature, checks), status, error and failed step, timings per stage, ISO sha256 and size, package count and artifacts.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_build(
        &self,
        Parameters(args): Parameters<BuildIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildDetails>, String> {
        self.run("get_build", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            Ok(Json(
                builds::details(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Get build status",
        description = "Where a build is: status, stage (bootstrap, apply, image, finish), overall percentage, current step, elapsed time, the last log lines, and the error and failed step if it failed. Pass `wait_seconds` (up to 50) to wait for it to move, with progress notifications.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_build_status(
        &self,
        Parameters(args): Parameters<BuildStatusArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildStatusOut>, String> {
        self.run("get_build_status", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            let wait = match opt_int(args.wait_seconds, "wait_seconds")? {
                None => 0,
                Some(n) if (0..=builds::MAX_WAIT_SECONDS as i64).contains(&n) => n as u64,
                Some(n) => {
                    return Err(format!(
                        "wait_seconds: {n} is out of range; use 0 to {} and call again to wait longer",
                        builds::MAX_WAIT_SECONDS
                    ));
                }
            };
            let token = ctx.meta.get_progress_token().filter(|_| wait > 0);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
            let mut record = builds::find(&self.app, &owner, &id)
                .await
                .map_err(tool_error)?;
            let mut reported: Option<(openfactory_store::BuildStatus, u8, String)> = None;
            loop {
                let state = (record.status, record.progress, record.message.clone());
                if let Some(token) = &token
                    && reported.as_ref() != Some(&state)
                {
                    let message = format!(
                        "{} {}%: {}",
                        record.stage.as_deref().unwrap_or(record.status.as_str()),
                        record.progress,
                        record.message
                    );
                    let _ = ctx
                        .peer
                        .notify_progress(
                            rmcp::model::ProgressNotificationParam::new(
                                token.clone(),
                                f64::from(record.progress),
                            )
                            .with_total(100.0)
                            .with_message(message),
                        )
                        .await;
                }
                reported = Some(state);
                if !record.status.is_active() || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                record = builds::find(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?;
            }
            Ok(Json(builds::status_of(&self.app, &record).await.worded()))
        })
        .await
    }

    #[tool(
        title = "Get the ISO download URL",
        description = "A signed link to download a completed build's ISO (HTTP, resumable with Range), valid for an hour, with its sha256 and size. Builds that are not completed have no ISO: the error says what state the build is in.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn get_iso_download_url(
        &self,
        Parameters(args): Parameters<BuildIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DownloadLink>, String> {
        self.run("get_iso_download_url", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            Ok(Json(
                builds::download_link(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Retry a build",
        description = "Build a failed or cancelled build's recipe again, as a new build (the old one stays, for its log). Returns the new build id.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn retry_build(
        &self,
        Parameters(args): Parameters<BuildIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildCreated>, String> {
        self.run("retry_build", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            Ok(Json(
                builds::retry(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Cancel a build",
        description = "Stop a queued or running build. A queued build is cancelled at once; a running one stops its current command and cleans up within seconds.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn cancel_build(
        &self,
        Parameters(args): Parameters<BuildIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<CancelOut>, String> {
        self.run("cancel_build", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            Ok(Json(
                builds::cancel(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Delete a build",
        description = "Delete one of your finished builds: its ISO, log, manifest and SBOM, to free your disk quota. Refused while it is queued or running (cancel_build first) or while your VMs boot it (delete_vm first). Its test runs' results stay.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn delete_build(
        &self,
        Parameters(args): Parameters<BuildIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildDeleted>, String> {
        self.run("delete_build", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            Ok(Json(
                builds::delete(&self.app, &owner, &id)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Create a VM",
        description = "Create and start a VM that boots one of your completed builds' ISO (QEMU). `memory_mb` and `vcpus` are bounded by the server. The VM boots in about a minute; get_vm_serial_log shows its console.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_vm(
        &self,
        Parameters(args): Parameters<CreateVmArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmOut>, String> {
        self.run("create_vm", async {
            let owner = self.caller(&ctx).await?;
            let build_id = args::build_id(args.build_id, "build_id")?;
            let name = args::vm_name(args.name, "name")?;
            let memory = opt_int(args.memory_mb, "memory_mb")?;
            let vcpus = opt_int(args.vcpus, "vcpus")?;
            Ok(Json(
                vms::create(&self.app, &owner, &build_id, &name, memory, vcpus)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "List VMs",
        description = "Your VMs (running or stopped) with their build, memory, vCPUs and accelerator; optionally only those of one build.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_vms(
        &self,
        Parameters(args): Parameters<ListVmsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmList>, String> {
        self.run("list_vms", async {
            let owner = self.caller(&ctx).await?;
            let build_id = args::opt_build_id(args.build_id, "build_id")?;
            Ok(Json(
                vms::list(&self.app, &owner, build_id.as_ref())
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Start a VM",
        description = "Start one of your stopped VMs.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn start_vm(
        &self,
        Parameters(args): Parameters<VmNameArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmAction>, String> {
        self.run("start_vm", async {
            let owner = self.caller(&ctx).await?;
            let name = args::vm_name(args.vm_name, "vm_name")?;
            Ok(Json(
                vms::start(&self.app, &owner, &name)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Stop a VM",
        description = "Stop one of your VMs: by default ask the guest to power off (ACPI) and wait up to 30 s, saying so if it does not; with force=true, stop it at once.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn stop_vm(
        &self,
        Parameters(args): Parameters<StopVmArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmAction>, String> {
        self.run("stop_vm", async {
            let owner = self.caller(&ctx).await?;
            let name = args::vm_name(args.vm_name, "vm_name")?;
            let force = opt_bool(args.force, "force")?.unwrap_or(false);
            Ok(Json(
                vms::stop(&self.app, &owner, &name, force)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Delete a VM",
        description = "Delete one of your VMs: stopped at once if running, then every file and port it held is released.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn delete_vm(
        &self,
        Parameters(args): Parameters<VmNameArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmAction>, String> {
        self.run("delete_vm", async {
            let owner = self.caller(&ctx).await?;
            let name = args::vm_name(args.vm_name, "vm_name")?;
            Ok(Json(
                vms::delete(&self.app, &owner, &name)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Get a VM console URL",
        description = "A link to one of your running VMs' screen in a browser (noVNC), valid for 10 minutes and for you alone.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn get_vm_console_url(
        &self,
        Parameters(args): Parameters<VmNameArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ConsoleLink>, String> {
        self.run("get_vm_console_url", async {
            let owner = self.caller(&ctx).await?;
            let name = args::vm_name(args.vm_name, "vm_name")?;
            Ok(Json(
                vms::console_url(&self.app, &owner, &name)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Get a VM's serial console",
        description = "The last lines of one of your VMs' serial console (boot messages, the login prompt), for text-only clients.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_vm_serial_log(
        &self,
        Parameters(args): Parameters<SerialLogArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SerialLog>, String> {
        self.run("get_vm_serial_log", async {
            let owner = self.caller(&ctx).await?;
            let name = args::vm_name(args.vm_name, "vm_name")?;
            let tail = opt_int(args.tail_lines, "tail_lines")?;
            Ok(Json(
                vms::serial_log(&self.app, &owner, &name, tail)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Get a build log",
        description = "The build's log: every command the build ran and what it printed (apt, mmdebstrap, mksquashfs, grub-mkrescue), with a line per step. `tail_lines` 1–5000 (default 200). Also readable as the resource build://{build_id}/log.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_build_log(
        &self,
        Parameters(args): Parameters<BuildLogArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<BuildLog>, String> {
        self.run("get_build_log", async {
            let owner = self.caller(&ctx).await?;
            let id = args::build_id(args.build_id, "build_id")?;
            let tail = opt_int(args.tail_lines, "tail_lines")?;
            Ok(Json(
                builds::log(&self.app, &owner, &id, tail)
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
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
        let owner = self.caller(&ctx).await.map_err(not_found)?;
        let id = openfactory_service::BuildId::parse("build_id", id)
            .map_err(|e| not_found(tool_error(e)))?;
        let log = builds::log(&self.app, &owner, &id, Some(5000))
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
