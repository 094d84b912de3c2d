//! Feature plugins for OpenFactory: signed bundles, installed in a plugins
//! directory, run in a wasmtime sandbox.
//!
//! [`PluginHost`] loads every installed bundle, verifies it, compiles it (or
//! loads it from the compiled cache), asks it to describe itself, and then
//! serves the planner as an [`openfactory_core::FeatureSet`].
//!
//! A plugin's identity is its name, and its name is its directory: a bundle
//! whose directory is not its manifest's name, or whose name is reserved
//! ([`openfactory_core::plan::RESERVED_NAMES`]), is not loaded, and neither
//! are two bundles that claim one name.

pub mod archive;
pub mod bundle;
pub mod cache;
pub mod grants;
pub mod registry;
pub mod runtime;
pub mod signing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openfactory_core::plan::{Evaluation, Feature, FeatureSet, PlanContext, RuntimeError};

pub use bundle::{Bundle, BundleError, Signer};
pub use runtime::Limits;
pub use signing::{PublicKey, SecretKey, TrustStore};

/// How plugins are found and trusted.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Installed bundles, one directory each.
    pub plugins_dir: PathBuf,
    /// Directory of trusted `*.pub` keys.
    pub trusted_keys_dir: PathBuf,
    /// Compiled-component cache; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Load bundles whose signature is missing or untrusted.
    pub allow_unsigned: bool,
    pub limits: Limits,
}

/// A plugin that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct LoadProblem {
    pub bundle: String,
    pub reason: String,
}

/// A loaded plugin.
pub struct Loaded {
    pub feature: Feature,
    pub bundle: Bundle,
    pub signer: Signer,
    prepared: runtime::Prepared,
}

/// What a start cost, for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadStats {
    pub plugins: usize,
    pub from_cache: usize,
    pub elapsed: Duration,
}

/// Every installed, verified plugin, ready to plan.
pub struct PluginHost {
    loaded: BTreeMap<String, Loaded>,
    problems: Vec<LoadProblem>,
    stats: LoadStats,
    limits: Limits,
}

impl PluginHost {
    /// Load every bundle in the plugins directory. A bundle that fails to
    /// verify or load is reported in [`PluginHost::problems`] and skipped;
    /// the others still load.
    pub fn load(config: &HostConfig) -> Result<PluginHost, HostError> {
        let started = Instant::now();
        let runtime =
            runtime::Runtime::new(config.limits).map_err(|e| HostError::Engine(e.to_string()))?;
        let trust = TrustStore::load(&config.trusted_keys_dir)?;
        let cache = cache::CompiledCache::new(config.cache_dir.clone());
        let mut host = PluginHost {
            loaded: BTreeMap::new(),
            problems: Vec::new(),
            stats: LoadStats::default(),
            limits: config.limits,
        };
        // Names claimed by more than one bundle: none of their bundles loads.
        let mut claimed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for dir in registry::bundle_dirs(&config.plugins_dir)? {
            let label = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match load_one(&runtime, &cache, &trust, config.allow_unsigned, &dir) {
                Ok((loaded, cached)) => {
                    if let Signer::Unverified { reason } = &loaded.signer {
                        tracing::warn!(plugin = %label, %reason, "loading an unsigned plugin because unsigned plugins are allowed");
                    }
                    host.stats.from_cache += cached as usize;
                    let name = loaded.feature.name().to_owned();
                    claimed.entry(name.clone()).or_default().push(label);
                    if host.loaded.contains_key(&name) {
                        continue;
                    }
                    host.loaded.insert(name, loaded);
                }
                Err(reason) => {
                    tracing::error!(plugin = %label, %reason, "plugin not loaded");
                    host.problems.push(LoadProblem {
                        bundle: label,
                        reason,
                    });
                }
            }
        }
        for (name, dirs) in claimed.into_iter().filter(|(_, d)| d.len() > 1) {
            host.loaded.remove(&name);
            let list: Vec<String> = dirs.iter().map(|d| format!("`{d}`")).collect();
            for dir in dirs.iter() {
                let reason = format!(
                    "the bundles in {} all say they are `{name}`; one name, one bundle: none of them is loaded (remove all but one)",
                    list.join(", ")
                );
                tracing::error!(plugin = %dir, %reason, "plugin not loaded");
                host.problems.push(LoadProblem {
                    bundle: dir.clone(),
                    reason,
                });
            }
        }
        host.stats.plugins = host.loaded.len();
        host.stats.elapsed = started.elapsed();
        Ok(host)
    }

    pub fn problems(&self) -> &[LoadProblem] {
        &self.problems
    }

    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    /// The sandbox every plugin call runs in.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Loaded> {
        self.loaded.values()
    }

    pub fn plugin(&self, name: &str) -> Option<&Loaded> {
        self.loaded.get(name)
    }
}

fn load_one(
    runtime: &runtime::Runtime,
    cache: &cache::CompiledCache,
    trust: &TrustStore,
    allow_unsigned: bool,
    dir: &std::path::Path,
) -> Result<(Loaded, bool), String> {
    let bundle = Bundle::open(dir).map_err(|e| e.to_string())?;
    let name = bundle.name().to_owned();
    // A plugin's directory is its name: a copy of a bundle elsewhere must
    // not stand in for the plugin of that name.
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir_name != name {
        return Err(format!(
            "the directory `{dir_name}` holds a bundle whose manifest names it `{name}`; a plugin's directory is its name (remove `{dir_name}`, and install the bundle with `openfactory plugin install`)"
        ));
    }
    let signer = bundle
        .verify(trust, allow_unsigned)
        .map_err(|e| e.to_string())?;
    let component_digest = bundle
        .manifest
        .component_digest()
        .expect("verified bundles have a digest")
        .to_owned();
    let (prepared, cached) = runtime::load(
        runtime,
        cache,
        &name,
        &component_digest,
        &bundle.component_path(),
        bundle.assets_dir(),
    )
    .map_err(|e| format!("plugin `{name}`: {e}"))?;
    let info = prepared
        .describe()
        .map_err(|e| format!("plugin `{name}`: describe failed: {e}"))?;
    check_description(&bundle.manifest, &info)?;
    let plugins_dir = dir.parent().unwrap_or(dir);
    // The plugin's digest covers its assets too: the same component with
    // other assets plans other steps, and so is another plugin.
    let feature = Feature::new(info, bundle.manifest.bundle_digest())
        .map_err(|e| format!("plugin `{name}`: {e}"))?
        .with_capabilities(
            bundle.manifest.capabilities.clone(),
            grants::load(plugins_dir, &name),
        );
    Ok((
        Loaded {
            feature,
            bundle,
            signer,
            prepared,
        },
        cached,
    ))
}

/// A component must describe itself as its manifest says (checked at
/// install and at every start).
pub(crate) fn check_description(
    manifest: &bundle::Manifest,
    info: &openfactory_core::plan::FeatureInfo,
) -> Result<(), String> {
    if info.name != manifest.name {
        return Err(format!(
            "the manifest names the plugin `{}` but its component describes itself as `{}`; repack it with `openfactory plugin pack`, which takes the name from the component",
            manifest.name, info.name
        ));
    }
    if info.version != manifest.version {
        return Err(format!(
            "plugin `{}`: the manifest says version {} but the component says {}; repack it with `openfactory plugin pack`, which takes the version from the component",
            manifest.name, manifest.version, info.version
        ));
    }
    Ok(())
}

impl FeatureSet for PluginHost {
    fn features(&self) -> Vec<&Feature> {
        self.loaded.values().map(|l| &l.feature).collect()
    }

    fn feature(&self, name: &str) -> Option<&Feature> {
        self.loaded.get(name).map(|l| &l.feature)
    }

    fn evaluate(
        &self,
        feature: &str,
        ctx: &PlanContext,
        plan: bool,
    ) -> Result<Evaluation, RuntimeError> {
        let loaded = self
            .loaded
            .get(feature)
            .ok_or_else(|| RuntimeError::Failed(format!("feature `{feature}` is not loaded")))?;
        loaded.prepared.evaluate(ctx, plan)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the WebAssembly engine could not start: {0}")]
    Engine(String),
    #[error(transparent)]
    Key(#[from] signing::KeyError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}
