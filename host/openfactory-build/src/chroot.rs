//! The image root: commands run inside it, files written into it.
//!
//! Every command runs through `unshare` in fresh mount, PID, UTS and IPC
//! namespaces. Inside, a small fixed script mounts `/proc`, a read-only
//! `/sys`, a private `/dev` (a tmpfs with only the harmless device nodes and a
//! new devpts instance), tmpfs `/run` and `/tmp`, and the shared package cache,
//! then `chroot`s. Those mounts live and die with the namespace: when the
//! command exits (or is killed, which kills its whole PID namespace), nothing
//! is left mounted on the host, whatever happened.
//!
//! Files are written from the host through `cap-std`, so a symlink inside the
//! image (`/etc/x -> /etc/shadow`) can never make a write land on the host.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, OpenOptions, Permissions, PermissionsExt};

use crate::command::{self, CommandError, Runner};

/// The script `unshare` runs: `$1` is the root, `$2` the package cache (may be
/// empty), the rest the command. Paths are arguments, never spliced in.
const ENTER: &str = r#"set -eu
root=$1; debs=$2; shift 2
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,mode=0755,size=16m openfactory-dev "$root/dev"
for node in null zero full random urandom tty; do
    : > "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
mount -t tmpfs -o nosuid,nodev openfactory-shm "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755 openfactory-run "$root/run"
mount -t tmpfs -o nosuid,nodev,mode=1777 openfactory-tmp "$root/tmp"
if [ -n "$debs" ]; then mount --bind "$debs" "$root/var/cache/apt/archives"; fi
# Name resolution for apt: the host's resolver, wherever the image looks for it
# (a file, or systemd-resolved's stub under /run), never written into the image.
mkdir -p "$root/run/systemd/resolve"
cp /etc/resolv.conf "$root/run/systemd/resolve/stub-resolv.conf"
cp /etc/resolv.conf "$root/run/systemd/resolve/resolv.conf"
if [ -f "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ]; then
    mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
fi
exec chroot "$root" "$@"
"#;

/// The environment every command in the image gets, and nothing else.
pub fn base_env(source_date_epoch: i64) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
        ("TZ".into(), "UTC".into()),
        ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
        ("DEBCONF_NONINTERACTIVE_SEEN".into(), "true".into()),
        ("SOURCE_DATE_EPOCH".into(), source_date_epoch.to_string()),
    ]
}

/// An image root on the host.
pub struct ImageRoot {
    path: PathBuf,
    dir: Dir,
    /// Bind-mounted on `/var/cache/apt/archives` for every command.
    debs: Option<PathBuf>,
    env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Command(#[from] CommandError),
    #[error("{kind} `{name}` does not exist in the image")]
    UnknownAccount { kind: &'static str, name: String },
}

impl RootError {
    fn io(path: &str, source: std::io::Error) -> Self {
        RootError::Io {
            path: path.to_owned(),
            source,
        }
    }
    pub fn is_disk_full(&self) -> bool {
        match self {
            RootError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            RootError::Command(e) => crate::error::mentions_disk_full(&e.summary()),
            RootError::UnknownAccount { .. } => false,
        }
    }
    pub fn summary(&self) -> String {
        match self {
            RootError::Command(e) => e.summary(),
            other => other.to_string(),
        }
    }
}

/// Name the command that failed inside the image, not the `unshare` around it.
fn named(e: CommandError, argv: &[String]) -> RootError {
    match e {
        CommandError::Failed { status, tail, .. } => RootError::Command(CommandError::Failed {
            program: argv.first().cloned().unwrap_or_default(),
            status,
            tail,
        }),
        other => RootError::Command(other),
    }
}

/// Strip the leading `/` of an image path: cap-std paths are relative.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl ImageRoot {
    pub fn open(
        path: &Path,
        debs: Option<PathBuf>,
        source_date_epoch: i64,
    ) -> std::io::Result<Self> {
        Ok(ImageRoot {
            path: path.to_owned(),
            dir: Dir::open_ambient_dir(path, ambient_authority())?,
            debs,
            env: base_env(source_date_epoch),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `Command` that runs `argv` inside the image.
    pub fn command(&self, argv: &[String]) -> Command {
        let mut cmd = command::isolated("sh", true);
        cmd.args(["-c", ENTER, "openfactory-enter"]);
        cmd.arg(&self.path);
        cmd.arg(self.debs.as_deref().unwrap_or(Path::new("")));
        cmd.args(argv);
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run(&self, runner: &Runner, argv: &[String]) -> Result<(), RootError> {
        runner
            .run(&mut self.command(argv), None)
            .map_err(|e| named(e, argv))
    }

    pub fn run_with_input(
        &self,
        runner: &Runner,
        argv: &[String],
        input: &[u8],
    ) -> Result<(), RootError> {
        runner
            .run(&mut self.command(argv), Some(input))
            .map_err(|e| named(e, argv))
    }

    pub fn is_symlink(&self, path: &str) -> bool {
        self.dir
            .symlink_metadata(relative(path))
            .is_ok_and(|m| m.file_type().is_symlink())
    }

    pub fn exists(&self, path: &str) -> bool {
        self.dir.symlink_metadata(relative(path)).is_ok()
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, RootError> {
        let mut bytes = Vec::new();
        self.dir
            .open(relative(path))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| RootError::io(path, e))?;
        Ok(bytes)
    }

    pub fn read_to_string(&self, path: &str) -> Result<String, RootError> {
        String::from_utf8(self.read(path)?)
            .map_err(|_| RootError::io(path, std::io::ErrorKind::InvalidData.into()))
    }

    /// Write a file: parents created `root:root 0755`, the file replaced
    /// (never written through a symlink), then its mode and owner set.
    pub fn write(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        owner: &str,
        group: &str,
    ) -> Result<(), RootError> {
        let uid = self.lookup("/etc/passwd", "user", owner)?;
        let gid = self.lookup("/etc/group", "group", group)?;
        let rel = Path::new(relative(path));
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut builder = DirBuilder::new();
            builder.recursive(true);
            cap_std::fs::DirBuilderExt::mode(&mut builder, 0o755);
            self.dir
                .create_dir_with(parent, &builder)
                .map_err(|e| RootError::io(path, e))?;
        }
        // Replace whatever is there, a symlink included, rather than follow it.
        match self.dir.symlink_metadata(rel) {
            Ok(meta) if meta.is_dir() => {
                return Err(RootError::io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
                ));
            }
            Ok(_) => self
                .dir
                .remove_file(rel)
                .map_err(|e| RootError::io(path, e))?,
            Err(_) => {}
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let mut file = self
            .dir
            .open_with(rel, &options)
            .map_err(|e| RootError::io(path, e))?;
        file.write_all(content)
            .and_then(|_| file.set_permissions(Permissions::from_mode(mode)))
            .and_then(|_| {
                let std_file = file.into_std();
                std::os::unix::fs::fchown(&std_file, Some(uid), Some(gid))?;
                std_file.sync_data()
            })
            .map_err(|e| RootError::io(path, e))
    }

    /// Remove a file or a whole directory tree, if present.
    pub fn remove(&self, path: &str) -> Result<(), RootError> {
        let rel = relative(path);
        match self.dir.symlink_metadata(rel) {
            Ok(meta) if meta.is_dir() => self.dir.remove_dir_all(rel),
            Ok(_) => self.dir.remove_file(rel),
            Err(_) => Ok(()),
        }
        .map_err(|e| RootError::io(path, e))
    }

    /// Empty a directory, keeping it.
    pub fn clear_dir(&self, path: &str) -> Result<(), RootError> {
        let Ok(entries) = self.dir.read_dir(relative(path)) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let child = format!("{}/{}", path.trim_end_matches('/'), name.to_string_lossy());
            self.remove(&child)?;
        }
        Ok(())
    }

    /// Names in a directory, sorted.
    pub fn list(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .dir
            .read_dir(relative(path))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A host path for a file inside the image, with every symlink resolved
    /// inside the root; for tools on the host that read the image.
    pub fn host_path(&self, path: &str) -> Result<PathBuf, RootError> {
        let mut resolved = PathBuf::from("/");
        let mut pending: Vec<OsString> = relative(path)
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(OsString::from)
            .collect();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.to_str() {
                Some(".") => continue,
                Some("..") => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = resolved.join(&component);
            let rel = candidate.strip_prefix("/").expect("absolute");
            match self.dir.read_link_contents(rel) {
                Ok(target) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(RootError::io(
                            path,
                            std::io::Error::other("too many levels of symbolic links"),
                        ));
                    }
                    if target.is_absolute() {
                        resolved = PathBuf::from("/");
                    }
                    let bytes = target.into_os_string().into_vec();
                    for part in bytes.split(|b| *b == b'/').rev() {
                        if !part.is_empty() {
                            pending.push(OsString::from_vec(part.to_vec()));
                        }
                    }
                }
                Err(_) => resolved = candidate,
            }
        }
        Ok(self
            .path
            .join(resolved.strip_prefix("/").expect("absolute")))
    }

    /// Numeric id of an account in the image's own passwd/group file.
    fn lookup(&self, file: &str, kind: &'static str, name: &str) -> Result<u32, RootError> {
        if name == "root" {
            return Ok(0);
        }
        let text = self.read_to_string(file)?;
        account_id(&text, name).ok_or_else(|| RootError::UnknownAccount {
            kind,
            name: name.to_owned(),
        })
    }

    /// Whether the image has this account (`/etc/passwd` or `/etc/group`).
    pub fn has_account(&self, file: &str, name: &str) -> bool {
        self.read_to_string(file)
            .map(|text| account_id(&text, name).is_some())
            .unwrap_or(false)
    }
}

/// The third field of the `name:` line of a passwd or group file.
pub fn account_id(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|id| id.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, ImageRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nalice:x:1000:\n").unwrap();
        let root = ImageRoot::open(dir.path(), None, 0).unwrap();
        (dir, root)
    }

    #[test]
    fn accounts_are_read_from_the_image() {
        assert_eq!(
            account_id("a:x:1:2::/:/bin/sh\nbob:x:7:8::/:/bin/sh\n", "bob"),
            Some(7)
        );
        assert_eq!(account_id("alice:x:1000:\n", "ali"), None);
    }

    #[test]
    fn writes_create_parents_and_replace_symlinks() {
        let (dir, root) = root();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("etc/link")).unwrap();
        root.write("/etc/link", b"new", 0o600, "root", "root")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/link")).unwrap(),
            "new"
        );

        root.write("/srv/app/conf/x.toml", b"x", 0o640, "alice", "alice")
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path().join("srv/app/conf/x.toml")).unwrap();
        assert_eq!(
            (meta.mode() & 0o777, meta.uid(), meta.gid()),
            (0o640, 1000, 1000)
        );
        let err = root
            .write("/etc/x", b"", 0o644, "mallory", "root")
            .unwrap_err();
        assert!(err.to_string().contains("mallory"), "{err}");
    }

    #[test]
    fn a_symlinked_parent_cannot_escape() {
        let (dir, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("srv")).unwrap();
        assert!(
            root.write("/srv/escape", b"x", 0o644, "root", "root")
                .is_err()
        );
        assert!(!outside.path().join("escape").exists());
    }

    #[test]
    fn host_paths_resolve_symlinks_inside_the_root() {
        let (dir, root) = root();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join("boot/vmlinuz-6.1"), "k").unwrap();
        std::os::unix::fs::symlink("/boot/vmlinuz-6.1", dir.path().join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", dir.path().join("boot/up")).unwrap();
        assert_eq!(
            root.host_path("/vmlinuz").unwrap(),
            dir.path().join("boot/vmlinuz-6.1")
        );
        assert_eq!(
            root.host_path("/boot/up").unwrap(),
            dir.path().join("etc/passwd")
        );
    }
}
