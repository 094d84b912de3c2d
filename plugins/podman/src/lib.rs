//! Feature `podman`: daemonless containers with Debian's Podman.
//!
//! Debian's /etc/containers/registries.conf defines no unqualified-search
//! registries, so short image names (`debian:trixie`) only resolve through the
//! aliases in registries.conf.d/shortnames.conf. This feature adds a version-2
//! drop-in listing the registries to search. Rootless users get their
//! subordinate UID/GID ranges from `useradd`, which allocates them on Debian
//! (SUB_UID_* in /etc/login.defs); the boot checks verify they are there.
//!
//! The image boots live, so `/` (and with it /var/lib/containers and every
//! home directory) is an overlayfs. Podman's overlay driver refuses to stack on
//! overlayfs without a FUSE implementation ("'overlay' is not supported over
//! overlayfs, a mount_program is required", measured on a catalog boot), so
//! the feature installs fuse-overlayfs and writes a storage.conf that names it,
//! for root's and rootless users' storage alike.

use openfactory_plugin_sdk::prelude::*;

const REGISTRIES_DROP_IN: &str = "/etc/containers/registries.conf.d/50-openfactory.conf";

/// Replaces the packaged /usr/share/containers/storage.conf (containers/storage reads one
/// file, not a merge, on bookworm's podman 4.3 as on trixie's 5.4).
const STORAGE_CONF: &str = "/etc/containers/storage.conf";

const STORAGE: &str = "# Managed by OpenFactory (feature `podman`).\n\
# The live root is an overlayfs, on which the kernel's overlay cannot stack:\n\
# container layers are mounted through fuse-overlayfs instead.\n\
[storage]\n\
driver = \"overlay\"\n\
runroot = \"/run/containers/storage\"\n\
graphroot = \"/var/lib/containers/storage\"\n\
\n\
[storage.options.overlay]\n\
mount_program = \"/usr/bin/fuse-overlayfs\"\n";

/// A registry host with an optional port, as registries.conf expects it.
const REGISTRY_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$";

/// Options of the `podman` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Install `podman-docker`: a `docker` command that runs podman, for scripts written for Docker.
    pub docker_compat: bool,
    /// Install `podman-compose` to run docker-compose.yml files with podman.
    pub compose: bool,
    /// Names of recipe users who run rootless containers. Installs uidmap and the user-mode networking tools; each user needs subordinate UID/GID ranges in /etc/subuid and /etc/subgid, which Debian's useradd allocates.
    #[schemars(inner(regex(pattern = r"^[a-z_][a-z0-9_-]*$"), length(max = 32)))]
    pub rootless_users: Vec<String>,
    /// Registries searched, in order, for image names without a registry (`unqualified-search-registries`), as `host` or `host:port`, e.g. `docker.io`, `quay.io`.
    #[schemars(inner(regex(pattern = REGISTRY_PATTERN)))]
    pub registries: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            docker_compat: false,
            compose: false,
            rootless_users: Vec::new(),
            registries: vec!["docker.io".into()],
        }
    }
}

fn is_registry(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-']);
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// First occurrence of each string, in order.
fn unique(xs: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for x in xs {
        if !out.contains(&x.as_str()) {
            out.push(x);
        }
    }
    out
}

fn registries_conf(registries: &[&str]) -> String {
    // Entries are validated (host[:port]); escaping keeps the TOML valid regardless.
    let quoted: Vec<String> = registries
        .iter()
        .map(|r| format!("\"{}\"", r.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!(
        "# Managed by OpenFactory (feature `podman`).\n\
         # Registries tried, in order, for image names without a registry.\n\
         unqualified-search-registries = [{}]\n",
        quoted.join(", ")
    )
}

/// Levenshtein distance, for "did you mean" suggestions.
pub struct Podman;

impl Feature for Podman {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "podman",
            env!("CARGO_PKG_VERSION"),
            "Podman daemonless containers, rootful and rootless",
            "containers",
        )
        .reads(&["users"])
        .conflicts(&["docker"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let o = &ctx.options;
        let mut problems = ctx.recipe.unknown_users(
            &o.rootless_users,
            "podman.unknown-user",
            "rootless_users",
            "it cannot run rootless containers",
        );
        for (i, registry) in o.registries.iter().enumerate() {
            if is_registry(registry) {
                continue;
            }
            let bare = registry
                .split("://")
                .last()
                .unwrap_or(registry)
                .split('/')
                .next()
                .unwrap_or("");
            let fix = if is_registry(bare) {
                format!("write just the registry host: `{bare}`")
            } else {
                "write a registry host, optionally with a port, e.g. `quay.io` or `registry.example.com:5000`".into()
            };
            problems.push(
                diag::error(
                    "podman.registry",
                    &format!("options.registries[{i}]"),
                    format!("`{registry}` is not a registry host[:port]"),
                )
                .suggest(fix),
            );
        }
        if o.registries.is_empty() {
            problems.push(
                diag::warning(
                    "podman.no-registries",
                    "options.registries",
                    "with no search registries, short image names resolve only through Debian's shortnames.conf aliases",
                )
                .suggest("list at least one registry, e.g. `docker.io`, or always use fully qualified image names"),
            );
        }
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let o = &ctx.options;
        // netavark + aardvark-dns: the network stack (containers-common only depends on a virtual
        // one); ca-certificates: TLS to registries.
        // fuse-overlayfs: container storage on the live overlayfs root (see the module docs).
        let mut packages = vec![
            "podman",
            "netavark",
            "aardvark-dns",
            "ca-certificates",
            "fuse-overlayfs",
        ];
        if o.docker_compat {
            packages.push("podman-docker");
        }
        if o.compose {
            packages.push("podman-compose");
        }
        if !o.rootless_users.is_empty() {
            // newuidmap/newgidmap, user-mode networking (podman 5 on trixie defaults to pasta),
            // and a user D-Bus session for the systemd cgroup manager.
            packages.extend(["uidmap", "slirp4netns", "dbus-user-session"]);
            if ctx.recipe.suite() != "bookworm" {
                packages.push("passt");
            }
        }
        let mut steps = vec![
            step::install(&packages),
            step::write_file(REGISTRIES_DROP_IN, &registries_conf(&unique(&o.registries))),
            step::write_file(STORAGE_CONF, STORAGE),
        ];
        if o.docker_compat {
            steps.push(step::write_file(
                "/etc/containers/nodocker",
                "# Silences podman-docker's \"Emulate Docker CLI using podman\" message.\n",
            ));
        }
        Ok(steps)
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        let o = &ctx.options;
        let mut checks = vec![
            check::command_succeeds(
                "podman-info",
                "podman reads its configuration and storage",
                &["podman", "info"],
            ),
            check::package_installed("package", "Debian's podman is installed", "podman"),
        ];
        if o.docker_compat {
            checks.push(check::command_succeeds(
                "docker-compat",
                "the docker command runs podman",
                &["docker", "--version"],
            ));
        }
        if o.compose {
            checks.push(check::command_succeeds(
                "compose",
                "podman-compose runs",
                &["podman-compose", "version"],
            ));
        }
        let known: Vec<&str> = ctx.recipe.users.iter().map(|u| u.name.as_str()).collect();
        let rootless = unique(&o.rootless_users)
            .into_iter()
            .filter(|u| known.contains(u));
        for (i, user) in rootless.enumerate() {
            let pattern = format!("^{user}:");
            for file in ["subuid", "subgid"] {
                checks.push(check::command_succeeds(
                    &format!("rootless-{i}-{file}"),
                    &format!("rootless user `{user}` has a subordinate ID range in /etc/{file}"),
                    &["grep", "-q", pattern.as_str(), &format!("/etc/{file}")],
                ));
            }
        }
        checks
    }
}

export_feature!(Podman);
