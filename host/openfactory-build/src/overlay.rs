//! The build's root: an overlay of the build's own changes (upper) on the
//! cached base (lower, never written). What the build changed is exactly the
//! upper directory, which becomes the image's top squashfs layer.
//!
//! The mount is undone when the guard drops, and [`sweep`] undoes any mount a
//! crashed host left under its work directory.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A mounted overlay; unmounted on drop.
#[derive(Debug)]
pub struct Overlay {
    merged: PathBuf,
    mounted: bool,
}

/// Characters the overlay option string cannot carry in a path.
fn check_path(path: &Path) -> io::Result<()> {
    let text = path.to_string_lossy();
    if text.contains([',', ':', '\\', '\n']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} contains `,`, `:` or `\\`, which an overlay mount cannot use; choose another data directory",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

impl Overlay {
    /// Mount `lower` (read-only) + `upper` at `merged`; `work` is overlayfs'
    /// scratch directory on the same file system as `upper`.
    pub fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> io::Result<Self> {
        for path in [lower, upper, work, merged] {
            check_path(path)?;
        }
        for dir in [upper, work, merged] {
            std::fs::create_dir_all(dir)?;
        }
        // Portable layers: no redirects, no metadata-only copies, no index,
        // so the upper directory means the same thing on any kernel.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        let source = CString::new("openfactory").expect("no NUL");
        let fstype = CString::new("overlay").expect("no NUL");
        let target = cstring(merged)?;
        let data =
            CString::new(options).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Overlay {
            merged: merged.to_owned(),
            mounted: true,
        })
    }

    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// Unmount now, reporting a failure (drop only logs it).
    pub fn unmount(mut self) -> io::Result<()> {
        self.mounted = false;
        unmount(&self.merged)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = unmount(&self.merged)
        {
            tracing::error!(path = %self.merged.display(), error = %e, "could not unmount the build root");
        }
    }
}

fn unmount(path: &Path) -> io::Result<()> {
    let target = cstring(path)?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        // Something still holds it (a process being killed): detach now, the
        // kernel finishes when the last user goes.
        // SAFETY: as above.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
    }
    Err(err)
}

/// Overlay xattrs that only mean something to the overlay that wrote them
/// (the upper root's random `uuid`, `origin` file handles, `impure`…) are
/// removed from an unmounted upper directory, so that the same changes give
/// the same layer bytes. `opaque` and whiteout markers are what the layer
/// means to the next overlay, and stay. Returns how many were removed.
pub fn strip_volatile_xattrs(upper: &Path) -> io::Result<usize> {
    const KEEP: &[&[u8]] = &[
        b"trusted.overlay.opaque",
        b"trusted.overlay.whiteout",
        b"trusted.overlay.whiteouts",
    ];
    let mut removed = 0;
    let mut pending = vec![upper.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
        let c = cstring(&path)?;
        let mut names = vec![0u8; 4096];
        // SAFETY: `c` is NUL-terminated and `names` is writable for its length.
        let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if len <= 0 {
            continue;
        }
        names.truncate(len as usize);
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(b"trusted.overlay.") && !KEEP.contains(&name) {
                let cname = CString::new(name).expect("split on NUL");
                // SAFETY: both are valid NUL-terminated strings.
                if unsafe { libc::lremovexattr(c.as_ptr(), cname.as_ptr()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount everything left mounted under `dir` (after a crash). Returns what
/// was unmounted.
pub fn sweep(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut done = Vec::new();
    for point in mounts_under(&info, dir) {
        unmount(&point)?;
        done.push(point);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_filtered_and_ordered_deepest_first() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
90 22 0:50 / /data/work/b1/root rw - overlay openfactory rw
91 90 0:51 / /data/work/b1/root/proc rw - proc proc rw
92 22 0:52 / /data/work\\040x/root rw - overlay openfactory rw
93 22 0:53 / /data/workshop rw - tmpfs t rw
";
        let found = mounts_under(info, Path::new("/data/work"));
        assert_eq!(
            found,
            [
                PathBuf::from("/data/work/b1/root/proc"),
                PathBuf::from("/data/work/b1/root")
            ]
        );
        assert_eq!(
            mounts_under(info, Path::new("/data/work x")),
            [PathBuf::from("/data/work x/root")]
        );
    }

    #[test]
    fn volatile_overlay_xattrs_are_stripped_and_opaque_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        let set = |path: &Path, name: &str| {
            let p = cstring(path).unwrap();
            let n = CString::new(name).unwrap();
            // SAFETY: valid strings; a one-byte value.
            unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) }
        };
        if set(dir.path(), "trusted.overlay.uuid") != 0 {
            // Not root, or no trusted xattrs on this file system: nothing to test here.
            assert_ne!(
                unsafe { libc::geteuid() },
                0,
                "root could not set a trusted xattr"
            );
            return;
        }
        assert_eq!(set(&sub, "trusted.overlay.opaque"), 0);
        assert_eq!(set(&sub, "trusted.overlay.origin"), 0);
        assert_eq!(strip_volatile_xattrs(dir.path()).unwrap(), 2);
        let list = |path: &Path| {
            let p = cstring(path).unwrap();
            let mut buf = vec![0u8; 1024];
            // SAFETY: valid string and buffer.
            let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            buf.truncate(n.max(0) as usize);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(list(&sub), "trusted.overlay.opaque\0");
        assert_eq!(list(dir.path()), "");
    }

    #[test]
    fn option_breaking_paths_are_refused() {
        let err = check_path(Path::new("/srv/a,b")).unwrap_err();
        assert!(err.to_string().contains("data directory"));
        assert!(check_path(Path::new("/var/lib/openfactory/work/b1/upper")).is_ok());
    }
}
