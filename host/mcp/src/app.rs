//! The application state every transport shares.

use std::sync::Arc;

use openfactory_core::catalog::Catalog;
use openfactory_plugin_host::PluginHost;
use openfactory_store::Store;

use crate::builds::BuildSettings;
use crate::metrics::Metrics;
use crate::vms::VmSettings;

/// Catalog, plugins, database and metrics: built once, shared by every session.
pub struct App {
    pub catalog: Catalog,
    pub plugins: Arc<PluginHost>,
    pub store: Store,
    pub metrics: Metrics,
    pub builds: BuildSettings,
    pub vms: VmSettings,
}

impl App {
    pub fn new(
        catalog: Catalog,
        plugins: PluginHost,
        store: Store,
        builds: BuildSettings,
        vms: VmSettings,
    ) -> Arc<App> {
        Arc::new(App {
            catalog,
            plugins: Arc::new(plugins),
            store,
            metrics: Metrics::new(),
            builds,
            vms,
        })
    }
}
