//! What a VM is, and the QEMU command line for it: pure, so it is tested
//! without starting anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::accel::Accel;

/// A TCP port on the host's loopback forwarded to one in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

/// Everything needed to (re)start a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Lowercase hex: names the directory and the QEMU process.
    pub id: String,
    pub iso: PathBuf,
    pub memory_mb: u32,
    pub vcpus: u32,
    /// A blank copy-on-write qcow2 disk of this size, if asked for.
    pub disk_gb: Option<u32>,
    pub forwards: Vec<PortForward>,
}

/// Where a VM's files live.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn new(dir: &Path) -> Self {
        VmPaths {
            dir: dir.to_owned(),
        }
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("vm.json")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn agent(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
}

/// The process name every VM of ours carries, so a stale pidfile never
/// makes us signal someone else's process.
pub fn process_name(id: &str) -> String {
    format!("openfactory-vm-{id}")
}

/// QEMU's arguments. The display number `vnc` gives VNC on 127.0.0.1:5900+n
/// and its websocket on 127.0.0.1:5700+n.
pub fn qemu_args(spec: &VmSpec, paths: &VmPaths, accel: Accel, vnc: u16) -> Vec<String> {
    let mut netdev = "user,id=net0".to_owned();
    for f in &spec.forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
    }
    let path = |p: PathBuf| p.display().to_string();
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!(
            "{},process={}",
            process_name(&spec.id),
            process_name(&spec.id)
        ),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-accel".into(),
        accel.to_string(),
        "-cpu".into(),
        match accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
        .into(),
        "-m".into(),
        spec.memory_mb.to_string(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-vga".into(),
        "std".into(),
        "-display".into(),
        "none".into(),
        "-vnc".into(),
        format!("127.0.0.1:{vnc},websocket=on"),
        "-chardev".into(),
        format!("file,id=serial0,path={}", path(paths.serial())),
        "-serial".into(),
        "chardev:serial0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", path(paths.qmp())),
        "-chardev".into(),
        format!(
            "socket,id=qga0,path={},server=on,wait=off",
            path(paths.agent())
        ),
        "-device".into(),
        "virtio-serial".into(),
        "-device".into(),
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0".into(),
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
        "-drive".into(),
        format!(
            "file={},media=cdrom,readonly=on,if=ide,index=0",
            path(spec.iso.clone())
        ),
        "-boot".into(),
        "order=d".into(),
        // seccomp: no obsolete syscalls, no scheduler/affinity games. (Denying
        // `spawn` or `elevateprivileges` breaks -daemonize, measured with QEMU 7.2.)
        "-sandbox".into(),
        "on,obsolete=deny,resourcecontrol=deny".into(),
        "-pidfile".into(),
        path(paths.pidfile()),
        "-daemonize".into(),
    ];
    if spec.disk_gb.is_some() {
        args.push("-drive".into());
        args.push(format!(
            "file={},format=qcow2,if=virtio",
            path(paths.disk())
        ));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            id: "ab12".into(),
            iso: "/data/builds/b1/image.iso".into(),
            memory_mb: 1024,
            vcpus: 2,
            disk_gb: None,
            forwards: vec![PortForward {
                host: 2222,
                guest: 22,
            }],
        }
    }

    #[test]
    fn the_command_line_is_complete_and_loopback_only() {
        let paths = VmPaths::new(Path::new("/data/vms/ab12"));
        let args = qemu_args(&spec(), &paths, Accel::Tcg, 3);
        let line = args.join(" ");
        for wanted in [
            "-accel tcg",
            "-cpu max",
            "-m 1024",
            "-smp 2",
            "-vnc 127.0.0.1:3,websocket=on",
            "-qmp unix:/data/vms/ab12/qmp.sock,server=on,wait=off",
            "name=org.qemu.guest_agent.0",
            "hostfwd=tcp:127.0.0.1:2222-:22",
            "file=/data/builds/b1/image.iso,media=cdrom,readonly=on",
            "-daemonize",
            "process=openfactory-vm-ab12",
        ] {
            assert!(line.contains(wanted), "{wanted} missing from {line}");
        }
        assert!(!line.contains("qcow2"));
        let mut with_disk = spec();
        with_disk.disk_gb = Some(8);
        let line = qemu_args(&with_disk, &paths, Accel::Kvm, 0).join(" ");
        assert!(line.contains("-cpu host") && line.contains("disk.qcow2,format=qcow2"));
    }
}
