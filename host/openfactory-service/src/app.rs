//! The application state every transport shares, as the capabilities it
//! holds: the store, the planner, the link signer, the VMs, the settings,
//! the metrics, the sign-in state and the queues' wake-ups. An operation
//! that another caller (the CLI, without plugins or a VM backend) needs
//! takes only the capabilities it uses, not the whole [`App`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use openfactory_core::FeatureSet;
use openfactory_core::catalog::Catalog;
use openfactory_core::proof;
use openfactory_plugin_host::PluginHost;
use openfactory_store::Store;
use openfactory_vm::Backend;
use tokio::sync::Notify;

use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::links::LinkSigner;
use crate::metrics::Metrics;

/// Built once, shared by every session.
pub struct App {
    pub store: Store,
    /// Builds' outputs: the builds directory, or object storage.
    pub artifacts: Arc<openfactory_artifacts::ArtifactStore>,
    pub planner: Planner,
    /// Sessions, CSRF tokens, console tokens and download links.
    pub signer: LinkSigner,
    pub vms: Vms,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Open streams per credential (closed when it is revoked), sign-in budgets per email.
    pub auth: Auth,
    /// The OAuth authorization server hosted MCP clients sign in with.
    pub oauth: openfactory_oauth::OAuth,
    pub wake: Wake,
    /// Owners noted as seen within the minute (`owner::touch`).
    pub seen: crate::throttle::Throttle<openfactory_store::OwnerId>,
}

impl App {
    pub fn new(
        store: Store,
        artifacts: openfactory_artifacts::ArtifactStore,
        planner: Planner,
        signer: LinkSigner,
        vms: Vms,
        settings: Settings,
    ) -> Arc<App> {
        Arc::new(App {
            store: store.clone(),
            artifacts: Arc::new(artifacts),
            planner,
            signer,
            vms,
            oauth: openfactory_oauth::OAuth::new(store.clone(), settings.oauth.clone()).expect(
                "the client for OAuth client metadata documents starts (its policy was checked)",
            ),
            settings,
            metrics: Metrics::new(),
            auth: Auth::default(),
            wake: Wake::default(),
            seen: crate::throttle::Throttle::per_minute(std::num::NonZeroU32::MIN),
        })
    }
}

/// The template catalog and the feature plugins a recipe is planned with.
pub struct Planner {
    pub catalog: Catalog,
    pub plugins: Arc<PluginHost>,
    /// Each template's recipe digest with these plugins: neither changes
    /// while the process runs, so it is computed once, when first asked.
    template_digests: tokio::sync::OnceCell<BTreeMap<String, String>>,
}

impl Planner {
    pub fn new(catalog: Catalog, plugins: PluginHost) -> Planner {
        Planner {
            catalog,
            plugins: Arc::new(plugins),
            template_digests: tokio::sync::OnceCell::new(),
        }
    }

    /// What the catalog's proofs say of template `id` as the installed
    /// plugins plan it now ([`openfactory_core::proof`]).
    pub async fn proof_status(&self, id: &str) -> proof::Status {
        let digests = self
            .template_digests
            .get_or_init(|| async {
                let templates: Vec<_> = self
                    .catalog
                    .templates
                    .iter()
                    .map(|t| (t.id.clone(), t.recipe.clone()))
                    .collect();
                self.run(move |set| {
                    templates
                        .into_iter()
                        .filter_map(|(id, recipe)| {
                            let digest =
                                openfactory_core::plan::validate(&recipe, set).recipe_digest?;
                            Some((id, digest.to_string()))
                        })
                        .collect()
                })
                .await
                .unwrap_or_default()
            })
            .await;
        match digests.get(id) {
            Some(digest) => self.catalog.proofs.status(id, digest),
            None => proof::Status::Unproven,
        }
    }

    /// Validate and plan `recipe` (a recipe as JSON) with the installed
    /// features. A planner too busy to evaluate a plugin now is
    /// `Unavailable` (try again shortly), never an invalid recipe.
    pub async fn plan(&self, recipe: serde_json::Value) -> Result<openfactory_core::plan::Outcome> {
        let outcome = self
            .run(move |set| openfactory_core::plan::plan_value(recipe, set, true))
            .await?;
        if let Some(busy) = outcome
            .diagnostics
            .iter()
            .find(|d| d.code == openfactory_core::plan::PLANNER_BUSY)
        {
            return Err(Error::unavailable(format!(
                "{}; nothing was queued",
                busy.message
            )));
        }
        Ok(outcome)
    }

    /// Run the planner off the async runtime: plugins are CPU-bound.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn FeatureSet) -> T + Send + 'static,
    ) -> Result<T> {
        let plugins = self.plugins.clone();
        tokio::task::spawn_blocking(move || f(plugins.as_ref()))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "the planner failed");
                Error::internal(format!("the planner failed unexpectedly: {e}"))
            })
    }
}

/// The VM backend and the bounds every owner's VMs live within.
pub struct Vms {
    pub backend: std::sync::Arc<Backend>,
    pub max_memory_mb: u32,
    pub max_vcpus: u32,
    /// VMs one owner may have.
    pub max_vms: u32,
    /// The vendored noVNC package (`@novnc/novnc`); without it there is no browser console.
    pub novnc_dir: Option<PathBuf>,
}

/// Where builds live, where the server is reached, and the per-owner limits
/// of builds and test runs.
pub struct Settings {
    /// Base of download and console URLs, e.g. `http://127.0.0.1:8080`; `None` over stdio.
    pub public_url: Option<String>,
    /// `<home>/builds`: one directory per build with its ISO, log, manifest, SBOM.
    pub builds_dir: PathBuf,
    /// Queued + running builds one owner may have.
    pub max_active_builds: u32,
    /// Bytes one owner's finished builds may keep on disk; 0: no limit.
    pub max_disk_bytes: u64,
    /// Queued + running test runs one owner may have.
    pub max_active_test_runs: u32,
    /// Longest a test run may take (boot and checks), seconds.
    pub max_test_timeout_seconds: u32,
    /// The OAuth issuer (the public URL), the protected resources, token lifetimes.
    pub oauth: openfactory_oauth::Settings,
}

impl Settings {
    /// A build's directory.
    pub fn build_dir(&self, id: &str) -> PathBuf {
        self.builds_dir.join(id)
    }
}

/// What wakes the workers when there is work.
#[derive(Default)]
pub struct Wake {
    /// A build was queued.
    pub builds: Notify,
    /// A test run was queued.
    pub test_runs: Notify,
}
