//! Only bundles signed by a trusted key, and unmodified since, are installed
//! or loaded.

mod common;

use std::path::Path;

use common::Home;
use openfactory_core::capability::Privilege;
use openfactory_plugin_host::registry::InstallOptions;
use openfactory_plugin_host::{
    BundleError, SecretKey, Signer, TrustStore, bundle, grants, registry, signing,
};

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

/// A copy of the ssh bundle re-signed by `key`, in `dir/ssh`.
fn ssh_signed_by(dir: &Path, key: &SecretKey) -> std::path::PathBuf {
    let bundle = ssh_copy(dir);
    bundle::sign(&bundle, key).unwrap();
    bundle
}

/// Trust `key` in the home (for any name, or only `names`).
fn trust(home: &Home, key: &SecretKey, comment: &str, names: Option<&[&str]>) {
    let names = names.map(|n| n.iter().map(|s| s.to_string()).collect());
    signing::trust(&home.keys(), &key.public(comment), names.as_ref()).unwrap();
}

fn options(trust: &TrustStore) -> InstallOptions<'_> {
    InstallOptions {
        replace: true,
        ..InstallOptions::new(trust)
    }
}

#[test]
fn a_copy_of_a_bundle_in_another_directory_does_not_stand_in_for_the_plugin() {
    let home = Home::with_first_party();
    // The genuine, signed ssh bundle, copied under another directory name
    // that sorts after `ssh` (today's loader let the later one win).
    copy(&home.plugins().join("ssh"), &home.plugins().join("zzz"));
    let host = home.load();
    let ssh = host.plugin("ssh").expect("the installed ssh still loads");
    assert_eq!(ssh.bundle.dir, home.plugins().join("ssh"));
    assert_eq!(host.problems().len(), 1, "{:?}", host.problems());
    let problem = &host.problems()[0];
    assert_eq!(problem.bundle, "zzz");
    assert!(
        problem.reason.contains("`zzz`")
            && problem.reason.contains("`ssh`")
            && problem.reason.contains("directory is its name"),
        "{}",
        problem.reason
    );
    // The same with the first-party copy removed: a stray directory never
    // becomes the plugin.
    registry::remove(&home.plugins(), "ssh").unwrap();
    let host = home.load();
    assert!(host.plugin("ssh").is_none());
    assert_eq!(host.problems().len(), 1, "{:?}", host.problems());
}

#[test]
fn reserved_names_are_refused_at_install_and_at_load() {
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    for name in openfactory_core::plan::RESERVED_NAMES {
        // A bundle whose manifest calls itself `recipe`. (No key signs one:
        // `bundle::sign` refuses the name too; the name is refused before
        // any signature is looked at, so this one keeps the old one.)
        let bundle = scratch.path().join(name);
        copy(&common::bundles().join("ssh"), &bundle);
        let manifest = bundle.join(bundle::MANIFEST);
        let text = std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("name = \"ssh\"", &format!("name = \"{name}\""));
        std::fs::write(&manifest, text).unwrap();
        let err = home.install(&bundle).unwrap_err().to_string();
        assert!(err.contains(&format!("`{name}` is reserved")), "{err}");
        assert!(!home.plugins().join(name).exists());
        // Put there by hand, it is not loaded either.
        copy(&bundle, &home.plugins().join(name));
        let host = home.load();
        assert!(host.plugin(name).is_none());
        let problem = host.problems().iter().find(|p| p.bundle == *name).unwrap();
        assert!(problem.reason.contains("is reserved"), "{}", problem.reason);
    }
}

#[test]
fn replacing_a_plugin_with_another_signers_bundle_needs_consent() {
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    home.install(&common::bundles().join("ssh")).unwrap();
    let mallory = SecretKey::generate().unwrap();
    trust(&home, &mallory, "Mallory", None);
    let theirs = ssh_signed_by(scratch.path(), &mallory);
    let trusted = home.trust();

    // Same name, both keys trusted: refused, naming both signers.
    let err = registry::install_with(&home.plugins(), &theirs, &options(&trusted)).unwrap_err();
    assert!(matches!(err, BundleError::SignerChanged { .. }), "{err}");
    let err = err.to_string();
    let project = common::project_key();
    assert!(
        err.contains(&format!("signed by {} ({})", project.comment, project.id()))
            && err.contains(&format!("signed by Mallory ({})", mallory.public("").id()))
            && err.contains("--new-signer"),
        "{err}"
    );
    let installed = openfactory_plugin_host::Bundle::open(&home.plugins().join("ssh")).unwrap();
    assert_eq!(installed.signature_key_id(), Some(project.id()));

    // Unsigned over signed is a change of signer too.
    let unsigned = scratch.path().join("unsigned");
    copy(&common::bundles().join("ssh"), &unsigned);
    std::fs::remove_file(unsigned.join(bundle::SIGNATURE)).unwrap();
    let lax = InstallOptions {
        allow_unsigned: true,
        ..options(&trusted)
    };
    let err = registry::install_with(&home.plugins(), &unsigned, &lax)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("this bundle (version 0.1.0) is unsigned"),
        "{err}"
    );

    // The same signer replaces without a word, and what was granted stays.
    let granted = std::collections::BTreeSet::from([Privilege::Sudoers]);
    grants::save(&home.plugins(), "ssh", &granted).unwrap();
    let same = registry::install_with(
        &home.plugins(),
        &common::bundles().join("ssh"),
        &options(&trusted),
    )
    .unwrap();
    assert!(!same.replaced.unwrap().signer_changed);
    assert_eq!(grants::load(&home.plugins(), "ssh"), granted);

    // With consent, it is replaced and the change is reported.
    let consent = InstallOptions {
        new_signer: true,
        ..options(&trusted)
    };
    let done = registry::install_with(&home.plugins(), &theirs, &consent).unwrap();
    let replaced = done.replaced.unwrap();
    assert!(replaced.signer_changed);
    assert!(
        replaced.signer.contains(&project.id()),
        "{}",
        replaced.signer
    );
    assert!(matches!(done.signer, Signer::Trusted { ref comment, .. } if comment == "Mallory"));
    // A grant trusted the project's code, not Mallory's.
    assert!(grants::load(&home.plugins(), "ssh").is_empty());
}

#[test]
fn a_key_trusted_for_some_names_signs_only_those() {
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    let jane = SecretKey::generate().unwrap();
    trust(&home, &jane, "Jane", Some(&["docker"]));
    let ssh = ssh_signed_by(scratch.path(), &jane);
    let err = home.install(&ssh).unwrap_err();
    assert!(matches!(err, BundleError::Untrusted { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("trusted to sign only bundles named docker, not `ssh`"),
        "{err}"
    );
    assert!(!home.plugins().join("ssh").exists());
    // The restriction holds at load too: installed while the key signed any
    // name, the bundle stops loading once the key is restricted.
    trust(&home, &jane, "Jane", None);
    home.install(&ssh).unwrap();
    assert!(home.load().plugin("ssh").is_some());
    trust(&home, &jane, "Jane", Some(&["docker", "podman"]));
    let host = home.load();
    assert!(host.plugin("ssh").is_none());
    assert!(
        host.problems()[0].reason.contains("docker, podman"),
        "{:?}",
        host.problems()
    );
    trust(&home, &jane, "Jane", Some(&["docker", "ssh"]));
    assert!(home.load().plugin("ssh").is_some());
}

#[test]
fn a_manifest_that_disagrees_with_its_component_is_refused_at_install() {
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    let author = SecretKey::generate().unwrap();
    trust(&home, &author, "Author", None);
    for (field, from, to, says) in [
        (
            "version",
            "version = \"0.1.0\"",
            "version = \"9.9.9\"",
            "the manifest says version 9.9.9 but the component says 0.1.0",
        ),
        (
            "name",
            "name = \"ssh\"",
            "name = \"sshd\"",
            "names the plugin `sshd` but its component describes itself as `ssh`",
        ),
    ] {
        let bundle = scratch.path().join(field);
        copy(&common::bundles().join("ssh"), &bundle);
        let manifest = bundle.join(bundle::MANIFEST);
        let text = std::fs::read_to_string(&manifest)
            .unwrap()
            .replace(from, to);
        std::fs::write(&manifest, text).unwrap();
        // Signed by a trusted key: only the component can tell.
        bundle::sign(&bundle, &author).unwrap();
        let err = home.install(&bundle).unwrap_err().to_string();
        assert!(
            err.contains(says) && err.contains("openfactory plugin pack"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(home.plugins())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "nothing is installed: {left:?}");
    }
}

#[test]
fn the_plugin_digest_covers_its_assets_and_the_cache_still_keys_on_the_component() {
    use openfactory_core::plan::{self, FeatureSet};
    use openfactory_core::validate::Format;
    let home = Home::new();
    let scratch = tempfile::tempdir().unwrap();
    let author = SecretKey::generate().unwrap();
    trust(&home, &author, "Author", None);
    let fixture = common::test_bundles().join("hostile");
    let manifest = openfactory_plugin_host::Bundle::open(&fixture)
        .unwrap()
        .manifest;
    let recipe = "name = \"r\"\nbase_image = \"debian-bookworm\"\nfeatures = [\"hostile\"]\n";
    let mut seen = Vec::new();
    for secret in ["one", "two"] {
        let assets = scratch.path().join(format!("assets-{secret}"));
        std::fs::create_dir_all(&assets).unwrap();
        std::fs::write(assets.join("secret.txt"), secret).unwrap();
        let out = scratch.path().join(format!("hostile-{secret}"));
        bundle::pack(
            &out,
            "hostile",
            &manifest.version,
            &fixture.join(bundle::COMPONENT),
            Some(&assets),
            &manifest.capabilities,
            Some(&author),
        )
        .unwrap();
        let trusted = home.trust();
        let replace = InstallOptions {
            new_signer: true,
            cache_dir: Some(home.cache()),
            ..options(&trusted)
        };
        registry::install_with(&home.plugins(), &out, &replace).unwrap();
        let host = home.load();
        let loaded = host.plugin("hostile").unwrap();
        assert_eq!(
            loaded.feature.digest,
            loaded.bundle.manifest.bundle_digest()
        );
        assert_eq!(
            loaded.bundle.manifest.component_digest(),
            manifest.component_digest(),
            "one component"
        );
        // Compiled once, at the first install: the cache keys on the component.
        assert_eq!(host.stats().from_cache, 1);
        let outcome = plan::plan_text(recipe, Format::Toml, &host as &dyn FeatureSet, false);
        seen.push((
            loaded.feature.digest.clone(),
            outcome.recipe_digest.unwrap(),
        ));
    }
    let artifacts = std::fs::read_dir(home.cache()).unwrap().count();
    assert_eq!(artifacts, 1, "one compiled artifact for one component");
    assert_ne!(seen[0].0, seen[1].0, "other assets, another plugin digest");
    assert_ne!(seen[0].1, seen[1].1, "other assets, another recipe id");
}

#[test]
fn installed_files_and_directories_have_one_fixed_time() {
    let home = Home::new();
    home.install(&common::test_bundles().join("hostile"))
        .unwrap();
    let dir = home.plugins().join("hostile");
    fn tree(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        out.push(dir.to_owned());
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                tree(&entry.path(), out);
            } else {
                out.push(entry.path());
            }
        }
    }
    let mut paths = Vec::new();
    tree(&dir, &mut paths);
    assert!(paths.contains(&dir.join("assets/secret.txt")), "{paths:?}");
    for path in paths {
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(modified, bundle::fixed_time(), "{}", path.display());
    }
}
