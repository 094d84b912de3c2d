//! The build tools: queue, follow, fetch, retry, cancel and delete builds
//! ([`openfactory_service::builds`]).

use std::time::Duration;

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;

use openfactory_service::builds::{
    self, BuildCreated, BuildDeleted, BuildDetails, BuildList, BuildLog, BuildStatusOut, CancelOut,
    DownloadLink,
};

use super::args::{Bounded, Optional, Raw, Required, ToolArgs, WaitSeconds, tool_args};
use super::wait::{Progress, wait_with_progress};
use super::{OpenFactoryServer, tool_error};
use crate::wording::Worded;

/// What create_build's `recipe` may be (the schema only: the service reads the value, and
/// says what is wrong with anything else).
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
pub enum RecipeOrId {
    Recipe(Box<openfactory_core::Recipe>),
    Id(String),
}

tool_args! {
    pub struct CreateBuildArgs => CreateBuild {
        /// The recipe to build: a full recipe object (as for validate_recipe: `name`, `base_image`, `features`,
        /// `packages`, `services`, `networking`, `security`…), or the id of a template or of one of your recipes
        /// (e.g. `debian-docker-monitoring`).
        recipe: Required<Raw<RecipeOrId>>,
    }

    pub struct ListBuildsArgs => ListBuilds {
        /// Only builds with this status: queued, running, completed, failed or cancelled.
        status_filter: Optional<openfactory_store::BuildStatus>,
        /// How many, newest first: 1 to 100 (default 20).
        limit: Bounded<1, 100, 20>,
    }

    pub struct BuildIdArgs => BuildId {
        /// A build id from create_build or list_builds (12 hex digits).
        build_id: Required<openfactory_service::BuildId>,
    }

    pub struct BuildStatusArgs => BuildStatus {
        /// A build id from create_build or list_builds (12 hex digits).
        build_id: Required<openfactory_service::BuildId>,
        /// Wait up to this many seconds (0–50) while the build is queued or running, returning early when it
        /// finishes; progress notifications are sent meanwhile if you gave a progress token. Default 0.
        wait_seconds: WaitSeconds,
    }

    pub struct BuildLogArgs => BuildLogTail {
        /// A build id from create_build or list_builds (12 hex digits).
        build_id: Required<openfactory_service::BuildId>,
        /// How many of the last lines: 1 to 5000 (default 200).
        tail_lines: Bounded<1, 5000, 200>,
    }
}

#[tool_router(router = build_router, vis = "pub(crate)")]
impl OpenFactoryServer {
    #[tool(
        title = "Create a build",
        description = "Build a bootable Debian ISO from a recipe: a full recipe object, or a template / recipe id. The recipe is validated first (an invalid one gives every error and queues nothing). A recipe object without a `name` is named after its base image and features (a client that can ask its user is asked, with that as the default). Returns at once with the build id; the build then runs its stages (bootstrap, apply, image, finish): follow it with get_build_status.",
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::create(&self.app, &owner, args.recipe.into_value(), None)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::list(&self.app, &owner, args.status_filter, Some(args.limit))
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::details(&self.app, &owner, &args.build_id)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            let (app, owner, id) = (&*self.app, &owner, &args.build_id);
            let record = wait_with_progress(
                self,
                &ctx,
                Duration::from_secs(args.wait_seconds as u64),
                move || async move { builds::find(app, owner, id).await.map_err(tool_error) },
                |b| {
                    Progress::new(
                        b.status.is_active(),
                        b.stage.as_deref().unwrap_or(b.status.as_str()),
                        b.progress,
                        &b.message,
                    )
                },
            )
            .await?;
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::download_link(&self.app, &owner, &args.build_id)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::retry(&self.app, &owner, &args.build_id)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::cancel(&self.app, &owner, &args.build_id)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Delete a build",
        description = "Delete one of your finished builds: its ISO, log, manifest and SBOM, to free your disk quota. Refused while it is queued or running (cancel_build first) or while your VMs boot it (delete_vm first). Its test runs' results stay. A client that can ask its user is asked to confirm first.",
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::delete(&self.app, &owner, &args.build_id)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                builds::log(&self.app, &owner, &args.build_id, Some(args.tail_lines))
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }
}
