//! One build, start to finish: bootstrap → apply → image → finish.
//!
//! The build's scratch space is `<work>/<build id>/`; it is unmounted and
//! removed when the build ends, however it ends.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use openfactory_core::Plan;

use crate::apply::{self, Applier};
use crate::base::{BaseSpec, Bootstrapper, Mirrors, Mmdebstrap};
use crate::cache::{self, Cache};
use crate::chroot::ImageRoot;
use crate::command::Runner;
use crate::error::{BuildError, IoContext, Result};
use crate::image::{self, BASE_LAYER, BUILD_LAYER};
use crate::manifest::{self, SbomSubject};
use crate::overlay::{self, Overlay};
use crate::progress::{CancelFlag, Log, Observer, Stage};

/// Names of a build's artifacts in its output directory.
pub const ISO_FILE: &str = "image.iso";
pub const LOG_FILE: &str = "build.log";
pub const PACKAGES_FILE: &str = "packages.json";
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// Where builds happen and what they use.
pub struct Builder {
    /// Scratch space for running builds; swept at start-up.
    pub work_dir: PathBuf,
    pub cache: Cache,
    pub mirrors: Mirrors,
    pub bootstrapper: Box<dyn Bootstrapper>,
}

/// What a finished build produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildOutput {
    pub iso: PathBuf,
    pub iso_sha256: String,
    pub iso_size_bytes: u64,
    pub packages: usize,
    pub base_key: String,
    /// Whether the base came from the cache.
    pub base_reused: bool,
    pub source_date_epoch: i64,
    /// Seconds per stage, in order.
    pub stage_seconds: Vec<(Stage, f64)>,
    /// Size in bytes of each squashfs layer, bottom first.
    pub layers: Vec<(String, u64)>,
}

/// A build's identity and where its results go.
pub struct BuildJob<'a> {
    /// Lowercase letters, digits and `-`: it names directories.
    pub build_id: &'a str,
    pub plan: &'a Plan,
    pub out_dir: &'a Path,
    pub observer: &'a dyn Observer,
    pub cancel: &'a CancelFlag,
    /// Lines for the top of the log (why an earlier attempt ended, say).
    pub preface: &'a [String],
}

fn check_build_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(BuildError::Stage {
            stage: Stage::Bootstrap,
            detail: format!(
                "build id `{}` is not lowercase letters, digits and `-`",
                id.escape_debug()
            ),
        });
    }
    Ok(())
}

/// Scratch directory of one build, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Anything still mounted (a panic mid-apply) goes first.
        if let Err(e) = overlay::sweep(&self.0) {
            tracing::error!(dir = %self.0.display(), error = %e, "could not unmount build scratch");
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(dir = %self.0.display(), error = %e, "could not remove build scratch");
        }
    }
}

impl Builder {
    pub fn new(work_dir: PathBuf, cache_dir: PathBuf, mirrors: Mirrors) -> Self {
        Builder {
            work_dir,
            cache: Cache::new(&cache_dir),
            mirrors,
            bootstrapper: Box::new(Mmdebstrap),
        }
    }

    /// Undo what a crashed host left: mounts and scratch directories under
    /// the work directory. Returns the build ids whose scratch was removed.
    pub fn recover(&self) -> std::io::Result<Vec<String>> {
        if !self.work_dir.exists() {
            return Ok(Vec::new());
        }
        for point in overlay::sweep(&self.work_dir)? {
            tracing::warn!(mount = %point.display(), "unmounted a mount left by an interrupted build");
        }
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.work_dir)?.flatten() {
            fs::remove_dir_all(entry.path())?;
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(removed)
    }

    /// Run a whole build. The log is at `out_dir/build.log` whatever happens.
    pub fn build(&self, job: &BuildJob) -> Result<BuildOutput> {
        check_build_id(job.build_id)?;
        self.mirrors.check().map_err(|detail| BuildError::Stage {
            stage: Stage::Bootstrap,
            detail,
        })?;
        fs::create_dir_all(job.out_dir)
            .context(|| format!("creating {}", job.out_dir.display()))?;
        let log = Log::create(&job.out_dir.join(LOG_FILE), job.observer)
            .context(|| "creating the build log".into())?;
        for line in job.preface {
            log.line(&format!("==> {line}"));
        }
        let result = self.build_logged(job, &log);
        match &result {
            Ok(out) => log.line(&format!(
                "==> done: {} ({} bytes, sha256 {})",
                out.iso.display(),
                out.iso_size_bytes,
                out.iso_sha256
            )),
            Err(e) => log.line(&format!("==> failed: {e}")),
        }
        result
    }

    fn build_logged(&self, job: &BuildJob, log: &Log) -> Result<BuildOutput> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(BuildError::Stage {
                stage: Stage::Bootstrap,
                detail: "the OpenFactory host is not running as root, which builds need (overlay mounts, chroot); the operator must start it as root".into(),
            });
        }
        let missing = cache::missing_tools();
        if !missing.is_empty() {
            return Err(BuildError::MissingTool(format!(
                "{} (on Debian: apt-get install mmdebstrap squashfs-tools grub-pc-bin grub-efi-amd64-bin grub-common mtools xorriso)",
                missing.join(", ")
            )));
        }
        let runner = Runner {
            log,
            cancel: job.cancel,
        };
        let plan = job.plan;
        let mut timings = Vec::new();
        log.line(&format!(
            "==> build {} of recipe {} ({}), {} steps, features: {}",
            job.build_id,
            plan.recipe_name,
            plan.recipe_digest,
            plan.steps.len(),
            plan.features
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));

        // bootstrap
        let started = Instant::now();
        let spec = BaseSpec::for_plan(plan, &self.mirrors);
        log.progress(Stage::Bootstrap, 0.0, &format!("base {}", spec.key()));
        let base = self
            .cache
            .base(&spec, self.bootstrapper.as_ref(), &runner)
            .map_err(|e| e.in_stage(Stage::Bootstrap, self.cache.root()))?;
        timings.push((Stage::Bootstrap, started.elapsed().as_secs_f64()));
        let epoch = base.info.source_date_epoch;

        // apply
        let started = Instant::now();
        let scratch_dir = self.work_dir.join(job.build_id);
        if scratch_dir.exists() {
            overlay::sweep(&scratch_dir).context(|| "unmounting old scratch".into())?;
            fs::remove_dir_all(&scratch_dir)
                .context(|| format!("removing {}", scratch_dir.display()))?;
        }
        fs::create_dir_all(&scratch_dir)
            .context(|| format!("creating {}", scratch_dir.display()))?;
        let scratch = Scratch(scratch_dir);
        let upper = scratch.0.join("upper");
        let tree = scratch.0.join("iso");
        let live = tree.join("live");
        fs::create_dir_all(&live).context(|| format!("creating {}", live.display()))?;
        let debs = self
            .cache
            .debs()
            .context(|| "creating the package cache".into())?;
        let apt_lock = self.cache.apt_lock();
        let (packages, kernel_args) = {
            let overlay = Overlay::mount(
                &base.paths.rootfs(),
                &upper,
                &scratch.0.join("overlay-work"),
                &scratch.0.join("root"),
            )
            .context(|| "mounting the build root".into())?;
            let root = ImageRoot::open(overlay.merged(), Some(debs), epoch)
                .context(|| "opening the build root".into())?;
            let mut applier = Applier::new(&root, &runner, &apt_lock);
            applier
                .apply_plan(plan)
                .map_err(|e| e.in_stage(Stage::Apply, &scratch.0))?;
            log.progress(Stage::Apply, 0.97, "tidying the image root");
            apply::tidy(&root, &runner)
                .map_err(|e| BuildError::Stage {
                    stage: Stage::Apply,
                    detail: e.summary(),
                })
                .map_err(|e| e.in_stage(Stage::Apply, &scratch.0))?;
            let packages = manifest::read(overlay.merged())
                .context(|| "reading the package manifest".into())?;
            for (inside, name) in [("/vmlinuz", "vmlinuz"), ("/initrd.img", "initrd.img")] {
                let source = kernel_file(&root, inside)?;
                fs::copy(&source, live.join(name))
                    .context(|| format!("copying {}", source.display()))
                    .map_err(|e| e.in_stage(Stage::Apply, &scratch.0))?;
            }
            let kernel_args = applier.kernel_args.clone();
            drop(root);
            overlay
                .unmount()
                .context(|| "unmounting the build root".into())?;
            overlay::strip_volatile_xattrs(&upper)
                .context(|| "cleaning the build layer's overlay attributes".into())?;
            (packages, kernel_args)
        };
        timings.push((Stage::Apply, started.elapsed().as_secs_f64()));
        if job.cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }

        // image
        let started = Instant::now();
        log.progress(Stage::Image, 0.0, "compressing this build's layer");
        image::squash(
            Stage::Image,
            &runner,
            &upper,
            &live.join(BUILD_LAYER),
            epoch,
            &[],
        )
        .map_err(|e| e.in_stage(Stage::Image, &scratch.0))?;
        log.progress(Stage::Image, 0.6, "assembling the ISO tree");
        let base_layer = live.join(BASE_LAYER);
        if fs::hard_link(base.paths.squashfs(), &base_layer).is_err() {
            fs::copy(base.paths.squashfs(), &base_layer)
                .context(|| "copying the base layer".into())
                .map_err(|e| e.in_stage(Stage::Image, &scratch.0))?;
        }
        fs::write(
            live.join("filesystem.module"),
            image::filesystem_module(&[BASE_LAYER, BUILD_LAYER]),
        )
        .context(|| "writing filesystem.module".into())?;
        let grub = tree.join("boot/grub");
        fs::create_dir_all(&grub).context(|| "creating boot/grub".into())?;
        fs::write(
            grub.join("grub.cfg"),
            image::grub_cfg(&plan.recipe_name, &kernel_args),
        )
        .context(|| "writing grub.cfg".into())?;
        let layers = vec![
            (BASE_LAYER.to_owned(), file_size(&base_layer)),
            (BUILD_LAYER.to_owned(), file_size(&live.join(BUILD_LAYER))),
        ];
        log.progress(Stage::Image, 0.7, "making the hybrid BIOS/UEFI ISO");
        let iso = job.out_dir.join(ISO_FILE);
        let partial = job.out_dir.join(format!("{ISO_FILE}.partial"));
        image::make_iso(&runner, &tree, &partial, epoch, &scratch.0.join("tools"))
            .map_err(|e| e.in_stage(Stage::Image, job.out_dir))?;
        fs::rename(&partial, &iso).context(|| "publishing the ISO".into())?;
        timings.push((Stage::Image, started.elapsed().as_secs_f64()));
        drop(scratch);

        // finish
        let started = Instant::now();
        log.progress(Stage::Finish, 0.0, "checksum, package manifest and SBOM");
        let (iso_sha256, iso_size_bytes) =
            sha256_file(&iso).context(|| "hashing the ISO".into())?;
        fs::write(
            job.out_dir.join(PACKAGES_FILE),
            serde_json::to_vec_pretty(&packages).expect("serialisable"),
        )
        .context(|| "writing the package manifest".into())?;
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let sbom = manifest::spdx(
            &SbomSubject {
                build_id: job.build_id,
                recipe_name: &plan.recipe_name,
                recipe_digest: plan.recipe_digest.as_str(),
                suite: &plan.suite,
                iso_sha256: &iso_sha256,
                created: &created,
                tool_version: env!("CARGO_PKG_VERSION"),
            },
            &packages,
        );
        fs::write(
            job.out_dir.join(SBOM_FILE),
            serde_json::to_vec_pretty(&sbom).expect("serialisable"),
        )
        .context(|| "writing the SBOM".into())?;
        timings.push((Stage::Finish, started.elapsed().as_secs_f64()));
        log.progress(Stage::Finish, 1.0, "done");

        if let Err(e) = self.cache.evict() {
            tracing::warn!(error = %e, "cache eviction failed");
        }
        Ok(BuildOutput {
            iso,
            iso_sha256,
            iso_size_bytes,
            packages: packages.len(),
            base_key: base.info.key.clone(),
            base_reused: base.reused,
            source_date_epoch: epoch,
            stage_seconds: timings,
            layers,
        })
    }
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The kernel or initramfs: the root's `/vmlinuz` link, else the newest in /boot.
fn kernel_file(root: &ImageRoot, link: &str) -> Result<PathBuf> {
    if let Ok(path) = root.host_path(link)
        && path.is_file()
    {
        return Ok(path);
    }
    let prefix = link.trim_start_matches('/').to_owned() + "-";
    let newest: Option<String> = root
        .list("/boot")
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .max_by(|a, b| version_order(a, b));
    match newest {
        Some(name) => root
            .host_path(&format!("/boot/{name}"))
            .map_err(|e| BuildError::Stage {
                stage: Stage::Apply,
                detail: e.summary(),
            }),
        None => Err(BuildError::Stage {
            stage: Stage::Apply,
            detail: format!(
                "the image has no {link} (is linux-image-{} installed?)",
                "amd64"
            ),
        }),
    }
}

/// Compare `vmlinuz-6.1.0-9-amd64` and `vmlinuz-6.1.0-10-amd64` numerically.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    key(a).cmp(&key(b))
}

/// SHA-256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_by_version_numbers() {
        let mut names = [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "vmlinuz-5.10.0-30-amd64",
        ];
        names.sort_by(|a, b| version_order(a, b));
        assert_eq!(names.last().unwrap(), &"vmlinuz-6.1.0-10-amd64");
    }

    #[test]
    fn build_ids_are_directory_safe() {
        assert!(check_build_id("b-3f2a").is_ok());
        for bad in ["", "../x", "a/b", "A", "x y"] {
            assert!(check_build_id(bad).is_err(), "{bad}");
        }
    }
}
