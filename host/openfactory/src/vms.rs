//! The VM backend this host runs, and the reaper that notices VMs that died.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openfactory_service::App;
use openfactory_vm::{Backend, QemuBackend, VmBackend, VmState};
use tokio_util::sync::CancellationToken;

use crate::cli::serve::VmArgs;

/// How often the reaper looks for VMs that died.
const REAP_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Qemu,
    Libvirt,
}

/// The configured backend; libvirt is connected to (and its pool made) now,
/// so a wrong URI stops the server at start with the reason.
pub async fn backend(args: &VmArgs, records: &Path) -> anyhow::Result<Backend> {
    match args.vm_backend {
        BackendKind::Qemu => Ok(Backend::Qemu(QemuBackend::new(records, args.accel))),
        #[cfg(feature = "libvirt")]
        BackendKind::Libvirt => {
            let backend = openfactory_vm::LibvirtBackend::new(
                records,
                args.accel,
                openfactory_vm::LibvirtConfig {
                    uri: args.libvirt_uri.clone(),
                    pool: args.libvirt_pool.clone(),
                    pool_path: args.libvirt_pool_path.clone(),
                },
            );
            use anyhow::Context as _;
            let about = backend.check().await.with_context(|| {
                format!(
                    "the libvirt backend cannot use {} (is libvirtd running? `libvirtd -d` starts it)",
                    args.libvirt_uri
                )
            })?;
            tracing::info!(%about, pool = %args.libvirt_pool, "VMs run on libvirt");
            Ok(Backend::Libvirt(backend))
        }
        #[cfg(not(feature = "libvirt"))]
        BackendKind::Libvirt => anyhow::bail!(
            "this openfactory was built without libvirt support: rebuild with `--features libvirt` \
             (needs libvirt-dev), or use --vm-backend qemu"
        ),
    }
}

/// At start, say which VMs are still running (they were re-attached: their
/// records lead to them); then, until shutdown, mark the ones that died.
pub async fn reaper(app: Arc<App>, shutdown: CancellationToken) {
    let backend = &app.vms.backend;
    let mut running = 0;
    for id in backend.list() {
        if let VmState::Running { .. } = backend.state(&id).await {
            running += 1;
        }
    }
    if running > 0 {
        tracing::info!(running, "re-attached to VMs that kept running");
    }
    loop {
        for id in backend.reap().await {
            tracing::warn!(vm = %id, "VM stopped unexpectedly (its hypervisor process is gone)");
            app.metrics.vms_reaped.inc();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REAP_EVERY) => {}
        }
    }
}
