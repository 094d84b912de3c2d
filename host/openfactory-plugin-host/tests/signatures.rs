//! Only bundles signed by a trusted key, and unmodified since, are installed
//! or loaded.

mod common;

use std::path::Path;

use common::Home;
use openfactory_plugin_host::{BundleError, SecretKey, TrustStore, bundle, registry};

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn ssh_copy(dir: &Path) -> std::path::PathBuf {
    let target = dir.join("ssh");
    copy(&common::bundles().join("ssh"), &target);
    target
}

#[test]
fn a_tampered_component_is_refused_at_install() {
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    let bundle = ssh_copy(scratch.path());
    let wasm = bundle.join("plugin.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&wasm, bytes).unwrap();
    let err = home.install(&bundle).unwrap_err().to_string();
    assert!(err.contains("does not match its digest"), "{err}");
    // Even with unsigned bundles allowed, a wrong digest is refused.
    let err = registry::install(&home.plugins(), &bundle, &home.trust(), true, false).unwrap_err();
    assert!(err.to_string().contains("does not match its digest"));
    assert!(
        !home.plugins().join("ssh").exists(),
        "nothing half-installed"
    );
}

#[test]
fn an_untrusted_signer_is_refused_unless_allowed() {
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    let bundle = ssh_copy(scratch.path());
    let stranger = SecretKey::generate().unwrap();
    bundle::sign(&bundle, &stranger).unwrap();
    assert!(matches!(
        home.install(&bundle),
        Err(BundleError::Untrusted { .. })
    ));
    // The operator may allow it explicitly.
    let (_, signer) =
        registry::install(&home.plugins(), &bundle, &home.trust(), true, false).unwrap();
    assert!(matches!(
        signer,
        openfactory_plugin_host::Signer::Unverified { .. }
    ));
}

#[test]
fn a_bundle_tampered_after_install_is_not_loaded_and_others_still_are() {
    let home = Home::with_first_party();
    let installed = home.plugins().join("docker/manifest.toml");
    let text = std::fs::read_to_string(&installed)
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"0.1.1\"");
    std::fs::write(&installed, text).unwrap();
    let host = home.load();
    assert_eq!(host.problems().len(), 1, "{:?}", host.problems());
    assert!(
        host.problems()[0]
            .reason
            .contains("signature does not match"),
        "{:?}",
        host.problems()
    );
    assert!(host.plugin("docker").is_none());
    assert!(host.plugin("ssh").is_some());
}

#[test]
fn reinstalling_needs_replace_and_is_atomic() {
    let home = Home::new();
    let ssh = common::bundles().join("ssh");
    home.install(&ssh).unwrap();
    let err = home.install(&ssh).unwrap_err().to_string();
    assert!(err.contains("already installed"), "{err}");
    registry::install(&home.plugins(), &ssh, &home.trust(), false, true).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(home.plugins())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
    registry::remove(&home.plugins(), "ssh").unwrap();
    assert!(registry::remove(&home.plugins(), "../trusted-keys").is_err());
    assert!(TrustStore::load(&home.keys()).unwrap().keys().len() == 1);
}
