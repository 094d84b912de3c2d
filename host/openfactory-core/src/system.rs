//! Steps and checks that come from the recipe's own fields rather than from a
//! feature: host name, locale, time zone, networking, users (before the
//! features) and packages, files, services, kernel arguments (after them).

use crate::recipe::Recipe;
use crate::step::{CheckKind, FileStep, Step, UserStep};
use crate::validate::parse_mode;

/// Packages every image has before any step runs: Debian's `minbase`
/// (Essential and Priority `required`, apt among them) and what the build
/// adds to every base (the kernel, live-boot, systemd, dbus). A plugin's
/// `run` of a program from one of these needs no install step first.
pub const BASE_SYSTEM_PACKAGES: &[&str] = &[
    "apt",
    "base-files",
    "base-passwd",
    "bash",
    "bsdutils",
    "coreutils",
    "dash",
    "dbus",
    "debconf",
    "debianutils",
    "diffutils",
    "dpkg",
    "findutils",
    "grep",
    "gzip",
    "hostname",
    "init-system-helpers",
    "libc-bin",
    "libpam-modules",
    "libpam-modules-bin",
    "libpam-runtime",
    "linux-image-amd64",
    "live-boot",
    "login",
    "mawk",
    "mount",
    "ncurses-base",
    "ncurses-bin",
    "passwd",
    "perl-base",
    "sed",
    "systemd",
    "systemd-sysv",
    "sysvinit-utils",
    "tar",
    "util-linux",
];

fn file(path: &str, content: String) -> Step {
    Step::WriteFile(FileStep {
        path: path.into(),
        mode: 0o644,
        owner: "root".into(),
        group: "root".into(),
        content,
    })
}

/// Steps that run before any feature's.
pub fn prelude(recipe: &Recipe) -> Vec<Step> {
    let mut steps = Vec::new();
    let host = recipe.effective_hostname();
    steps.push(file("/etc/hostname", format!("{host}\n")));
    steps.push(file(
        "/etc/hosts",
        format!("127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"),
    ));

    if !matches!(recipe.locale.as_str(), "C.UTF-8" | "C.utf8" | "POSIX") {
        let charset = recipe
            .locale
            .split_once('.')
            .map(|(_, c)| c)
            .unwrap_or("UTF-8");
        steps.push(Step::InstallPackages {
            packages: vec!["locales".into()],
        });
        steps.push(file(
            "/etc/locale.gen",
            format!("{} {charset}\n", recipe.locale),
        ));
        steps.push(Step::Run {
            argv: vec!["locale-gen".into()],
            description: format!("generate the {} locale", recipe.locale),
        });
    }
    steps.push(file(
        "/etc/default/locale",
        format!("LANG={}\n", recipe.locale),
    ));

    if recipe.timezone != "UTC" {
        steps.push(Step::InstallPackages {
            packages: vec!["tzdata".into()],
        });
        steps.push(file("/etc/timezone", format!("{}\n", recipe.timezone)));
        steps.push(Step::Run {
            argv: vec![
                "ln".into(),
                "-sf".into(),
                format!("/usr/share/zoneinfo/{}", recipe.timezone),
                "/etc/localtime".into(),
            ],
            description: format!("set the time zone to {}", recipe.timezone),
        });
    }

    let net = &recipe.networking;
    if net.dhcp {
        steps.push(file(
            "/etc/systemd/network/20-openfactory-wired.network",
            "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n".into(),
        ));
        steps.push(Step::EnableService {
            unit: "systemd-networkd.service".into(),
        });
    }
    if net.dhcp || !net.nameservers.is_empty() {
        steps.push(Step::InstallPackages {
            packages: vec!["systemd-resolved".into()],
        });
        steps.push(Step::EnableService {
            unit: "systemd-resolved.service".into(),
        });
    }
    if !net.nameservers.is_empty() {
        steps.push(file(
            "/etc/systemd/resolved.conf.d/90-openfactory.conf",
            format!("[Resolve]\nDNS={}\n", net.nameservers.join(" ")),
        ));
    }

    if recipe.users.iter().any(|u| u.sudo) {
        steps.push(Step::InstallPackages {
            packages: vec!["sudo".into()],
        });
    }
    for user in &recipe.users {
        let mut groups = user.groups.clone();
        if user.sudo && !groups.iter().any(|g| g == "sudo") {
            groups.push("sudo".into());
        }
        for group in &user.groups {
            steps.push(Step::AddGroup {
                name: group.clone(),
                system: false,
            });
        }
        steps.push(Step::AddUser(UserStep {
            name: user.name.clone(),
            groups,
            shell: Some(user.shell.clone().unwrap_or_else(|| "/bin/bash".into())),
            system: false,
            password_hash: user.password_hash.clone(),
        }));
        if !user.ssh_authorized_keys.is_empty() {
            steps.push(Step::WriteFile(FileStep {
                path: format!("/home/{}/.ssh/authorized_keys", user.name),
                mode: 0o600,
                owner: user.name.clone(),
                group: user.name.clone(),
                content: user
                    .ssh_authorized_keys
                    .iter()
                    .map(|k| format!("{k}\n"))
                    .collect(),
            }));
        }
    }
    steps
}

/// Steps that run after every feature's.
pub fn epilogue(recipe: &Recipe) -> Vec<Step> {
    let mut steps = Vec::new();
    if !recipe.packages.is_empty() {
        steps.push(Step::InstallPackages {
            packages: recipe.packages.clone(),
        });
    }
    for f in &recipe.files {
        steps.push(Step::WriteFile(FileStep {
            path: f.path.clone(),
            mode: parse_mode(&f.mode).unwrap_or(0o644),
            owner: f.owner.clone(),
            group: f.group.clone(),
            content: f.content.clone(),
        }));
    }
    for unit in &recipe.services {
        steps.push(Step::EnableService { unit: unit.clone() });
    }
    for arg in &recipe.kernel_args {
        steps.push(Step::AddKernelArg { arg: arg.clone() });
    }
    steps
}

/// Checks every image gets: `(name, description, kind)`.
pub fn base_checks() -> Vec<(String, String, CheckKind)> {
    vec![
        (
            "multi-user".into(),
            "the system reached multi-user.target".into(),
            CheckKind::UnitActive {
                unit: "multi-user.target".into(),
            },
        ),
        (
            "no-failed-units".into(),
            "no systemd unit is in the failed state".into(),
            CheckKind::CommandSucceeds {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    // Names the failed units, as evidence.
                    "failed=$(systemctl list-units --state=failed --no-legend --plain); \
                     [ -z \"$failed\" ] || { echo \"failed units:\"; echo \"$failed\"; exit 1; }"
                        .into(),
                ],
            },
        ),
    ]
}

/// Checks derived from the recipe's own fields.
pub fn recipe_checks(recipe: &Recipe) -> Vec<(String, String, CheckKind)> {
    let mut checks = vec![(
        "hostname".to_owned(),
        format!("the host name is {}", recipe.effective_hostname()),
        CheckKind::CommandSucceeds {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("test \"$(hostname)\" = {}", recipe.effective_hostname()),
            ],
        },
    )];
    for unit in &recipe.services {
        checks.push((
            format!("service-{}", check_slug(unit.trim_end_matches(".service"))),
            format!("{unit} is active"),
            CheckKind::UnitActive { unit: unit.clone() },
        ));
    }
    for user in &recipe.users {
        checks.push((
            format!("user-{}", user.name),
            format!("user {} exists", user.name),
            CheckKind::CommandSucceeds {
                argv: vec!["id".into(), "-u".into(), user.name.clone()],
            },
        ));
    }
    // The recipe's own checks (validated: each has exactly one kind).
    for check in &recipe.checks {
        if let [(field, kind)] = check.kinds().as_slice() {
            let description = if check.description.is_empty() {
                format!("{}: {}", field.replace('_', " "), check_target(kind))
            } else {
                check.description.clone()
            };
            checks.push((check.name.clone(), description, kind.clone()));
        }
    }
    checks
}

/// How long each of the recipe's checks may retry: its own timeout, or 120 s.
pub fn check_timeout(recipe: &Recipe, name: &str) -> u32 {
    recipe
        .checks
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.timeout_seconds)
        .unwrap_or(DEFAULT_CHECK_SECONDS)
}

/// How long a check may retry unless it says otherwise.
pub const DEFAULT_CHECK_SECONDS: u32 = 120;

/// What a check looks at, for a description.
fn check_target(kind: &CheckKind) -> String {
    match kind {
        CheckKind::UnitActive { unit } => unit.clone(),
        CheckKind::CommandSucceeds { argv } => argv.join(" "),
        CheckKind::PortOpen { port, .. } => port.to_string(),
        CheckKind::FileExists { path } => path.clone(),
        CheckKind::PackageInstalled { package } => package.clone(),
        CheckKind::HttpGet { url } => url.clone(),
    }
}

/// `getty@ttyS0` → `getty-ttys0`: check names use `a-z0-9-`.
fn check_slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}
