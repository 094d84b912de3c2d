//! The build cache, outside the repository: bootstrapped bases and downloaded
//! .deb files, shared by concurrent builds and bounded in size.
//!
//! ```text
//! <cache>/debs/                 apt's archive directory, bind-mounted into builds
//! <cache>/debs.lock             held around every apt run (apt's own lock would fail, not wait)
//! <cache>/bases/<key>/          rootfs/, base.squashfs, base.json (written last)
//! <cache>/bases/<key>.lock      shared while a build uses the base, exclusive to make or evict it
//! ```
//! A base appears by renaming a finished temporary directory, so a reader
//! never sees half of one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::apply;
use crate::base::{BaseInfo, BasePaths, BaseSpec, Bootstrapper, release_date};
use crate::chroot::ImageRoot;
use crate::command::Runner;
use crate::error::{BuildError, IoContext, Result};
use crate::image;
use crate::lock::FileLock;
use crate::progress::Stage;

pub struct Cache {
    root: PathBuf,
    /// A base older than this is made again, so images get security updates.
    pub max_base_age: Duration,
    /// Eviction brings the cache under this many bytes after each build.
    pub max_bytes: u64,
}

/// A base in use: the shared lock keeps it from being evicted.
pub struct BaseLease {
    pub paths: BasePaths,
    pub info: BaseInfo,
    /// Whether this build found it ready (warm) or made it (cold).
    pub reused: bool,
    _lock: FileLock,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Cache {
    pub fn new(root: &Path) -> Self {
        Cache {
            root: root.to_owned(),
            max_base_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 20 << 30,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared .deb directory, with apt's `partial/`.
    pub fn debs(&self) -> io::Result<PathBuf> {
        let debs = self.root.join("debs");
        fs::create_dir_all(debs.join("partial"))?;
        Ok(debs)
    }

    pub fn apt_lock(&self) -> PathBuf {
        self.root.join("debs.lock")
    }

    fn bases(&self) -> PathBuf {
        self.root.join("bases")
    }

    fn read_info(paths: &BasePaths) -> Option<BaseInfo> {
        let text = fs::read_to_string(paths.info()).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn fresh(&self, info: &BaseInfo) -> bool {
        unix_now() - info.created_at < self.max_base_age.as_secs() as i64
    }

    /// The base for `spec`, made first if it is missing or too old.
    pub fn base(
        &self,
        spec: &BaseSpec,
        bootstrapper: &dyn Bootstrapper,
        runner: &Runner,
    ) -> Result<BaseLease> {
        let key = spec.key();
        let bases = self.bases();
        fs::create_dir_all(&bases).context(|| format!("creating {}", bases.display()))?;
        let paths = BasePaths {
            dir: bases.join(&key),
        };
        let lock_path = bases.join(format!("{key}.lock"));
        loop {
            {
                let lock = FileLock::shared(&lock_path).context(|| "locking the base".into())?;
                if let Some(info) = Self::read_info(&paths).filter(|i| self.fresh(i)) {
                    // Last use, for eviction.
                    let _ = fs::File::options()
                        .write(true)
                        .open(paths.info())
                        .and_then(|f| f.set_modified(SystemTime::now()));
                    runner.log.progress(
                        Stage::Bootstrap,
                        1.0,
                        &format!("base {key} is cached (made with {})", info.bootstrapper),
                    );
                    return Ok(BaseLease {
                        paths,
                        info,
                        reused: true,
                        _lock: lock,
                    });
                }
            }
            let exclusive =
                FileLock::exclusive(&lock_path).context(|| "locking the base".into())?;
            if Self::read_info(&paths).is_some_and(|i| self.fresh(&i)) {
                // Someone else made it while we waited.
                continue;
            }
            if let Err(e) = self.make_base(spec, &paths, bootstrapper, runner) {
                // Leave nothing half-made behind.
                remove_tree(&self.bases().join(format!("{key}.partial")));
                return Err(e);
            }
            drop(exclusive);
            let lock = FileLock::shared(&lock_path).context(|| "locking the base".into())?;
            if let Some(info) = Self::read_info(&paths) {
                return Ok(BaseLease {
                    paths,
                    info,
                    reused: false,
                    _lock: lock,
                });
            }
        }
    }

    fn make_base(
        &self,
        spec: &BaseSpec,
        paths: &BasePaths,
        bootstrapper: &dyn Bootstrapper,
        runner: &Runner,
    ) -> Result<()> {
        let key = spec.key();
        let staging = BasePaths {
            dir: self.bases().join(format!("{key}.partial")),
        };
        if staging.dir.exists() {
            crate::overlay::sweep(&staging.dir).context(|| "unmounting a stale base".into())?;
            fs::remove_dir_all(&staging.dir)
                .context(|| format!("removing {}", staging.dir.display()))?;
        }
        fs::create_dir_all(&staging.dir)
            .context(|| format!("creating {}", staging.dir.display()))?;
        let debs = self
            .debs()
            .context(|| "creating the package cache".into())?;
        runner.log.progress(
            Stage::Bootstrap,
            0.02,
            &format!(
                "bootstrapping {} {} with {} from {} ({})",
                spec.suite,
                spec.architecture,
                bootstrapper.name(),
                spec.mirrors.debian,
                spec.packages.join(", ")
            ),
        );
        {
            let _apt = FileLock::exclusive(&self.apt_lock())
                .context(|| "locking the package cache".into())?;
            bootstrapper
                .bootstrap(spec, &staging.rootfs(), &debs, runner)
                .map_err(|e| match e {
                    crate::command::CommandError::Cancelled => BuildError::Cancelled,
                    e => BuildError::Stage {
                        stage: Stage::Bootstrap,
                        detail: format!(
                            "{} from {} failed (is the mirror reachable?): {}",
                            bootstrapper.name(),
                            spec.mirrors.debian,
                            e.summary()
                        ),
                    },
                })?;
        }
        let root = ImageRoot::open(&staging.rootfs(), None, 0)
            .context(|| format!("opening {}", staging.rootfs().display()))?;
        let source_date_epoch = root
            .list("/var/lib/apt/lists")
            .iter()
            .filter(|name| {
                name.ends_with(&format!("_dists_{}_InRelease", spec.suite))
                    || name.ends_with(&format!("_dists_{}_Release", spec.suite))
            })
            .find_map(|name| {
                root.read_to_string(&format!("/var/lib/apt/lists/{name}"))
                    .ok()
                    .and_then(|text| release_date(&text))
            })
            .unwrap_or_else(unix_now);
        let fail = |e: crate::chroot::RootError| BuildError::Stage {
            stage: Stage::Bootstrap,
            detail: e.summary(),
        };
        root.remove("/etc/apt/sources.list").map_err(fail)?;
        root.write(
            "/etc/apt/sources.list.d/debian.sources",
            spec.deb822().as_bytes(),
            0o644,
            "root",
            "root",
        )
        .map_err(fail)?;
        apply::tidy(&root, runner).map_err(fail)?;

        runner
            .log
            .progress(Stage::Bootstrap, 0.7, "compressing the base layer");
        image::squash(
            Stage::Bootstrap,
            runner,
            &staging.rootfs(),
            &staging.squashfs(),
            source_date_epoch,
            &[],
        )
        .map_err(|e| e.in_stage(Stage::Bootstrap, &staging.dir))?;

        let info = BaseInfo {
            key: key.clone(),
            spec: spec.clone(),
            created_at: unix_now(),
            source_date_epoch,
            bootstrapper: bootstrapper.name().into(),
        };
        fs::write(
            staging.info(),
            serde_json::to_vec_pretty(&info).expect("serialisable"),
        )
        .context(|| "writing base.json".into())?;
        if paths.dir.exists() {
            fs::remove_dir_all(&paths.dir)
                .context(|| format!("removing {}", paths.dir.display()))?;
        }
        fs::rename(&staging.dir, &paths.dir)
            .context(|| format!("publishing {}", paths.dir.display()))?;
        runner
            .log
            .progress(Stage::Bootstrap, 1.0, &format!("base {key} is ready"));
        Ok(())
    }

    /// Bring the cache under its size limit: least recently used bases first
    /// (never one in use), then the oldest .deb files. Returns bytes freed.
    pub fn evict(&self) -> io::Result<u64> {
        let mut total = dir_size(&self.root);
        if total <= self.max_bytes {
            return Ok(0);
        }
        let mut freed = 0;
        let mut bases: Vec<(SystemTime, PathBuf)> = fs::read_dir(self.bases())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .map(|p| {
                        let used = fs::metadata(p.join("base.json"))
                            .and_then(|m| m.modified())
                            .unwrap_or(UNIX_EPOCH);
                        (used, p)
                    })
                    .collect()
            })
            .unwrap_or_default();
        bases.sort();
        for (_, dir) in bases {
            if total <= self.max_bytes {
                break;
            }
            let lock_path = PathBuf::from(format!("{}.lock", dir.display()));
            if let Some(_guard) = FileLock::try_exclusive(&lock_path)? {
                let size = dir_size(&dir);
                fs::remove_dir_all(&dir)?;
                tracing::info!(base = %dir.display(), size, "evicted a cached base");
                total = total.saturating_sub(size);
                freed += size;
            }
        }
        if total > self.max_bytes
            && let Some(_apt) = FileLock::try_exclusive(&self.apt_lock())?
        {
            let mut debs: Vec<(SystemTime, u64, PathBuf)> = fs::read_dir(self.root.join("debs"))?
                .flatten()
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    meta.is_file()
                        .then(|| (meta.modified().unwrap_or(UNIX_EPOCH), meta.len(), e.path()))
                })
                .collect();
            debs.sort();
            for (_, size, path) in debs {
                if total <= self.max_bytes {
                    break;
                }
                fs::remove_file(&path)?;
                total = total.saturating_sub(size);
                freed += size;
            }
        }
        Ok(freed)
    }
}

/// Remove a tree, unmounting anything mounted inside it first (never delete
/// through a mount into the shared cache).
fn remove_tree(dir: &Path) {
    match crate::overlay::sweep(dir) {
        Ok(_) => {
            if let Err(e) = fs::remove_dir_all(dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::error!(dir = %dir.display(), error = %e, "could not remove");
            }
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "could not unmount; left in place")
        }
    }
}

/// Bytes used by a tree (files only; symlinks not followed).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// `du`-style total for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Whether the host has every tool a build runs.
pub fn missing_tools() -> Vec<&'static str> {
    [
        "mmdebstrap",
        "mksquashfs",
        "grub-mkrescue",
        "xorriso",
        "unshare",
        "mformat",
    ]
    .into_iter()
    .filter(|tool| {
        Command::new("sh")
            .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_removes_least_recently_used_unlocked_bases() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::new(dir.path());
        let bases = dir.path().join("bases");
        for (name, age) in [("old", 300), ("new", 10), ("busy", 600)] {
            let base = bases.join(name);
            fs::create_dir_all(&base).unwrap();
            fs::write(base.join("blob"), vec![0u8; 1000]).unwrap();
            let info = fs::File::create(base.join("base.json")).unwrap();
            info.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        }
        let _busy = FileLock::shared(&bases.join("busy.lock")).unwrap();
        cache.max_bytes = 2500;
        let freed = cache.evict().unwrap();
        assert!(freed >= 1000, "{freed}");
        assert!(!bases.join("old").exists(), "the oldest unlocked base goes");
        assert!(bases.join("busy").exists(), "a base in use stays");
        assert!(bases.join("new").exists());
        cache.max_bytes = u64::MAX;
        assert_eq!(cache.evict().unwrap(), 0);
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
