//! What the service's integration tests share: an `App` on a real
//! (in-memory SQLite) store, with no plugins and a VM backend of the test's
//! choosing.

#![allow(dead_code)]

use std::sync::Arc;

use openfactory_core::catalog::Catalog;
use openfactory_plugin_host::{HostConfig, Limits, PluginHost};
use openfactory_service::links::LinkSigner;
use openfactory_service::{App, Planner, Settings, Vms};
use openfactory_store::{BuildEnd, BuildRecord, NewBuild, OwnerId, Store};
use openfactory_vm::{AccelSetting, Backend, QemuBackend};

pub fn signer() -> LinkSigner {
    LinkSigner::new([7; 32])
}

/// An `App` on `store`: no plugins, no templates, a QEMU backend in a
/// temporary directory (nothing here starts a VM).
pub fn app(store: Store, dir: &tempfile::TempDir) -> Arc<App> {
    let vms = dir.path().join("vms");
    app_on(
        store,
        dir,
        Backend::Qemu(QemuBackend::new(&vms, AccelSetting::Tcg)),
    )
}

/// The same `App` on another VM backend (the test double).
pub fn app_on(store: Store, dir: &tempfile::TempDir, backend: Backend) -> Arc<App> {
    let sub = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let plugins = PluginHost::load(&HostConfig {
        plugins_dir: sub("plugins"),
        trusted_keys_dir: sub("trusted"),
        cache_dir: None,
        allow_unsigned: false,
        limits: Limits::default(),
    })
    .unwrap();
    let (catalog, _) = Catalog::load(&sub("recipes"));
    let artifacts = openfactory_artifacts::ArtifactStore::open(
        &openfactory_artifacts::Location::Local(sub("builds")),
        &sub("artifact-cache"),
    )
    .unwrap();
    App::new(
        store,
        artifacts,
        Planner::new(catalog, plugins),
        signer(),
        Vms {
            backend: Arc::new(backend),
            max_memory_mb: 2048,
            max_vcpus: 2,
            max_vms: 3,
            novnc_dir: None,
        },
        Settings {
            public_url: Some("http://127.0.0.1:8080".into()),
            builds_dir: sub("builds"),
            max_active_builds: 2,
            max_disk_bytes: 1 << 30,
            max_active_test_runs: 2,
            max_test_timeout_seconds: 900,
            oauth: openfactory_oauth::Settings::new("http://127.0.0.1:8080", Vec::new()),
        },
    )
}

pub fn new_build(id: &str) -> NewBuild<'_> {
    NewBuild {
        id,
        recipe_digest: "r1",
        recipe_name: "web",
        recipe_json: "{}",
        plan_json: "{}",
        features: &[],
        retry_of: None,
        needs: openfactory_store::Needs {
            arch: "amd64",
            disk_bytes: 0,
        },
    }
}

/// The SHA-256 the builds of [`completed_build`] claim for their ISO.
pub const ISO_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A build of `owner`'s, queued, claimed and completed with a 4 KiB ISO.
pub async fn completed_build(store: &Store, owner: &OwnerId, id: &str) -> BuildRecord {
    store.create_build(owner, &new_build(id)).await.unwrap();
    let (lease, _) = store
        .claim_build(&openfactory_store::Claimer {
            worker: "w",
            arch: "amd64",
            free_disk_bytes: u64::MAX,
        })
        .await
        .unwrap()
        .unwrap();
    store
        .finish_build(
            &lease,
            BuildEnd::Completed {
                iso_sha256: ISO_SHA256,
                iso_size_bytes: 4096,
                result_json: "{}",
            },
        )
        .await
        .unwrap();
    store.build(owner, &lease.id).await.unwrap().unwrap()
}
