//! Feature `docker`: Debian's Docker Engine (`docker.io`), configured through
//! `/etc/docker/daemon.json`.
//!
//! Debian's docker.service starts dockerd with `-H fd://`, so daemon.json must
//! never set `hosts`. On trixie the `docker` client is split out into
//! `docker-cli`, which docker.io only recommends, so it is installed explicitly.

use std::collections::BTreeMap;

use openfactory_plugin_sdk::prelude::*;
use serde::Serialize;
use serde_json::Value;

const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// OpenFactory images are live systems whose root is an overlay, and overlay2
/// cannot stack on an overlay ("failed to mount overlay: invalid argument",
/// found by a test run): Docker's storage gets a tmpfs of its own.
const STORAGE_MOUNT: &str = "/etc/systemd/system/var-lib-docker.mount";
const STORAGE_MOUNT_UNIT: &str = "[Unit]
Description=Docker storage on tmpfs (overlay2 cannot stack on the live image's overlay root)
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target docker.service

[Mount]
What=tmpfs
Where=/var/lib/docker
Type=tmpfs
Options=mode=0710,size=50%

[Install]
WantedBy=local-fs.target
";

/// Storage driver of the Docker daemon (`storage-driver` in daemon.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StorageDriver {
    /// Copy-on-write overlay filesystem; Docker's default and the right choice on ext4/xfs.
    Overlay2,
    /// No copy-on-write: every layer is a full copy. Slow and disk-hungry; for debugging only.
    Vfs,
    /// Needs /var/lib/docker on a btrfs filesystem.
    Btrfs,
    /// Needs /var/lib/docker on a ZFS dataset (ZFS tools are in Debian's contrib area).
    Zfs,
}

impl StorageDriver {
    fn as_str(self) -> &'static str {
        match self {
            StorageDriver::Overlay2 => "overlay2",
            StorageDriver::Vfs => "vfs",
            StorageDriver::Btrfs => "btrfs",
            StorageDriver::Zfs => "zfs",
        }
    }
}

/// Options of the `docker` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Also install Docker Compose (Debian package `docker-compose`: v1 on bookworm, v2 on trixie; command `docker-compose`).
    pub compose: bool,
    /// Storage driver of the daemon. Keep `overlay2` unless /var/lib/docker is on btrfs or ZFS.
    pub storage_driver: StorageDriver,
    /// Maximum size of one container log file before rotation (json-file `max-size`), e.g. `10m`; units k, m, g.
    #[schemars(regex(pattern = r"^[0-9]+[kmg]$"))]
    pub log_max_size: String,
    /// Number of rotated log files kept per container (json-file `max-file`).
    #[schemars(range(min = 1))]
    pub log_max_file: u8,
    /// Names of recipe users added to the `docker` group. Membership is equivalent to root access.
    #[schemars(inner(regex(pattern = r"^[a-z_][a-z0-9_-]*$"), length(max = 32)))]
    pub users: Vec<String>,
    /// Registry mirrors for Docker Hub pulls (`registry-mirrors`), as https:// URLs.
    #[schemars(inner(regex(pattern = r"^https://[^\s/]+")))]
    pub registry_mirrors: Vec<String>,
    /// Keep containers running while the daemon restarts or upgrades (`live-restore`). Not compatible with swarm mode.
    pub live_restore: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compose: true,
            storage_driver: StorageDriver::Overlay2,
            log_max_size: "10m".into(),
            log_max_file: 3,
            users: Vec::new(),
            registry_mirrors: Vec::new(),
            live_restore: true,
        }
    }
}

/// daemon.json, keys sorted (BTreeMap), pretty-printed, newline-terminated.
fn daemon_json(o: &Options) -> Result<String, serde_json::Error> {
    let log_opts = BTreeMap::from([
        ("max-file", o.log_max_file.to_string()),
        ("max-size", o.log_max_size.clone()),
    ]);
    let mut config: BTreeMap<&str, Value> = BTreeMap::new();
    config.insert("live-restore", Value::Bool(o.live_restore));
    config.insert("log-driver", Value::from("json-file"));
    config.insert("log-opts", serde_json::to_value(log_opts)?);
    config.insert("storage-driver", Value::from(o.storage_driver.as_str()));
    if !o.registry_mirrors.is_empty() {
        config.insert(
            "registry-mirrors",
            serde_json::to_value(&o.registry_mirrors)?,
        );
    }
    Ok(serde_json::to_string_pretty(&config)? + "\n")
}

/// Levenshtein distance, for "did you mean" suggestions.
fn unique_users(o: &Options) -> Vec<&str> {
    let mut seen = Vec::new();
    for u in &o.users {
        if !seen.contains(&u.as_str()) {
            seen.push(u.as_str());
        }
    }
    seen
}

pub struct Docker;

impl Feature for Docker {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "docker",
            env!("CARGO_PKG_VERSION"),
            "Docker Engine from Debian, with optional Docker Compose",
            "containers",
        )
        .reads(&["users"])
        .conflicts(&["podman"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let o = &ctx.options;
        let mut problems = ctx.recipe.unknown_users(
            &o.users,
            "docker.unknown-user",
            "users",
            "it cannot be added to the docker group",
        );
        for (i, mirror) in o.registry_mirrors.iter().enumerate() {
            let host = mirror.strip_prefix("https://").unwrap_or("");
            if host.is_empty() || host.starts_with('/') || mirror.chars().any(char::is_whitespace) {
                let fix = match mirror.strip_prefix("http://") {
                    Some(rest) => format!("use https://{rest}"),
                    None => "write it as https://host[:port]".into(),
                };
                problems.push(
                    diag::error(
                        "docker.registry-mirror",
                        &format!("options.registry_mirrors[{i}]"),
                        format!("registry mirror `{mirror}` must be an https:// URL with a host"),
                    )
                    .suggest(fix),
                );
            }
        }
        let digits = o.log_max_size.strip_suffix(['k', 'm', 'g']).unwrap_or("");
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.bytes().all(|b| b == b'0')
        {
            problems.push(
                diag::error(
                    "docker.log-max-size",
                    "options.log_max_size",
                    format!(
                        "log_max_size `{}` must be a size above zero with a unit k, m or g",
                        o.log_max_size
                    ),
                )
                .suggest("use a size such as `10m`"),
            );
        }
        let driver_problem = match o.storage_driver {
            StorageDriver::Overlay2 => None,
            StorageDriver::Vfs => {
                Some("the vfs storage driver copies every layer in full: slow and disk-hungry")
            }
            StorageDriver::Btrfs => Some(
                "the btrfs storage driver needs /var/lib/docker on a btrfs filesystem, or dockerd will not start",
            ),
            StorageDriver::Zfs => Some(
                "the zfs storage driver needs /var/lib/docker on a ZFS dataset (ZFS is in Debian's contrib area), or dockerd will not start",
            ),
        };
        if let Some(message) = driver_problem {
            problems.push(
                diag::warning("docker.storage-driver", "options.storage_driver", message).suggest(
                    "use `overlay2` unless the image's filesystem layout is built for this driver",
                ),
            );
        }
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let o = &ctx.options;
        // apparmor: Debian kernels enable AppArmor and dockerd loads its docker-default
        // profile with apparmor_parser; ca-certificates: TLS to registries.
        let mut packages = vec!["docker.io", "apparmor", "ca-certificates"];
        if ctx.recipe.suite() != "bookworm" {
            packages.push("docker-cli");
        }
        if o.compose {
            packages.push("docker-compose");
        }
        if o.storage_driver == StorageDriver::Btrfs {
            packages.push("btrfs-progs");
        }
        let config = daemon_json(o).map_err(|e| {
            vec![diag::error(
                "docker.daemon-json",
                "options",
                format!("daemon.json could not be generated: {e}"),
            )]
        })?;
        let mut steps = vec![
            step::install(&packages),
            step::write_file(DAEMON_JSON, &config),
        ];
        if matches!(o.storage_driver, StorageDriver::Overlay2 | StorageDriver::Vfs) {
            steps.push(step::write_file(STORAGE_MOUNT, STORAGE_MOUNT_UNIT));
            steps.push(step::enable("var-lib-docker.mount"));
        }
        steps.push(step::enable("docker.service"));
        // The docker group is created by docker.io's postinst.
        steps.extend(
            unique_users(o)
                .into_iter()
                .map(|u| step::user(u, &["docker"])),
        );
        Ok(steps)
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        let mut checks = vec![
            check::unit_active(
                "dockerd-active",
                "the Docker daemon is running",
                "docker.service",
            ),
            check::command_succeeds(
                "docker-info",
                "the docker client reaches the daemon",
                &["docker", "info"],
            ),
            check::package_installed(
                "package",
                "Debian's Docker Engine is installed",
                "docker.io",
            ),
        ];
        if ctx.options.compose {
            checks.push(check::command_succeeds(
                "compose",
                "Docker Compose runs",
                &["docker-compose", "version"],
            ));
        }
        checks
    }
}

export_feature!(Docker);
