//! The VM tools: create, list, start, stop and delete VMs, their console link and serial log
//! ([`openfactory_service::vms`]).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};

use openfactory_service::vms::{self, ConsoleLink, SerialLog, VmAction, VmList, VmOut};

use super::args::{Bounded, Optional, Required, ToolArgs, tool_args};
use super::{OpenFactoryServer, tool_error};
use crate::wording::Worded;

tool_args! {
    pub struct CreateVmArgs => CreateVm {
        /// A completed build of yours (from list_builds).
        build_id: Required<openfactory_service::BuildId>,
        /// A name for the VM, unique among yours: lowercase letters, digits and `-`, e.g. `web-1`.
        name: Required<openfactory_service::VmName>,
        /// Memory in MiB: 256 up to the server's limit (default 1024).
        memory_mb: Optional<i64>,
        /// Virtual CPUs: 1 up to the server's limit (default 1).
        vcpus: Optional<i64>,
    }

    pub struct ListVmsArgs => ListVms {
        /// Only VMs made from this build.
        build_id: Optional<openfactory_service::BuildId>,
    }

    pub struct VmNameArgs => VmName {
        /// The VM's name (list_vms shows yours).
        vm_name: Required<openfactory_service::VmName>,
    }

    pub struct StopVmArgs => StopVm {
        /// The VM's name (list_vms shows yours).
        vm_name: Required<openfactory_service::VmName>,
        /// Stop at once instead of asking the guest to power off (ACPI). Default false.
        force: Optional<bool>,
    }

    pub struct SerialLogArgs => SerialLogTail {
        /// The VM's name (list_vms shows yours).
        vm_name: Required<openfactory_service::VmName>,
        /// How many of the last lines: 1 to 5000 (default 100).
        tail_lines: Bounded<1, 5000, 100>,
    }
}

#[tool_router(router = vm_router, vis = "pub(crate)")]
impl OpenFactoryServer {
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                vms::create(
                    &self.app,
                    &owner,
                    &args.build_id,
                    &args.name,
                    args.memory_mb,
                    args.vcpus,
                )
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                vms::list(&self.app, &owner, args.build_id.as_ref())
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                vms::start(&self.app, &owner, &args.vm_name)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            let force = args.force.unwrap_or(false);
            Ok(Json(
                vms::stop(&self.app, &owner, &args.vm_name, force)
                    .await
                    .map_err(tool_error)?
                    .worded(),
            ))
        })
        .await
    }

    #[tool(
        title = "Delete a VM",
        description = "Delete one of your VMs: stopped at once if running, then every file and port it held is released. A client that can ask its user is asked to confirm first.",
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                vms::delete(&self.app, &owner, &args.vm_name)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                vms::console_url(&self.app, &owner, &args.vm_name)
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
            let args = args.validate()?;
            let owner = self.caller(&ctx).await?;
            Ok(Json(
                vms::serial_log(&self.app, &owner, &args.vm_name, Some(args.tail_lines))
                    .await
                    .map_err(tool_error)?,
            ))
        })
        .await
    }
}
