//! `hardening`: CIS-style baseline for Debian 12/13 images.
//!
//! Kernel and network sysctls, auditd with CIS audit rules, password quality and
//! ageing, a restrictive umask, login banners, automatic security updates, no core
//! dumps and no rarely used filesystem modules. The audit rules and the default
//! banner are read-only assets of the plugin (`/assets` in the sandbox).

use openfactory_plugin_sdk::prelude::*;

/// CIS Debian Linux benchmark sysctls (kernel, filesystem, IPv4 and IPv6).
const SYSCTLS: &[(&str, &str)] = &[
    ("kernel.kptr_restrict", "2"),
    ("kernel.dmesg_restrict", "1"),
    ("kernel.randomize_va_space", "2"),
    ("kernel.yama.ptrace_scope", "1"),
    ("fs.suid_dumpable", "0"),
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_symlinks", "1"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.default.rp_filter", "1"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv4.conf.all.secure_redirects", "0"),
    ("net.ipv4.conf.default.secure_redirects", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.all.accept_source_route", "0"),
    ("net.ipv4.conf.default.accept_source_route", "0"),
    ("net.ipv4.conf.all.log_martians", "1"),
    ("net.ipv4.conf.default.log_martians", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
    ("net.ipv4.icmp_ignore_bogus_error_responses", "1"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_source_route", "0"),
    ("net.ipv6.conf.default.accept_source_route", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
];

/// Filesystems CIS asks to make unloadable.
const FILESYSTEMS: &[&str] = &["cramfs", "freevxfs", "jffs2", "hfs", "hfsplus", "udf"];

/// Options of the `hardening` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Apply the CIS kernel and network sysctls: kernel pointer and dmesg restriction, full ASLR,
    /// ptrace limited to descendants, no setuid core dumps, protected links, reverse-path filtering,
    /// no ICMP redirects, source routing or IPv6 router advertisements (static IPv6 only), martian
    /// logging and TCP SYN cookies. IP forwarding is left alone (containers need it).
    pub sysctls: bool,
    /// Install auditd and load CIS audit rules at boot (time, identity, sudoers, permission changes,
    /// refused file access, mounts, deletions, kernel modules; amd64 syscall tables).
    pub auditd: bool,
    /// Minimum length of new passwords, enforced by pam_pwquality together with all four
    /// character classes and at most 3 repeated characters.
    #[schemars(range(min = 8, max = 128))]
    pub password_min_length: u8,
    /// Maximum password age in days (PASS_MAX_DAYS in /etc/login.defs) for accounts created after this
    /// step; 99999 means passwords never expire.
    #[schemars(range(min = 1, max = 99999))]
    pub password_max_days: u32,
    /// Banner shown before login on consoles (/etc/issue) and to network logins (/etc/issue.net).
    /// Null or absent uses the plugin's standard "authorized uses only" notice; an empty string
    /// leaves Debian's files untouched. Plain text: no control characters, and note that a
    /// backslash starts an agetty escape on consoles.
    #[schemars(length(max = 4096))]
    pub login_banner: Option<String>,
    /// Install unattended-upgrades and enable the daily package list update and security upgrade.
    pub unattended_upgrades: bool,
    /// Forbid core dumps: hard core limit 0 for logins and services, no dumps of setuid programs.
    pub disable_core_dumps: bool,
    /// Make the cramfs, freevxfs, jffs2, hfs, hfsplus and udf filesystem modules unloadable.
    pub blacklist_filesystems: bool,
    /// Default umask for login shells (/etc/profile.d) and /etc/login.defs: octal with a leading 0,
    /// e.g. "027" (new files not readable by other users) or "077".
    #[schemars(regex(pattern = r"^0[0-7]{2,3}$"))]
    pub umask: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sysctls: true,
            auditd: true,
            password_min_length: 14,
            password_max_days: 365,
            login_banner: None,
            unattended_upgrades: true,
            disable_core_dumps: true,
            blacklist_filesystems: true,
            umask: "027".into(),
        }
    }
}

pub struct Hardening;

/// A file from the plugin's read-only assets, or a `hardening.asset-missing` error at `path`.
fn asset(name: &str, path: &str) -> Result<String, Diagnostic> {
    std::fs::read_to_string(format!("/assets/{name}")).map_err(|e| {
        diag::error(
            "hardening.asset-missing",
            path,
            format!("the plugin asset /assets/{name} cannot be read: {e}"),
        )
        .suggest("reinstall the hardening plugin bundle (its assets directory is incomplete)")
    })
}

/// The banner to write, if any: the option, or the asset when the option is unset.
fn banner(options: &Options) -> Result<Option<String>, Diagnostic> {
    let text = match &options.login_banner {
        Some(text) if text.is_empty() => return Ok(None),
        Some(text) => text.clone(),
        None => asset("banner.txt", "options.login_banner")?,
    };
    Ok(Some(if text.ends_with('\n') {
        text
    } else {
        format!("{text}\n")
    }))
}

/// `sed` argv that replaces every (possibly commented) `KEY` line of /etc/login.defs by `KEY<TAB>value`,
/// appended at the end so that it also works when Debian ships no such line (trixie has no UMASK).
fn login_defs(key: &str, value: &str) -> Vec<String> {
    let argv = [
        "sed",
        "-i",
        "-E",
        "-e",
        &format!("/^#?{key}([[:space:]]|$)/d"),
        "-e",
        &format!("$a {key}\\t{value}"),
        "/etc/login.defs",
    ];
    argv.iter().map(|s| s.to_string()).collect()
}

fn octal(umask: &str) -> u32 {
    u32::from_str_radix(umask, 8).unwrap_or(0o777)
}

impl Feature for Hardening {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "hardening",
            env!("CARGO_PKG_VERSION"),
            "CIS-style hardening: sysctls, auditd, password policy, banners, updates",
            "security",
        )
        .reads(&["security"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let (options, security) = (&ctx.options, &ctx.recipe.security);
        let mut problems = Vec::new();
        if security.root_login {
            problems.push(
                diag::warning("hardening.root-login", "security.root_login", "direct root login is allowed, which CIS forbids: actions cannot be traced to a person")
                    .suggest("set security.root_login to false and give an administrator user `sudo: true`"),
            );
        }
        if security.password_authentication {
            problems.push(
                diag::warning(
                    "hardening.password-authentication",
                    "security.password_authentication",
                    "password authentication is enabled for remote logins",
                )
                .suggest("set security.password_authentication to false and use SSH keys"),
            );
        }
        if let Some(text) = &options.login_banner
            && text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            problems.push(
                diag::error(
                    "hardening.login-banner",
                    "options.login_banner",
                    "the login banner contains control characters (escape sequences)",
                )
                .suggest("use plain text and newlines only"),
            );
        }
        if octal(&options.umask) & 0o027 != 0o027 {
            problems.push(
                diag::warning(
                    "hardening.umask-permissive",
                    "options.umask",
                    format!(
                        "umask {} lets other users read new files or the group write them",
                        options.umask
                    ),
                )
                .suggest("use \"027\" or \"077\""),
            );
        }
        if options.auditd {
            problems.extend(asset("audit.rules", "options.auditd").err());
        }
        problems.extend(banner(options).err());
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let options = &ctx.options;
        let rules = if options.auditd {
            asset("audit.rules", "options.auditd").map(Some)
        } else {
            Ok(None)
        };
        let (rules, banner) = match (rules, banner(options)) {
            (Ok(rules), Ok(banner)) => (rules, banner),
            (rules, banner) => return Err(rules.err().into_iter().chain(banner.err()).collect()),
        };
        let mut steps = Vec::new();

        if options.sysctls {
            steps.extend(SYSCTLS.iter().map(|(key, value)| step::sysctl(key, value)));
        } else if options.disable_core_dumps {
            steps.push(step::sysctl("fs.suid_dumpable", "0"));
        }
        if let Some(rules) = rules {
            steps.push(step::install(&["auditd"]));
            steps.push(step::write_file_with(
                "/etc/audit/rules.d/50-openfactory-hardening.rules",
                &rules,
                0o640,
                "root",
                "root",
            ));
            steps.push(step::enable("auditd.service"));
            if ctx.recipe.suite() != "bookworm" {
                // From auditd 4 (trixie) on, a separate unit loads the rules.
                steps.push(step::enable("audit-rules.service"));
            }
        }

        // libpam-pwquality's postinst adds pam_pwquality to common-password (pam-auth-update).
        steps.push(step::install(&["libpam-pwquality"]));
        steps.push(step::write_file(
            "/etc/security/pwquality.conf.d/50-openfactory.conf",
            &format!("# Written by OpenFactory (feature `hardening`).\nminlen = {}\nminclass = 4\nmaxrepeat = 3\nenforce_for_root\n", options.password_min_length),
        ));
        let max_days = options.password_max_days.to_string();
        steps.push(step::run(
            "Set PASS_MAX_DAYS in /etc/login.defs",
            &login_defs("PASS_MAX_DAYS", &max_days),
        ));
        steps.push(step::run(
            "Set UMASK in /etc/login.defs",
            &login_defs("UMASK", &options.umask),
        ));
        steps.push(step::write_file(
            "/etc/profile.d/openfactory-umask.sh",
            &format!(
                "# Written by OpenFactory (feature `hardening`).\numask {}\n",
                options.umask
            ),
        ));

        if let Some(banner) = banner {
            steps.push(step::write_file("/etc/issue", &banner));
            steps.push(step::write_file("/etc/issue.net", &banner));
        }
        if options.unattended_upgrades {
            steps.push(step::install(&["unattended-upgrades"]));
            steps.push(step::write_file(
                "/etc/apt/apt.conf.d/20auto-upgrades",
                "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n",
            ));
        }
        if options.disable_core_dumps {
            steps.push(step::write_file(
                "/etc/security/limits.d/10-openfactory-coredump.conf",
                "# Written by OpenFactory (feature `hardening`).\n* hard core 0\n",
            ));
            steps.push(step::write_file(
                "/etc/systemd/system.conf.d/10-openfactory-coredump.conf",
                "# Written by OpenFactory (feature `hardening`).\n[Manager]\nDefaultLimitCORE=0\n",
            ));
        }
        if options.blacklist_filesystems {
            let mut conf = String::from(
                "# Written by OpenFactory (feature `hardening`): filesystems that cannot be loaded.\n",
            );
            for fs in FILESYSTEMS {
                conf.push_str(&format!("install {fs} /bin/false\nblacklist {fs}\n"));
            }
            steps.push(step::write_file(
                "/etc/modprobe.d/openfactory-hardening.conf",
                &conf,
            ));
        }
        Ok(steps)
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        let options = &ctx.options;
        let mut checks = Vec::new();
        if options.auditd {
            checks.push(check::unit_active(
                "auditd-active",
                "auditd is recording",
                "auditd.service",
            ));
        }
        if options.sysctls {
            checks.push(check::command_succeeds(
                "sysctls-applied",
                "the hardening sysctls are in effect",
                &["sh", "-c", "test \"$(cat /proc/sys/kernel/dmesg_restrict)\" = 1 && test \"$(cat /proc/sys/kernel/kptr_restrict)\" = 2"],
            ));
        }
        checks.push(check::file_exists(
            "banner-present",
            "the network login banner exists",
            "/etc/issue.net",
        ));
        checks.push(check::package_installed(
            "pwquality-installed",
            "password quality checks are installed",
            "libpam-pwquality",
        ));
        checks.push(check::command_succeeds(
            "password-max-days",
            "login.defs sets the maximum password age",
            &[
                "grep",
                "-Eq",
                &format!("^PASS_MAX_DAYS[[:space:]]+{}$", options.password_max_days),
                "/etc/login.defs",
            ],
        ));
        if options.unattended_upgrades {
            checks.push(check::package_installed(
                "unattended-upgrades-installed",
                "automatic upgrades are installed",
                "unattended-upgrades",
            ));
        }
        if options.blacklist_filesystems {
            checks.push(check::command_succeeds(
                "filesystems-blocked",
                "rare filesystem modules cannot be loaded",
                &["sh", "-c", "modprobe -n -v cramfs | grep -q /bin/false"],
            ));
        }
        checks
    }
}

export_feature!(Hardening);
