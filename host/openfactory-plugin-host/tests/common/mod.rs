//! Shared set-up: a temporary OpenFactory home with the real, signed plugin
//! bundles built by `cargo xtask plugins`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use openfactory_plugin_host::{HostConfig, Limits, PluginHost, PublicKey, TrustStore, registry};

pub fn workspace() -> PathBuf {
    // host/<crate>/ → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

fn env_path(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default));
    assert!(
        path.exists(),
        "{} does not exist: build the plugins first with `cargo xtask plugins` (or run the suite with `cargo xtask test`)",
        path.display()
    );
    path
}

pub fn bundles() -> PathBuf {
    env_path("OPENFACTORY_BUNDLES", "target/bundles")
}

pub fn test_bundles() -> PathBuf {
    env_path("OPENFACTORY_TEST_BUNDLES", "target/test-bundles")
}

pub fn project_key() -> PublicKey {
    PublicKey::read(&env_path(
        "OPENFACTORY_PROJECT_KEY",
        "target/signing/project.pub",
    ))
    .unwrap()
}

pub fn first_party() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(bundles())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// A temporary home with the project key trusted.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        let home = Home {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(home.keys()).unwrap();
        let key = project_key();
        std::fs::write(home.keys().join(format!("{}.pub", key.id())), key.to_line()).unwrap();
        home
    }

    /// A home with every first-party bundle installed, each granted the
    /// privileges it declares (as `cargo xtask install` does).
    pub fn with_first_party() -> Home {
        let home = Home::new();
        for bundle in first_party() {
            home.install(&bundle).unwrap();
            let manifest = openfactory_plugin_host::Bundle::open(&bundle)
                .unwrap()
                .manifest;
            let declared = manifest.capabilities.privileges();
            openfactory_plugin_host::grants::save(&home.plugins(), &manifest.name, &declared)
                .unwrap();
        }
        home
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn keys(&self) -> PathBuf {
        self.dir.path().join("trusted-keys")
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::load(&self.keys()).unwrap()
    }

    /// Install as `plugin install` does: the install-time check compiles
    /// into this home's cache, so the first start after it is warm.
    pub fn install(&self, bundle: &Path) -> Result<(), openfactory_plugin_host::BundleError> {
        let trust = self.trust();
        let options = registry::InstallOptions {
            cache_dir: Some(self.cache()),
            ..registry::InstallOptions::new(&trust)
        };
        registry::install_with(&self.plugins(), bundle, &options).map(|_| ())
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn config(&self) -> HostConfig {
        HostConfig {
            plugins_dir: self.plugins(),
            trusted_keys_dir: self.keys(),
            cache_dir: Some(self.cache()),
            allow_unsigned: false,
            limits: Limits::default(),
        }
    }

    pub fn load(&self) -> PluginHost {
        PluginHost::load(&self.config()).unwrap()
    }
}
