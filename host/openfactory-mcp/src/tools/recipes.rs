//! The catalog tools: categories, recipes, features, validation and plans
//! ([`openfactory_service::recipes`]).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};

use openfactory_service::recipes::{
    self, Categories, Created, Features, Modifications, PlanOut, RecipeDetails, RecipeList,
    Validation,
};

use super::args::{Optional, Raw, Required, ToolArgs, tool_args};
use super::{OpenFactoryServer, tool_error};

tool_args! {
    pub struct ListRecipesArgs => ListRecipes {
        /// Only this category (see list_recipe_categories), e.g. `healthcare`.
        category: Optional<String>,
        /// Words that must all appear in the name, description, tags, packages or features, e.g. `docker monitoring`.
        search: Optional<String>,
    }

    pub struct RecipeIdArgs => RecipeId {
        /// A template id or one of your recipes' ids, from list_recipes (e.g. `gxp-medtech`).
        recipe_id: Required<openfactory_service::RecipeId>,
    }

    pub struct ValidateArgs => Validate {
        /// The recipe object: `name`, `base_image` (`debian-bookworm` | `debian-trixie`), and optionally
        /// `description`, `tags`, `hostname`, `locale`, `timezone`, `features` (names or {name, options}),
        /// `packages`, `services`, `users`, `files`, `kernel_args`, `networking`, `security`.
        recipe: Required<Raw<openfactory_core::Recipe>>,
    }

    pub struct CreateFromTemplateArgs => CreateFromTemplate {
        /// The template to start from, e.g. `gxp-medtech` (list_recipes shows ids).
        template_id: Required<openfactory_service::RecipeId>,
        /// Name and id of the new recipe: lowercase letters, digits and `-`, e.g. `my-gxp-box`.
        name: Required<String>,
        /// What to change, e.g. `{"add_packages": ["vim", "htop"]}`.
        modifications: Optional<Raw<Modifications>>,
    }

    pub struct PlanArgs => Plan {
        /// A recipe id from list_recipes; or give `recipe` instead.
        recipe_id: Optional<openfactory_service::RecipeId>,
        /// A full recipe object (as for validate_recipe); or give `recipe_id` instead.
        recipe: Optional<Raw<openfactory_core::Recipe>>,
    }
}

#[tool_router(router = recipe_router, vis = "pub(crate)")]
impl OpenFactoryServer {
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
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                recipes::categories(&self.app, Some(&owner))
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "List recipes",
        description = "Browse recipe templates and your own recipes. Filter by `category` and/or `search` words (matched in name, description, tags, packages and features). Returns ids to use with get_recipe, plan_recipe and create_recipe_from_template. Each template says what the catalog's last run (build, boot, checks) proved: `proof.status` proven, failed or unproven, when, and checks passed.",
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                recipes::list(
                    &self.app,
                    Some(&owner),
                    args.category.as_deref(),
                    args.search.as_deref(),
                )
                .await
                .map_err(tool_error)?,
            ))
        })
        .await
    }

    #[tool(
        title = "Get a recipe",
        description = "Full details of a template or of one of your recipes: base image, features with their options, packages, services, users, files, networking and security, its content hash, and for a template what the catalog's last run (build, boot, checks) proved.",
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                recipes::get(&self.app, Some(&owner), &args.recipe_id)
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
            let args = args.validate()?;
            self.caller(&ctx).await?;
            Ok(Json(
                recipes::validate(&self.app, args.recipe.into_value())
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                recipes::create_from_template(
                    &self.app,
                    &owner,
                    &args.template_id,
                    &args.name,
                    args.modifications.map(Raw::into_value),
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                recipes::plan_recipe(
                    &self.app,
                    &owner,
                    args.recipe_id,
                    args.recipe.map(Raw::into_value),
                )
                .await
                .map_err(tool_error)?,
            ))
        })
        .await
    }
}
