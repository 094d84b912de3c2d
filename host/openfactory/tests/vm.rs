//! The VM backends on a real ISO, through the one `VmBackend` interface and
//! one suite: boot to a login prompt, console, stop gracefully (ACPI),
//! start, a crash the reaper notices, force-stop, delete, and nothing left
//! behind. The QEMU backend always runs; the libvirt backend runs when built
//! with `--features libvirt` and a daemon answers (CI starts one, and sets
//! OPENFACTORY_REQUIRE_LIBVIRT so a missing daemon fails instead of skipping).
//! Needs root: it builds the ISO first, from the cached base.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use openfactory_vm::{
    AccelSetting, PortForward, QemuBackend, StopOutcome, VmBackend, VmError, VmSpec, VmState,
};

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

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(1500);
    text[text.floor_char_boundary(start)..].to_owned()
}

async fn wait_for_serial<B: VmBackend>(backend: &B, id: &str, needle: &str, budget: Duration) {
    let started = Instant::now();
    loop {
        let log = backend.serial_log(id).await.unwrap();
        if String::from_utf8_lossy(&log).contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < budget,
            "no `{needle}` on the serial console within {budget:?}:\n{}",
            tail(&log)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn wait_until_stopped<B: VmBackend>(backend: &B, id: &str) {
    let started = Instant::now();
    while backend.state(id).await != VmState::Stopped {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{id} still runs"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Live processes (zombies are gone for our purposes) whose command line
/// names the VM: QEMU's process name and libvirt's guest name both carry it.
fn hypervisor_pids(id: &str) -> Vec<i32> {
    let name = format!("openfactory-vm-{id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&name))
        })
        .collect()
}

/// A VM id no earlier run used: a run that died half-way (or another clone's
/// run on the same machine) cannot be in this one's way.
fn fresh_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes what a test made when it ends, passed or panicked: the suite's
/// own `delete` is what is under test, so this works below the backend.
struct Sweep<F: Fn()>(F);

impl<F: Fn()> Drop for Sweep<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn kill_hypervisor(id: &str) {
    for pid in hypervisor_pids(id) {
        // SAFETY: kill with a pid whose command line names our VM.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The suite every backend passes. `leftovers` names what the backend
/// still holds for the VM after delete (nothing, or the test fails).
async fn lifecycle<B: VmBackend>(
    backend: &B,
    spec: VmSpec,
    leftovers: impl Fn(&str) -> Vec<String>,
) {
    let id = spec.id.clone();
    let record = backend.create(&spec).await.unwrap();
    assert_eq!(record.spec, spec);
    assert_eq!(backend.list(), vec![id.clone()]);
    // `auto` must not pick KVM where guests hang; wherever it lands, the guest boots.
    wait_for_serial(backend, &id, "vmtest login:", Duration::from_secs(300)).await;
    let VmState::Running { detail } = backend.state(&id).await else {
        panic!("not running")
    };
    assert_eq!(detail, "running");

    // The guest agent answers (qemu-guest-agent starts by udev rule, about when login does).
    let started = Instant::now();
    let ping = serde_json::json!({"execute": "guest-ping"});
    while let Err(e) = backend.agent(&id, &ping, Duration::from_secs(10)).await {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the guest agent does not answer: {e}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let info = backend
        .agent(
            &id,
            &serde_json::json!({"execute": "guest-get-host-name"}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(info["host-name"], "vmtest");

    // The console: a VNC server greets with its RFB version.
    let vnc = backend.vnc_address(&id).await.unwrap();
    assert!(vnc.ip().is_loopback(), "VNC listens on {vnc}");
    let mut greeting = [0u8; 12];
    std::net::TcpStream::connect(vnc)
        .unwrap()
        .read_exact(&mut greeting)
        .unwrap();
    assert!(greeting.starts_with(b"RFB 003."), "{greeting:?}");

    // Graceful: ACPI power-down; the guest has dbus and logind, so it obeys.
    assert_eq!(
        backend
            .stop(&id, false, Duration::from_secs(90))
            .await
            .unwrap(),
        StopOutcome::PoweredOff
    );
    assert_eq!(backend.state(&id).await, VmState::Stopped);
    assert!(hypervisor_pids(&id).is_empty(), "the hypervisor still runs");
    let err = backend
        .agent(&id, &ping, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, VmError::NotRunning(_)), "{err}");
    assert!(
        backend.reap().await.is_empty(),
        "a requested stop is not a crash"
    );
    assert_eq!(
        backend
            .stop(&id, false, Duration::from_secs(1))
            .await
            .unwrap(),
        StopOutcome::AlreadyStopped
    );

    // Start again from the same record: the serial log starts over.
    backend.start(&id).await.unwrap();
    let fresh = backend.serial_log(&id).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&fresh).contains("login:"),
        "the serial log still holds the last boot"
    );
    wait_for_serial(backend, &id, "Linux version", Duration::from_secs(120)).await;

    // The hypervisor dies under it: the reaper notices, once.
    let pids = hypervisor_pids(&id);
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: kill with a pid whose command line names our VM.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    wait_until_stopped(backend, &id).await;
    assert_eq!(backend.reap().await, vec![id.clone()]);
    assert!(backend.record(&id).unwrap().unexpected_stop.is_some());
    assert!(backend.reap().await.is_empty(), "reaped twice");

    // Start clears the mark; force stops at once.
    backend.start(&id).await.unwrap();
    assert!(backend.record(&id).unwrap().unexpected_stop.is_none());
    assert_eq!(
        backend.stop(&id, true, Duration::ZERO).await.unwrap(),
        StopOutcome::Killed
    );
    assert_eq!(backend.state(&id).await, VmState::Stopped);

    // Delete a running VM: no process, no record, nothing the backend held.
    backend.start(&id).await.unwrap();
    backend.delete(&id).await.unwrap();
    assert!(hypervisor_pids(&id).is_empty(), "the hypervisor still runs");
    assert!(backend.list().is_empty());
    assert_eq!(leftovers(&id), Vec::<String>::new());
    let err = backend.delete(&id).await.unwrap_err();
    assert!(matches!(err, VmError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = backend.record("../etc").unwrap_err();
    assert!(err.to_string().contains("not a VM id"), "{err}");
}

fn spec(id: &str, iso: PathBuf, forwards: Vec<PortForward>) -> VmSpec {
    VmSpec {
        id: id.into(),
        iso,
        memory_mb: 1024,
        vcpus: 1,
        disk_gb: Some(1),
        forwards,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_qemu_backend_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let iso = build_iso(dir.path());
    let root = dir.path().join("vms");
    let backend = QemuBackend::new(&root, AccelSetting::Auto);
    let forward = (20000..21000).find(|p| port_free(*p)).unwrap();
    let id = fresh_id();
    let _sweep = Sweep(|| kill_hypervisor(&id));
    let spec = spec(
        &id,
        iso,
        vec![PortForward {
            host: forward,
            guest: 22,
        }],
    );
    let paths = backend.paths(&spec.id);
    lifecycle(&backend, spec, |id| {
        let mut left = Vec::new();
        if root.join(id).exists() {
            left.push(format!("{}", root.join(id).display()));
        }
        if !port_free(forward) {
            left.push(format!("port {forward}"));
        }
        left
    })
    .await;
    assert!(!paths.dir.exists());
}

#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread")]
async fn the_libvirt_backend_passes_the_suite() {
    use openfactory_vm::{LibvirtBackend, LibvirtConfig};
    const POOL_PATH: &str = "/var/lib/libvirt/images/openfactory-test";

    let dir = tempfile::tempdir().unwrap();
    let config = LibvirtConfig {
        pool: "openfactory-test".into(),
        pool_path: POOL_PATH.into(),
        ..LibvirtConfig::default()
    };
    let backend = LibvirtBackend::new(&dir.path().join("vms"), AccelSetting::Auto, config);
    if let Err(e) = backend.check().await {
        assert!(
            std::env::var_os("OPENFACTORY_REQUIRE_LIBVIRT").is_none(),
            "libvirt is required here and does not answer: {e}"
        );
        eprintln!("skipped: no libvirt daemon answers ({e}); `libvirtd -d` starts one");
        return;
    }
    let iso = build_iso(dir.path());
    // Forwards are the QEMU backend's; libvirt refuses them, clearly, with nothing made.
    let err = backend
        .create(&spec(
            "0f0f",
            iso.clone(),
            vec![PortForward {
                host: 2222,
                guest: 22,
            }],
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("port forwards"), "{err}");
    assert!(backend.list().is_empty());

    let virsh = |args: &[&str]| {
        let out = Command::new("virsh")
            .args(["-c", "qemu:///system"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let remove = |domain: &str| {
        virsh(&["destroy", domain]);
        virsh(&["undefine", domain, "--remove-all-storage"]);
    };
    // Domains an earlier run left behind with their disks in the test pool go first.
    for domain in virsh(&["list", "--all", "--name"]).lines() {
        let domain = domain.trim();
        if domain.starts_with("openfactory-vm-") && virsh(&["dumpxml", domain]).contains(POOL_PATH)
        {
            remove(domain);
        }
    }
    let id = fresh_id();
    let _sweep = Sweep(|| {
        remove(&format!("openfactory-vm-{id}"));
        for line in virsh(&["vol-list", "openfactory-test"]).lines() {
            if let Some(volume) = line.split_whitespace().next().filter(|v| v.contains(&id)) {
                virsh(&["vol-delete", volume, "--pool", "openfactory-test"]);
            }
        }
    });
    lifecycle(&backend, spec(&id, iso, vec![]), |id| {
        let mut left: Vec<String> = virsh(&["vol-list", "openfactory-test"])
            .lines()
            .filter(|l| l.contains(id))
            .map(|l| format!("volume {}", l.trim()))
            .collect();
        if virsh(&["list", "--all", "--name"]).contains(id) {
            left.push(format!("domain openfactory-vm-{id}"));
        }
        left
    })
    .await;
}
