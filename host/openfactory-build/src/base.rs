//! The bootstrap stage: a minimal Debian root with a kernel and live-boot,
//! made once per (suite, architecture, mirrors, package set) and kept in the
//! cache, both as a directory (the lower layer builds write over) and as a
//! squashfs (the bottom layer of every ISO made from it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use openfactory_core::Plan;

use crate::command::{self, CommandError, Runner};

/// Bump when what a base contains changes for the same spec.
const BASE_FORMAT: u32 = 1;

/// Where packages come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirrors {
    /// e.g. `http://deb.debian.org/debian`
    pub debian: String,
    /// e.g. `http://deb.debian.org/debian-security`
    pub security: String,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            debian: "http://deb.debian.org/debian".into(),
            security: "http://deb.debian.org/debian-security".into(),
        }
    }
}

impl Mirrors {
    /// Both must be plain http(s) URLs: they end up in apt sources.
    pub fn check(&self) -> Result<(), String> {
        for (field, url) in [
            ("mirror", &self.debian),
            ("security mirror", &self.security),
        ] {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() < 512
                && url
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~:/%@+".contains(c));
            if !ok {
                return Err(format!(
                    "{field} `{}` is not a plain http(s) URL such as http://deb.debian.org/debian",
                    openfactory_core::rules::truncate(url, 80)
                ));
            }
        }
        Ok(())
    }
}

/// What a base is made of; its hash is the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseSpec {
    pub suite: String,
    pub architecture: String,
    pub mirrors: Mirrors,
    /// Sorted.
    pub packages: Vec<String>,
    pub format: u32,
}

/// Packages every image needs to boot live; the guest agent and dbus make
/// it testable (and ACPI power-down work).
pub fn base_packages(guest_agent: bool) -> Vec<String> {
    let mut packages = vec!["linux-image-amd64", "live-boot", "systemd-sysv", "dbus"];
    if guest_agent {
        packages.push("qemu-guest-agent");
    }
    let mut packages: Vec<String> = packages.into_iter().map(String::from).collect();
    packages.sort();
    packages
}

impl BaseSpec {
    pub fn for_plan(plan: &Plan, mirrors: &Mirrors) -> Self {
        BaseSpec {
            suite: plan.suite.clone(),
            architecture: plan.architecture.clone(),
            mirrors: mirrors.clone(),
            packages: base_packages(plan.guest_agent),
            format: BASE_FORMAT,
        }
    }

    /// `bookworm-amd64-<16 hex>`: readable, and unique per spec.
    pub fn key(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("serialisable");
        let digest = hex::encode(Sha256::digest(&canonical));
        format!("{}-{}-{}", self.suite, self.architecture, &digest[..16])
    }

    /// One-line apt sources: the suite, its updates and its security suite.
    pub fn sources(&self) -> Vec<String> {
        vec![
            format!("deb {} {} main", self.mirrors.debian, self.suite),
            format!("deb {} {}-updates main", self.mirrors.debian, self.suite),
            format!("deb {} {}-security main", self.mirrors.security, self.suite),
        ]
    }

    /// The same sources as a deb822 file for the image.
    pub fn deb822(&self) -> String {
        format!(
            "Types: deb\nURIs: {}\nSuites: {s} {s}-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: {}\nSuites: {s}-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            self.mirrors.debian,
            self.mirrors.security,
            s = self.suite
        )
    }
}

/// Makes a root file system for a spec. One implementation is enough; the
/// trait keeps the choice (measured: mmdebstrap) in one place.
pub trait Bootstrapper: Send + Sync {
    fn name(&self) -> &'static str;
    /// Fill the empty directory `target`; keep downloaded .debs in `debs`.
    fn bootstrap(
        &self,
        spec: &BaseSpec,
        target: &Path,
        debs: &Path,
        runner: &Runner,
    ) -> Result<(), CommandError>;
}

/// mmdebstrap: 66–68 s here for the base set, against 86 s for debootstrap,
/// and it takes the -updates and -security suites in the same run.
pub struct Mmdebstrap;

impl Bootstrapper for Mmdebstrap {
    fn name(&self) -> &'static str {
        "mmdebstrap"
    }

    fn bootstrap(
        &self,
        spec: &BaseSpec,
        target: &Path,
        debs: &Path,
        runner: &Runner,
    ) -> Result<(), CommandError> {
        // In mount and PID namespaces of its own: whatever mmdebstrap or its
        // hooks mount (the package cache bind) goes away with it, even if it
        // fails, and killing it (a cancelled build) kills apt and dpkg too.
        let mut cmd = command::isolated("mmdebstrap", false);
        cmd.args([
            "--mode=root",
            "--variant=minbase",
            "--format=directory",
            "--skip=download/empty",
            "--skip=cleanup/apt/cache",
            // The lists give the Release date; `tidy` removes them after.
            "--skip=cleanup/apt/lists",
        ])
        .arg(format!("--architectures={}", spec.architecture))
        .arg(format!("--include={}", spec.packages.join(",")))
        // The package cache is shared: bind it in for the run. Its path
        // reaches the hook through the environment, never spliced into it.
        .arg(r#"--setup-hook=mkdir -p "$1/var/cache/apt/archives" && mount --bind "$OPENFACTORY_DEBS" "$1/var/cache/apt/archives""#)
        .arg(r#"--customize-hook=umount "$1/var/cache/apt/archives""#)
        .arg(&spec.suite)
        .arg(target)
        .args(spec.sources())
        .env("OPENFACTORY_DEBS", debs)
        .env("LC_ALL", "C.UTF-8");
        runner.run(&mut cmd, None).map_err(|e| match e {
            CommandError::Failed { status, tail, .. } => CommandError::Failed {
                program: "mmdebstrap".into(),
                status,
                tail,
            },
            other => other,
        })
    }
}

/// A base in the cache, ready to build on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseInfo {
    pub key: String,
    pub spec: BaseSpec,
    /// Unix seconds: when it was made.
    pub created_at: i64,
    /// The suite's Release date (Unix seconds): the `SOURCE_DATE_EPOCH` of
    /// every build on this base.
    pub source_date_epoch: i64,
    pub bootstrapper: String,
}

/// A base's files in the cache.
#[derive(Debug, Clone)]
pub struct BasePaths {
    pub dir: PathBuf,
}

impl BasePaths {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn squashfs(&self) -> PathBuf {
        self.dir.join("base.squashfs")
    }
    pub fn info(&self) -> PathBuf {
        self.dir.join("base.json")
    }
}

/// The Release date of the suite, from the `Date:` field of an InRelease or
/// Release file (RFC 2822), as Unix seconds.
pub fn release_date(release: &str) -> Option<i64> {
    let line = release
        .lines()
        .find_map(|l| l.strip_prefix("Date:"))?
        .trim();
    // Debian writes the zone as `UTC`, which RFC 2822 spells `+0000`.
    let line = match line.strip_suffix(" UTC") {
        Some(rest) => format!("{rest} +0000"),
        None => line.to_owned(),
    };
    let parsed =
        time::OffsetDateTime::parse(&line, &time::format_description::well_known::Rfc2822).ok()?;
    Some(parsed.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(guest_agent: bool) -> BaseSpec {
        BaseSpec {
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            mirrors: Mirrors::default(),
            packages: base_packages(guest_agent),
            format: BASE_FORMAT,
        }
    }

    #[test]
    fn the_key_changes_with_what_the_base_holds() {
        let a = spec(true);
        assert!(a.key().starts_with("bookworm-amd64-"));
        assert_eq!(a.key(), spec(true).key());
        assert_ne!(a.key(), spec(false).key());
        let mut other_mirror = spec(true);
        other_mirror.mirrors.debian = "http://127.0.0.1:3142/debian".into();
        assert_ne!(a.key(), other_mirror.key());
        assert!(a.packages.contains(&"qemu-guest-agent".to_owned()));
        assert!(
            !spec(false)
                .packages
                .contains(&"qemu-guest-agent".to_owned())
        );
    }

    #[test]
    fn mirrors_must_be_plain_urls() {
        assert!(Mirrors::default().check().is_ok());
        for bad in [
            "ftp://x/debian",
            "http://x/debian main\ndeb http://evil/ sid",
            "http://x/$(reboot)",
            "file:///etc",
        ] {
            let mirrors = Mirrors {
                debian: bad.into(),
                ..Mirrors::default()
            };
            let err = mirrors.check().unwrap_err();
            assert!(err.starts_with("mirror `"), "{err}");
        }
    }

    #[test]
    fn sources_cover_updates_and_security() {
        let s = spec(true);
        assert_eq!(
            s.sources()[2],
            "deb http://deb.debian.org/debian-security bookworm-security main"
        );
        assert!(s.deb822().contains("Suites: bookworm bookworm-updates\n"));
    }

    #[test]
    fn release_dates_parse() {
        let release = "Origin: Debian\nDate: Sat, 15 Nov 2025 09:37:14 UTC\nSuite: stable\n";
        assert_eq!(release_date(release), Some(1763199434));
        assert_eq!(release_date("Origin: Debian\n"), None);
    }
}
