//! The QEMU backend on a real ISO: boot to a login prompt, stop gracefully
//! (ACPI), start again, stop by force, delete; nothing left behind. Needs
//! root (it builds the ISO first, from the cached base).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use openfactory_vm::{AccelSetting, PortForward, QemuBackend, StopOutcome, VmSpec, VmState};

fn build_iso(dir: &Path) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "VM tests build an ISO first, which needs root"
    );
    let recipe = dir.join("vmtest.toml");
    std::fs::write(
        &recipe,
        "name = \"vmtest\"\nbase_image = \"debian-bookworm\"\n",
    )
    .unwrap();
    let iso = dir.join("vmtest.iso");
    let out = Command::new(env!("CARGO_BIN_EXE_openfactory"))
        .arg("--home")
        .arg(dir.join("home"))
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(&iso)
        .env_remove("OPENFACTORY_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

async fn wait_for(serial: &Path, needle: &str, budget: Duration) {
    let started = Instant::now();
    loop {
        if std::fs::read(serial).is_ok_and(|s| String::from_utf8_lossy(&s).contains(needle)) {
            return;
        }
        assert!(
            started.elapsed() < budget,
            "no `{needle}` on the serial console within {budget:?}:\n{}",
            String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default())
                .chars()
                .rev()
                .take(1500)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The process has exited (a zombie waiting for its reaper counts as gone).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_boots_stops_starts_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let iso = build_iso(dir.path());
    let backend = QemuBackend::new(&dir.path().join("vms"), AccelSetting::Auto);
    let forward = (20000..21000).find(|p| port_free(*p)).unwrap();
    let spec = VmSpec {
        id: "0a1b2c3d".into(),
        iso,
        memory_mb: 1024,
        vcpus: 1,
        disk_gb: Some(1),
        forwards: vec![PortForward {
            host: forward,
            guest: 22,
        }],
    };
    let record = backend.create(&spec).await.unwrap();
    // `auto` must not pick KVM where guests hang; wherever it lands, the guest boots.
    let paths = backend.paths(&spec.id);
    assert!(paths.disk().is_file());
    assert!(
        !port_free(record.websocket_port()),
        "the VNC websocket listens"
    );
    wait_for(&paths.serial(), "vmtest login:", Duration::from_secs(300)).await;
    let VmState::Running { pid, qemu_status } = backend.state(&spec.id).await else {
        panic!("not running")
    };
    assert_eq!(qemu_status, "running");
    assert_eq!(backend.list(), [spec.id.clone()]);

    // Graceful: ACPI power-down; the guest has dbus and logind, so it obeys.
    let outcome = backend
        .stop(&spec.id, false, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(outcome, StopOutcome::PoweredOff);
    assert_eq!(backend.state(&spec.id).await, VmState::Stopped);
    assert!(gone(pid), "QEMU {pid} still runs");
    assert_eq!(
        backend
            .stop(&spec.id, false, Duration::from_secs(1))
            .await
            .unwrap(),
        StopOutcome::AlreadyStopped
    );

    // Start again from the same record, then stop at once.
    let _ = std::fs::remove_file(paths.serial());
    let again = backend.start(&spec.id).await.unwrap();
    wait_for(&paths.serial(), "Linux version", Duration::from_secs(120)).await;
    assert_eq!(
        backend.stop(&spec.id, true, Duration::ZERO).await.unwrap(),
        StopOutcome::Killed
    );
    assert_eq!(backend.state(&spec.id).await, VmState::Stopped);

    // Delete: no process, no file, no port.
    backend.start(&spec.id).await.unwrap();
    backend.delete(&spec.id).await.unwrap();
    assert!(!paths.dir.exists());
    assert!(backend.list().is_empty());
    assert!(port_free(forward) && port_free(again.websocket_port()));
    let err = backend.delete(&spec.id).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = backend.record("../etc").unwrap_err();
    assert!(err.to_string().contains("not a VM id"), "{err}");
}
