//! The VM operations against a real (in-memory SQLite) store and the
//! `VmBackend` test double: the service keeps its rows and the backend's VMs
//! in step, bounds what callers ask for, and answers another owner's VM like
//! a missing one.

mod common;

use common::{app_on, completed_build};
use openfactory_service::{BuildId, ErrorKind, VmName, vms};
use openfactory_store::{OwnerId, Store};
use openfactory_vm::{Backend, DoubleBackend, VmBackend as _};

fn name(n: &str) -> VmName {
    VmName::parse("vm_name", n).unwrap()
}

/// An `App` on the double, and one completed build of `owner`'s.
async fn fixture(
    owner: &OwnerId,
) -> (
    std::sync::Arc<openfactory_service::App>,
    DoubleBackend,
    BuildId,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite::memory:").await.unwrap();
    completed_build(&store, owner, "b1").await;
    let double = DoubleBackend::new();
    let app = app_on(store, &dir, Backend::Double(double.clone()));
    // Its ISO, where the local artifact store keeps it.
    let iso = app.settings.builds_dir.join("b1");
    std::fs::create_dir_all(&iso).unwrap();
    std::fs::write(iso.join(openfactory_build::pipeline::ISO_FILE), [0u8; 4096]).unwrap();
    (app, double, BuildId::parse("build_id", "b1").unwrap(), dir)
}

#[tokio::test]
async fn a_vm_of_a_completed_build_lives_through_its_lifecycle_in_step_with_the_backend() {
    let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
    let (app, double, build, _dir) = fixture(&alice).await;

    let made = vms::create(&app, &alice, &build, &name("web-1"), Some(512), Some(1))
        .await
        .unwrap();
    assert_eq!(made.name, "web-1");
    assert_eq!((made.memory_mb, made.vcpus), (512, 1));
    let listed = vms::list(&app, &alice, None).await.unwrap();
    assert_eq!(listed.count, 1);
    let ids = double.list();
    assert_eq!(ids.len(), 1, "one VM in the backend");
    let id = ids[0].clone();
    assert!(double.is_running(&id));

    let stopped = vms::stop(&app, &alice, &name("web-1"), false)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(stopped.state).unwrap(), "stopped");
    assert!(!double.is_running(&id));
    vms::start(&app, &alice, &name("web-1")).await.unwrap();
    assert!(double.is_running(&id));

    vms::delete(&app, &alice, &name("web-1")).await.unwrap();
    assert_eq!(double.deletes(&id), 1);
    assert!(double.list().is_empty());
    assert_eq!(vms::list(&app, &alice, None).await.unwrap().count, 0);
}

#[tokio::test]
async fn another_owners_vm_and_build_answer_like_missing_ones() {
    let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
    let bob = OwnerId::ip("192.0.2.2".parse().unwrap());
    let (app, double, build, _dir) = fixture(&alice).await;
    vms::create(&app, &alice, &build, &name("web-1"), None, None)
        .await
        .unwrap();

    let theirs = vms::stop(&app, &bob, &name("web-1"), true)
        .await
        .unwrap_err();
    let nobodys = vms::stop(&app, &bob, &name("web-9"), true)
        .await
        .unwrap_err();
    assert_eq!(theirs.kind, ErrorKind::NotFound);
    assert_eq!(
        theirs.message.replace("web-1", "X"),
        nobodys.message.replace("web-9", "X"),
        "another owner's VM reads exactly like a missing one"
    );
    let built = vms::create(&app, &bob, &build, &name("mine"), None, None)
        .await
        .unwrap_err();
    assert_eq!(built.kind, ErrorKind::NotFound, "{built}");
    assert_eq!(vms::list(&app, &bob, None).await.unwrap().count, 0);
    assert_eq!(double.list().len(), 1, "bob's attempts made no VM");
    assert!(
        double.is_running(&double.list()[0]),
        "alice's VM was not stopped"
    );
}

#[tokio::test]
async fn a_create_the_backend_refuses_leaves_neither_a_row_nor_a_vm() {
    let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
    let (app, double, build, _dir) = fixture(&alice).await;
    double.fail_create(Some("qemu: could not open the ISO"));

    let e = vms::create(&app, &alice, &build, &name("web-1"), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("could not open the ISO"), "{e}");
    assert_eq!(vms::list(&app, &alice, None).await.unwrap().count, 0);
    assert!(
        double.list().is_empty(),
        "the backend's record was removed: {:?}",
        double.calls()
    );

    // The name is free again.
    double.fail_create(None);
    vms::create(&app, &alice, &build, &name("web-1"), None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn bounds_and_limits_are_checked_before_the_backend_is_asked() {
    let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
    let (app, double, build, _dir) = fixture(&alice).await;

    let memory = vms::create(&app, &alice, &build, &name("big"), Some(1 << 20), None)
        .await
        .unwrap_err();
    assert_eq!(memory.field(), Some("memory_mb"), "{memory}");
    let cpus = vms::create(&app, &alice, &build, &name("wide"), None, Some(64))
        .await
        .unwrap_err();
    assert_eq!(cpus.field(), Some("vcpus"), "{cpus}");
    assert!(double.calls().is_empty(), "nothing reached the backend");

    vms::create(&app, &alice, &build, &name("a"), None, None)
        .await
        .unwrap();
    let taken = vms::create(&app, &alice, &build, &name("a"), None, None)
        .await
        .unwrap_err();
    assert_eq!(taken.kind, ErrorKind::Conflict, "{taken}");
    assert_eq!(double.list().len(), 1, "a taken name makes no VM");

    // The fixture allows 3 VMs per owner.
    for n in ["b", "c"] {
        vms::create(&app, &alice, &build, &name(n), None, None)
            .await
            .unwrap();
    }
    let fourth = vms::create(&app, &alice, &build, &name("d"), None, None)
        .await
        .unwrap_err();
    assert_eq!(fourth.kind, ErrorKind::LimitReached, "{fourth}");
    assert_eq!(double.list().len(), 3);
}
