//! The application state every transport shares.

use std::sync::Arc;

use openfactory_core::catalog::Catalog;
use openfactory_plugin_host::PluginHost;
use openfactory_store::Store;

use crate::builds::BuildSettings;
use crate::metrics::Metrics;
use crate::test_runs::TestSettings;
use crate::vms::VmSettings;

/// Catalog, plugins, database and metrics: built once, shared by every session.
pub struct App {
    pub catalog: Catalog,
    pub plugins: Arc<PluginHost>,
    pub store: Store,
    pub metrics: Metrics,
    pub builds: BuildSettings,
    pub vms: VmSettings,
    pub tests: TestSettings,
    pub auth: crate::auth::Auth,
}

impl App {
    pub fn new(
        catalog: Catalog,
        plugins: PluginHost,
        store: Store,
        builds: BuildSettings,
        vms: VmSettings,
        tests: TestSettings,
    ) -> Arc<App> {
        Arc::new(App {
            catalog,
            plugins: Arc::new(plugins),
            store,
            metrics: Metrics::new(),
            builds,
            vms,
            tests,
            auth: crate::auth::Auth::default(),
        })
    }
}
