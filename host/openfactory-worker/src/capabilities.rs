//! What a worker can run, measured on its machine: it advertises this with
//! every claim, and only gets jobs whose needs it meets.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Debian's name for the CPU architecture: `amd64`.
    pub arch: String,
    /// Whether `/dev/kvm` can be opened (guests may still fall back to TCG).
    pub kvm: bool,
    /// Free space where jobs put their scratch files.
    pub free_disk_bytes: u64,
    pub cores: u32,
}

impl Capabilities {
    /// This machine, with jobs working in `work_dir`.
    pub fn measure(work_dir: &Path) -> Capabilities {
        Capabilities {
            arch: debian_arch().into(),
            kvm: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            free_disk_bytes: free_disk_bytes(work_dir),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// Debian's name for this machine's architecture.
pub fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        other => other,
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`
/// (or its nearest existing parent); 0 when it cannot be measured.
pub fn free_disk_bytes(path: &Path) -> u64 {
    let mut dir = path;
    while !dir.exists() {
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return 0,
        }
    }
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a
    // valid NUL-terminated string.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return 0;
        }
        (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_measures_itself() {
        let dir = tempfile::tempdir().unwrap();
        let caps = Capabilities::measure(&dir.path().join("not/yet/made"));
        assert_eq!(caps.arch, debian_arch());
        assert!(caps.free_disk_bytes > 0 && caps.cores >= 1, "{caps:?}");
    }
}
