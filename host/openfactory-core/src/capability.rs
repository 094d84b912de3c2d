//! What a plugin may do to an image: the capabilities its bundle declares,
//! the privileges an operator grants, and the check of every step against
//! both.
//!
//! A step check ([`Step::check`]) says whether a step is well formed; this
//! module says whether *this plugin* may emit it. A plugin declares, in its
//! signed bundle manifest, what it touches: packages, paths, units, groups,
//! sysctls, kernel arguments, package sources and the programs its `run`
//! steps execute. The planner refuses any step outside the declaration,
//! naming the plugin, the step and the capability it lacks.
//!
//! Some declarations give a plugin power over the whole system that a
//! reader of its summary would not expect (trusting a package source,
//! sudoers, PAM, the dynamic loader, a kernel `init=`…): each is a
//! [`Privilege`], implied by the declaration, and a step that needs one is
//! refused unless the operator granted it when installing the plugin.
//!
//! What this cannot catch: a plugin that declares `/etc/systemd/system/`
//! may install a unit that runs anything as root at boot; a declared program
//! may do more than its name suggests. Capabilities make a plugin's reach
//! visible and bounded to what its author declared and the operator saw;
//! they do not make a malicious declaration harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;
use crate::step::Step;

/// What a plugin declares it needs, in its bundle manifest's
/// `[capabilities]` table. Every list is empty by default: a plugin that
/// declares nothing may emit no step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Packages it installs or removes: names, or a prefix ending in `*`
    /// (`python3-*`).
    pub packages: Vec<String>,
    /// Paths it writes: an absolute file path, or a directory prefix ending
    /// in `/` (`/etc/docker/`).
    pub files: Vec<String>,
    /// Units it enables: names, or a prefix ending in `*`.
    pub units: Vec<String>,
    /// Units it disables or masks (names or prefixes, as `units`): declared
    /// apart, because stopping a security unit is a privilege and starting
    /// one is not.
    pub disables: Vec<String>,
    /// Groups it creates or adds users to.
    pub groups: Vec<String>,
    /// Accounts it creates or changes: names, or `*` for any (a feature that
    /// adds the recipe's own users to a group).
    pub users: Vec<String>,
    /// Kernel parameters it sets: keys, or a prefix ending in `*` (`net.ipv4.*`).
    pub sysctls: Vec<String>,
    /// Kernel command-line arguments it adds, by name (the part before `=`).
    pub kernel_args: Vec<String>,
    /// Whether it opens ports in the image's firewall.
    pub ports: bool,
    /// apt sources it adds, by name.
    pub package_sources: Vec<String>,
    /// Programs its `run` steps execute (the command's first word, as the
    /// plugin writes it), each with the package that ships it. The planner
    /// checks that the package is in the base system or installed earlier
    /// in the plan.
    pub run: BTreeMap<String, String>,
    /// Privileges that no declaration above implies but steps need
    /// (world-writable files).
    pub privileges: BTreeSet<Privilege>,
}

/// Power over the whole system that needs the operator's explicit grant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Privilege {
    /// Add package sources or change what apt trusts or runs (`/etc/apt/`).
    PackageSources,
    /// Grant `sudo` rights (`/etc/sudoers.d/`).
    Sudoers,
    /// Change how people authenticate (`/etc/pam.d/`, `/etc/security/`).
    Pam,
    /// Change what the dynamic loader loads into every program
    /// (`/etc/ld.so.preload`, `/etc/ld.so.conf.d/`, `/usr/local/lib/`).
    Loader,
    /// Put programs ahead of the system's on the search path
    /// (`/usr/local/bin/`, `/usr/local/sbin/`).
    SearchPath,
    /// Write into people's home directories (`/home/`).
    HomeDirectories,
    /// Write files anyone may modify.
    WorldWritable,
    /// Kernel arguments that change what the kernel starts or turn its
    /// security off (`init=`, `systemd.unit=`, `apparmor=0`, `lsm=`…).
    KernelBoot,
    /// Kernel parameters that make the kernel run a program
    /// (`kernel.core_pattern`, `kernel.modprobe`, `fs.binfmt_misc.*`…).
    KernelHooks,
    /// Disable or mask the image's security services (AppArmor, auditd,
    /// the firewall, the journal).
    SecurityServices,
    /// Add users to groups that are root in all but name (`sudo`, `shadow`,
    /// `disk`, `docker`…).
    PrivilegedGroups,
    /// Run a shell or an interpreter, which can do anything (`sh -c …`),
    /// or a program with a script that runs commands (sed's `e`, `find
    /// -exec`).
    Interpreter,
    /// Set setuid or setgid bits (`chmod u+s`, `install -m 4755`): a program
    /// that runs as its owner, root's when root owns it.
    Setuid,
}

impl Privilege {
    pub const ALL: [Privilege; 13] = [
        Privilege::PackageSources,
        Privilege::Sudoers,
        Privilege::Pam,
        Privilege::Loader,
        Privilege::SearchPath,
        Privilege::HomeDirectories,
        Privilege::WorldWritable,
        Privilege::KernelBoot,
        Privilege::KernelHooks,
        Privilege::SecurityServices,
        Privilege::PrivilegedGroups,
        Privilege::Interpreter,
        Privilege::Setuid,
    ];

    /// The name used in manifests, grants and messages: `package-sources`.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::PackageSources => "package-sources",
            Privilege::Sudoers => "sudoers",
            Privilege::Pam => "pam",
            Privilege::Loader => "loader",
            Privilege::SearchPath => "search-path",
            Privilege::HomeDirectories => "home-directories",
            Privilege::WorldWritable => "world-writable",
            Privilege::KernelBoot => "kernel-boot",
            Privilege::KernelHooks => "kernel-hooks",
            Privilege::SecurityServices => "security-services",
            Privilege::PrivilegedGroups => "privileged-groups",
            Privilege::Interpreter => "interpreter",
            Privilege::Setuid => "setuid",
        }
    }

    /// What it lets a plugin do, for the operator deciding to grant it.
    pub fn meaning(self) -> &'static str {
        match self {
            Privilege::PackageSources => {
                "add package sources or change what apt trusts and runs (/etc/apt/)"
            }
            Privilege::Sudoers => "grant sudo rights (/etc/sudoers.d/)",
            Privilege::Pam => "change how people authenticate (/etc/pam.d/, /etc/security/)",
            Privilege::Loader => "change what the dynamic loader loads into every program",
            Privilege::SearchPath => "put programs ahead of the system's on the search path",
            Privilege::HomeDirectories => "write into people's home directories",
            Privilege::WorldWritable => "write files anyone may modify",
            Privilege::KernelBoot => {
                "change what the kernel starts at boot or turn its security off"
            }
            Privilege::KernelHooks => "make the kernel run a program (core_pattern, modprobe…)",
            Privilege::SecurityServices => {
                "disable or mask security services (AppArmor, auditd, the firewall, the journal)"
            }
            Privilege::PrivilegedGroups => {
                "add users to groups that are root in all but name (sudo, shadow, disk, docker…)"
            }
            Privilege::Interpreter => "run a shell or an interpreter, which can do anything",
            Privilege::Setuid => {
                "set setuid or setgid bits, so that a program runs as its owner (root's, if root owns it)"
            }
        }
    }

    /// Parse a privilege's name; `Err` lists the names.
    pub fn parse(name: &str) -> Result<Privilege, String> {
        Privilege::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a privilege; privileges are: {}",
                    rules::truncate(name, 64),
                    Privilege::ALL.map(Privilege::name).join(", ")
                )
            })
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Directories whose files carry a privilege.
const PRIVILEGED_PATHS: &[(&str, Privilege)] = &[
    ("/etc/apt/", Privilege::PackageSources),
    ("/etc/sudoers", Privilege::Sudoers),
    ("/etc/sudoers.d/", Privilege::Sudoers),
    ("/etc/pam.d/", Privilege::Pam),
    ("/etc/pam.conf", Privilege::Pam),
    ("/etc/security/", Privilege::Pam),
    ("/etc/ld.so.preload", Privilege::Loader),
    ("/etc/ld.so.conf", Privilege::Loader),
    ("/etc/ld.so.conf.d/", Privilege::Loader),
    ("/usr/local/lib/", Privilege::Loader),
    ("/usr/local/bin/", Privilege::SearchPath),
    ("/usr/local/sbin/", Privilege::SearchPath),
    ("/home/", Privilege::HomeDirectories),
];

/// Kernel arguments (by name) that change what the kernel starts, or turn
/// its security off.
const BOOT_ARGS: &[&str] = &[
    "init",
    "rdinit",
    "systemd.unit",
    "systemd.debug_shell",
    "systemd.debug-shell",
    "rd.break",
    "rd.shell",
    "rd.systemd.unit",
    "single",
    "emergency",
    "rescue",
    "s",
    "S",
    "1",
    "apparmor",
    "selinux",
    "security",
    "lsm",
    "audit",
    "module.sig_enforce",
    "lockdown",
    "enforcing",
];

/// Kernel parameters that make the kernel execute a program.
const HOOK_SYSCTLS: &[&str] = &[
    "kernel.core_pattern",
    "kernel.modprobe",
    "kernel.hotplug",
    "kernel.poweroff_cmd",
    "kernel.usermodehelper.",
    "fs.binfmt_misc.",
];

/// Units that keep an image safe; disabling or masking them is a privilege.
const SECURITY_UNITS: &[&str] = &[
    "apparmor",
    "auditd",
    "nftables",
    "ufw",
    "firewalld",
    "fail2ban",
    "systemd-journald",
    "unattended-upgrades",
];

/// Groups whose members can become root.
pub const PRIVILEGED_GROUPS: &[&str] = &[
    "root",
    "sudo",
    "wheel",
    "admin",
    "adm",
    "shadow",
    "disk",
    "kmem",
    "staff",
    "lxd",
    "docker",
    "libvirt",
    "systemd-journal",
];

/// Shells and interpreters: a `run` of one can do anything.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "env", "perl", "python",
    "python3", "ruby", "node", "nodejs", "lua", "tclsh", "awk", "gawk", "mawk", "xargs", "su",
    "sudo", "chroot", "nsenter", "script", "setsid", "nohup", "timeout", "nice", "ionice",
    "stdbuf", "unshare", "flock", "watch", "php", "expect",
];

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

fn is_interpreter(program: &str) -> bool {
    let name = basename(program);
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&name) || INTERPRETERS.contains(&stem)
}

fn kernel_arg_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

/// Does `declared` (a path, or a prefix ending in `/`) cover `path`?
fn path_covers(declared: &str, path: &str) -> bool {
    declared == path || (declared.ends_with('/') && path.starts_with(declared))
}

/// Does `declared` (a name, or a prefix ending in `*`) cover `name`?
fn name_covers(declared: &str, name: &str) -> bool {
    match declared.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => declared == name,
    }
}

/// Privileges a write to `path` with `mode` needs.
fn path_privileges(path: &str, mode: u32, out: &mut BTreeSet<Privilege>) {
    for &(prefix, privilege) in PRIVILEGED_PATHS {
        if path_covers(prefix, path) || path == prefix.trim_end_matches('/') {
            out.insert(privilege);
        }
    }
    if mode & 0o002 != 0 {
        out.insert(Privilege::WorldWritable);
    }
}

/// The image paths a `run` step names in its arguments (`/etc/x`, or the
/// value of `--opt=/etc/x`). Each counts as a path the step writes: the
/// planner cannot know what a program does with a path, so it assumes the
/// worst (`sed -i … /etc/sudoers` needs what writing sudoers needs). A path
/// inside a program's own script (sed's `w /etc/x`) is not seen: a program
/// that takes a script is declared, and shown to the operator, as such.
pub(crate) fn run_paths(argv: &[String]) -> Vec<&str> {
    let scripts = sed_scripts(argv);
    argv.iter()
        .enumerate()
        .skip(1)
        .filter(|(i, _)| !scripts.contains(i))
        .filter_map(|(_, a)| {
            let value = match a.split_once('=') {
                Some((option, value)) if option.starts_with('-') => value,
                _ => a.as_str(),
            };
            value.starts_with('/').then_some(value)
        })
        .collect()
}

/// Programs that add users to groups (`usermod -aG sudo bob`).
const USER_TOOLS: &[&str] = &["usermod", "useradd", "gpasswd", "adduser", "groupmems"];

/// Whether an argument of a user tool names a privileged group (alone, in a
/// comma-separated list, or as an option's value: `--groups=adm,sudo`).
fn names_privileged_group(args: &[String]) -> bool {
    args.iter()
        .flat_map(|a| a.split([',', '=']))
        .any(|g| PRIVILEGED_GROUPS.contains(&g))
}

/// Whether an argument of `chmod` or `install` is a mode with setuid or
/// setgid bits: octal (`4755`, `-m2755`, `--mode=6755`) or symbolic (`u+s`,
/// `g=rxs`).
fn sets_special_bits(arg: &str) -> bool {
    let mode = arg
        .strip_prefix("--mode=")
        .or_else(|| arg.strip_prefix("-m").filter(|m| !m.is_empty()))
        .unwrap_or(arg);
    if !mode.is_empty() && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u32::from_str_radix(mode, 8).is_ok_and(|m| m & 0o6000 != 0);
    }
    mode.bytes().all(|b| b"ugoa+-=rwxXst,".contains(&b))
        && mode.split(',').any(|clause| {
            clause
                .find(['+', '='])
                .is_some_and(|at| clause[at..].contains('s'))
        })
}

/// Whether a `sed` command line can only edit text: every script is one
/// command that deletes, prints, adds text or substitutes (without the `e`
/// flag, which runs the pattern space as a command, or `w`, which writes a
/// file), or sed runs with `--sandbox`. Anything else (a script file, `e`,
/// `w`, several commands, blocks) may run commands or write anywhere.
fn sed_is_tame(argv: &[String]) -> bool {
    if argv.iter().any(|a| a == "--sandbox") {
        return true;
    }
    if argv
        .iter()
        .any(|a| matches!(a.as_str(), "-f" | "--file") || a.starts_with("--file="))
    {
        return false;
    }
    sed_scripts(argv).into_iter().all(|i| {
        let script = argv
            .get(i)
            .map_or("", |a| a.strip_prefix("--expression=").unwrap_or(a));
        sed_command_is_tame(script)
    })
}

/// One sed command: `[address[,address]][!]` then `d`, `p`, `=`, `a`/`i`/`c`
/// TEXT, or `s/RE/REPLACEMENT/FLAGS` with flags among `g`, `i`, `I`, `p`,
/// `m`, `M` and digits.
fn sed_command_is_tame(script: &str) -> bool {
    if script.contains('\n') {
        return false;
    }
    let mut rest = script.trim_start();
    for n in 0..2 {
        rest = match sed_address(rest) {
            Some(after) => after,
            None if n == 0 => rest,
            None => return false,
        };
        match rest.strip_prefix(',') {
            Some(after) if n == 0 => rest = after,
            _ => break,
        }
    }
    let rest = rest.strip_prefix('!').unwrap_or(rest).trim_start();
    let mut chars = rest.chars();
    match chars.next() {
        Some('d' | 'p' | '=') => chars.as_str().trim().is_empty(),
        Some('a' | 'i' | 'c') => true,
        Some('s') => {
            let Some(delimiter) = chars.next().filter(|d| *d != '\\' && *d != '\n') else {
                return false;
            };
            let body = chars.as_str();
            let Some(after_re) = sed_until(body, delimiter) else {
                return false;
            };
            let Some(flags) = sed_until(after_re, delimiter) else {
                return false;
            };
            flags
                .chars()
                .all(|f| matches!(f, 'g' | 'i' | 'I' | 'p' | 'm' | 'M') || f.is_ascii_digit())
        }
        _ => false,
    }
}

/// A sed address at the start of `s` (`/RE/`, `$`, a line number), and what
/// follows it.
fn sed_address(s: &str) -> Option<&str> {
    if let Some(after) = s.strip_prefix('$') {
        return Some(after);
    }
    if let Some(re) = s.strip_prefix('/') {
        let after = sed_until(re, '/')?;
        return Some(after.strip_prefix(['I', 'M']).unwrap_or(after));
    }
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    (digits > 0).then(|| &s[digits..])
}

/// What follows the first `delimiter` in `s` that no backslash escapes.
fn sed_until(s: &str, delimiter: char) -> Option<&str> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == delimiter => return Some(&s[i + c.len_utf8()..]),
            _ => {}
        }
    }
    None
}

/// For `sed`, the positions of its script arguments (`-e SCRIPT`, or the
/// first operand when there is no `-e`): a script's `/regex/` is no path.
fn sed_scripts(argv: &[String]) -> Vec<usize> {
    if argv.first().map(|p| basename(p)) != Some("sed") {
        return Vec::new();
    }
    let mut scripts = Vec::new();
    let mut has_expression = false;
    let mut operands = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        match argv[i].as_str() {
            "-e" | "--expression" => {
                has_expression = true;
                scripts.push(i + 1);
                i += 1;
            }
            // Options that take a value that is not a script.
            "-f" | "--file" | "-l" | "--line-length" => i += 1,
            a if a.starts_with("--expression=") => {
                // `--expression=/re/d`: the whole argument is the script.
                has_expression = true;
                scripts.push(i);
            }
            a if a.starts_with('-') && a.len() > 1 => {}
            _ => operands.push(i),
        }
        i += 1;
    }
    if !has_expression {
        scripts.extend(operands.first());
    }
    scripts
}

fn sysctl_is_hook(key: &str) -> bool {
    let key = key.replace('/', ".");
    HOOK_SYSCTLS
        .iter()
        .any(|h| key == *h || (h.ends_with('.') && key.starts_with(h)))
}

fn unit_is_security(unit: &str) -> bool {
    let stem = unit.rsplit_once('.').map_or(unit, |(s, _)| s);
    SECURITY_UNITS.contains(&stem)
}

/// The privileges one step needs, whoever emits it.
pub fn step_privileges(step: &Step) -> BTreeSet<Privilege> {
    let mut out = BTreeSet::new();
    match step {
        Step::WriteFile(f) => path_privileges(&f.path, f.mode, &mut out),
        Step::AddAptSource(_) => {
            out.insert(Privilege::PackageSources);
        }
        Step::AddKernelArg { arg } if BOOT_ARGS.contains(&kernel_arg_name(arg)) => {
            out.insert(Privilege::KernelBoot);
        }
        Step::SetSysctl { key, .. } if sysctl_is_hook(key) => {
            out.insert(Privilege::KernelHooks);
        }
        Step::DisableService { unit } | Step::MaskService { unit } if unit_is_security(unit) => {
            out.insert(Privilege::SecurityServices);
        }
        Step::AddUser(u)
            if u.groups
                .iter()
                .any(|g| PRIVILEGED_GROUPS.contains(&g.as_str())) =>
        {
            out.insert(Privilege::PrivilegedGroups);
        }
        Step::Run { argv, .. } => {
            if let Some(program) = argv.first() {
                let name = basename(program);
                let runs_commands = match name {
                    "find" => argv
                        .iter()
                        .any(|a| matches!(a.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir")),
                    "sed" => !sed_is_tame(argv),
                    _ => false,
                };
                if is_interpreter(program) || runs_commands {
                    out.insert(Privilege::Interpreter);
                }
                if name == "pam-auth-update" {
                    out.insert(Privilege::Pam);
                }
                if matches!(name, "chmod" | "install")
                    && argv[1..].iter().any(|a| sets_special_bits(a))
                {
                    out.insert(Privilege::Setuid);
                }
                if USER_TOOLS.contains(&name) && names_privileged_group(&argv[1..]) {
                    out.insert(Privilege::PrivilegedGroups);
                }
            }
            for path in run_paths(argv) {
                path_privileges(path, 0o644, &mut out);
            }
        }
        _ => {}
    }
    out
}

/// A step outside what a plugin may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its declaration does not cover the step: `what` is the capability
    /// (`files`), `item` what the step touches (`/etc/hosts`).
    Undeclared { what: &'static str, item: String },
    /// The step needs a privilege the operator has not granted.
    NotGranted(Privilege),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Undeclared { what, item } => write!(
                f,
                "touches `{}`, which its bundle's capabilities do not declare (`{what}`)",
                rules::truncate(item, 200)
            ),
            Refusal::NotGranted(p) => write!(
                f,
                "needs the privilege `{p}` ({}), which the operator has not granted",
                p.meaning()
            ),
        }
    }
}

impl Capabilities {
    /// Every privilege the declaration implies, with those it names.
    pub fn privileges(&self) -> BTreeSet<Privilege> {
        let mut out = self.privileges.clone();
        for path in &self.files {
            // A prefix reaches everything below it: `/etc/` implies sudoers.
            for &(prefix, privilege) in PRIVILEGED_PATHS {
                if path_covers(prefix, path) || path_covers(path, prefix) {
                    out.insert(privilege);
                }
            }
        }
        if !self.package_sources.is_empty() {
            out.insert(Privilege::PackageSources);
        }
        if self
            .kernel_args
            .iter()
            .any(|a| BOOT_ARGS.contains(&a.as_str()))
        {
            out.insert(Privilege::KernelBoot);
        }
        if self.sysctls.iter().any(|k| {
            sysctl_is_hook(k.trim_end_matches('*'))
                || HOOK_SYSCTLS
                    .iter()
                    .any(|h| h.starts_with(k.trim_end_matches('*')))
        }) {
            out.insert(Privilege::KernelHooks);
        }
        if self.disables.iter().any(|u| {
            unit_is_security(u)
                || SECURITY_UNITS
                    .iter()
                    .any(|s| name_covers(u, &format!("{s}.service")))
        }) {
            out.insert(Privilege::SecurityServices);
        }
        if self
            .groups
            .iter()
            .any(|g| PRIVILEGED_GROUPS.contains(&g.as_str()))
        {
            out.insert(Privilege::PrivilegedGroups);
        }
        for program in self.run.keys() {
            if is_interpreter(program) {
                out.insert(Privilege::Interpreter);
            }
            if basename(program) == "pam-auth-update" {
                out.insert(Privilege::Pam);
            }
        }
        out
    }

    /// Problems with the declaration itself, as `(field, reason)`.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut rule = |field: String, result: Result<(), String>| {
            if let Err(reason) = result {
                problems.push((field, reason));
            }
        };
        let pattern = |s: &str, inner: fn(&str) -> Result<(), String>| match s.strip_suffix('*') {
            Some("") => Err("is only `*`; name what it touches".to_owned()),
            Some(prefix) => inner(prefix).or_else(|e| {
                // A prefix may end where a name may not (`python3-`).
                if prefix.ends_with(['-', '.', '@']) {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
            None => inner(s),
        };
        for (i, p) in self.packages.iter().enumerate() {
            rule(format!("packages[{i}]"), pattern(p, rules::package_name));
        }
        for (i, path) in self.files.iter().enumerate() {
            let file = path.strip_suffix('/').unwrap_or(path);
            rule(
                format!("files[{i}]"),
                if path.ends_with('/') && rules::ALLOWED_PATH_PREFIXES.contains(&path.as_str()) {
                    Ok(())
                } else {
                    rules::image_path(file)
                },
            );
        }
        for (field, units) in [("units", &self.units), ("disables", &self.disables)] {
            for (i, u) in units.iter().enumerate() {
                rule(format!("{field}[{i}]"), pattern(u, rules::unit_name));
            }
        }
        for (i, g) in self.groups.iter().enumerate() {
            rule(format!("groups[{i}]"), rules::account_name(g));
        }
        for (i, u) in self.users.iter().enumerate() {
            if u != "*" {
                rule(format!("users[{i}]"), rules::account_name(u));
            }
        }
        for (i, k) in self.sysctls.iter().enumerate() {
            rule(format!("sysctls[{i}]"), pattern(k, rules::sysctl_key));
        }
        for (i, a) in self.kernel_args.iter().enumerate() {
            rule(
                format!("kernel_args[{i}]"),
                rules::kernel_arg(a).and_then(|()| {
                    if a.contains('=') {
                        Err("names an argument; leave out `=` and its value".into())
                    } else {
                        Ok(())
                    }
                }),
            );
        }
        for (i, s) in self.package_sources.iter().enumerate() {
            rule(format!("package_sources[{i}]"), rules::slug(s));
        }
        for (program, package) in &self.run {
            let at = format!("run.{}", rules::truncate(program, 64));
            rule(
                at.clone(),
                rules::command_argv(std::slice::from_ref(program)),
            );
            rule(at, rules::package_name(package));
        }
        problems
    }

    /// Whether the declaration covers `step` and every privilege it needs
    /// is in `granted`. Returns every refusal.
    pub fn permits(&self, granted: &BTreeSet<Privilege>, step: &Step) -> Vec<Refusal> {
        let mut out = Vec::new();
        let mut need = |what: &'static str, item: &str, ok: bool| {
            if !ok {
                out.push(Refusal::Undeclared {
                    what,
                    item: item.to_owned(),
                });
            }
        };
        let any = |list: &[String], name: &str| list.iter().any(|d| name_covers(d, name));
        match step {
            Step::InstallPackages { packages } | Step::RemovePackages { packages } => {
                for p in packages {
                    need("packages", p, any(&self.packages, p));
                }
            }
            Step::WriteFile(f) => need(
                "files",
                &f.path,
                self.files.iter().any(|d| path_covers(d, &f.path)),
            ),
            Step::EnableService { unit } => need("units", unit, any(&self.units, unit)),
            Step::DisableService { unit } | Step::MaskService { unit } => {
                need("disables", unit, any(&self.disables, unit))
            }
            Step::AddGroup { name, .. } => need("groups", name, self.groups.contains(name)),
            Step::AddUser(u) => {
                need(
                    "users",
                    &u.name,
                    self.users.iter().any(|d| d == "*" || d == &u.name),
                );
                for g in &u.groups {
                    need("groups", g, self.groups.contains(g));
                }
            }
            Step::SetSysctl { key, .. } => need("sysctls", key, any(&self.sysctls, key)),
            Step::OpenPort { port, .. } => need("ports", &port.to_string(), self.ports),
            Step::AddKernelArg { arg } => {
                let name = kernel_arg_name(arg);
                need(
                    "kernel_args",
                    name,
                    self.kernel_args.iter().any(|a| a == name),
                );
            }
            Step::AddAptSource(s) => need(
                "package_sources",
                &s.name,
                self.package_sources.contains(&s.name),
            ),
            Step::Run { argv, .. } => {
                let program = argv.first().map(String::as_str).unwrap_or_default();
                need("run", program, self.run.contains_key(program));
                for path in run_paths(argv) {
                    need(
                        "files",
                        path,
                        self.files.iter().any(|d| path_covers(d, path)),
                    );
                }
            }
        }
        for privilege in step_privileges(step) {
            if !granted.contains(&privilege) {
                out.push(Refusal::NotGranted(privilege));
            }
        }
        out
    }

    /// The declaration as lines for people: `packages: docker.io, containerd`.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut list = |name: &'static str, items: &[String]| {
            if !items.is_empty() {
                out.push((name, items.join(", ")));
            }
        };
        list("packages", &self.packages);
        list("files", &self.files);
        list("units", &self.units);
        list("units disabled or masked", &self.disables);
        list("groups", &self.groups);
        list("users", &self.users);
        list("sysctls", &self.sysctls);
        list("kernel arguments", &self.kernel_args);
        list("package sources", &self.package_sources);
        let run: Vec<String> = self
            .run
            .iter()
            .map(|(program, package)| format!("{program} (from {package})"))
            .collect();
        list("runs", &run);
        if self.ports {
            out.push(("ports", "opens firewall ports".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{AptSource, FileStep, UserStep};

    fn file(path: &str, mode: u32) -> Step {
        Step::WriteFile(FileStep {
            path: path.into(),
            mode,
            owner: "root".into(),
            group: "root".into(),
            content: String::new(),
        })
    }

    fn run(argv: &[&str]) -> Step {
        Step::Run {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            description: String::new(),
        }
    }

    #[test]
    fn sed_that_can_run_commands_or_write_files_is_an_interpreter() {
        let interpreter =
            |argv: &[&str]| step_privileges(&run(argv)).contains(&Privilege::Interpreter);
        // What the first-party plugins run: text edits only.
        for tame in [
            &[
                "sed",
                "-i",
                "-E",
                "-e",
                "s/^#?[[:space:]]*num_logs[[:space:]]*=.*/num_logs = 5/",
                "/etc/audit/auditd.conf",
            ][..],
            &[
                "sed",
                "-i",
                "-E",
                "-e",
                "/^#?PASS_MAX_DAYS([[:space:]]|$)/d",
                "-e",
                "$a PASS_MAX_DAYS\t90",
                "/etc/login.defs",
            ],
            &["sed", "-i", "s|a\\|b|c|g2", "/etc/x"],
            &["sed", "-i", "1,/^end/!d", "/etc/x"],
            &["sed", "-n", "--expression=/re/Ip", "/etc/x"],
            &["sed", "--sandbox", "-e", "1e id", "/etc/x"],
        ] {
            assert!(!interpreter(tame), "{tame:?}");
        }
        for wild in [
            &["sed", "-i", "-e", "1e id", "/etc/x"][..],
            &["sed", "-i", "s/x/id/e", "/etc/x"],
            &["sed", "-i", "s/x/y/w /etc/sudoers.d/x", "/etc/x"],
            &["sed", "-i", "1w /etc/sudoers.d/x", "/etc/x"],
            &["sed", "-i", "s/a/b/;1e id", "/etc/x"],
            &["sed", "-i", "s/a/b/\n1e id", "/etc/x"],
            &["sed", "-i", "{e id\n}", "/etc/x"],
            &["sed", "-f", "/tmp/script", "/etc/x"],
            &["sed", "--file=/tmp/script", "/etc/x"],
            &["sed", "-i", "s/[/]/x/e", "/etc/x"],
            &["sed", "-i", "s/unterminated", "/etc/x"],
        ] {
            assert!(interpreter(wild), "{wild:?}");
        }
    }

    #[test]
    fn setuid_bits_through_chmod_or_install_need_the_setuid_privilege() {
        let setuid = |argv: &[&str]| step_privileges(&run(argv)).contains(&Privilege::Setuid);
        for argv in [
            &["chmod", "4755", "/opt/x"][..],
            &["chmod", "02755", "/opt/x"],
            &["chmod", "u+s", "/opt/x"],
            &["chmod", "go-w,g=rxs", "/opt/x"],
            &["chmod", "-R", "+s", "/opt/x"],
            &["install", "-m", "6755", "/tmp/a", "/opt/x"],
            &["install", "-m4755", "/tmp/a", "/opt/x"],
            &["install", "--mode=u+rwxs", "/tmp/a", "/opt/x"],
        ] {
            assert!(setuid(argv), "{argv:?}");
        }
        for argv in [
            &["chmod", "0755", "/opt/x"][..],
            &["chmod", "u-s", "/opt/x"],
            &["chmod", "a+rx", "/opt/sbin"],
            &["install", "-m", "0644", "/tmp/a", "/opt/x"],
            &["install", "-d", "/opt/s"],
        ] {
            assert!(!setuid(argv), "{argv:?}");
        }
    }

    #[test]
    fn adding_users_to_privileged_groups_through_user_tools_needs_the_privilege() {
        let privileged =
            |argv: &[&str]| step_privileges(&run(argv)).contains(&Privilege::PrivilegedGroups);
        for argv in [
            &["usermod", "-aG", "sudo", "bob"][..],
            &["usermod", "--groups=adm,disk", "bob"],
            &["gpasswd", "-a", "bob", "shadow"],
            &["adduser", "bob", "docker"],
            &["useradd", "-G", "users,sudo", "eve"],
        ] {
            assert!(privileged(argv), "{argv:?}");
        }
        assert!(!privileged(&["usermod", "-aG", "users,audio", "bob"]));
    }

    fn generous() -> Capabilities {
        Capabilities {
            packages: vec!["*x".into(), "python3-*".into(), "sudo".into()],
            files: vec!["/etc/".into(), "/usr/local/".into(), "/home/".into()],
            units: vec!["*".into()],
            disables: vec!["*".into()],
            groups: PRIVILEGED_GROUPS.iter().map(|g| g.to_string()).collect(),
            users: vec!["*".into()],
            sysctls: vec!["kernel.*".into()],
            kernel_args: vec!["init".into(), "quiet".into()],
            ports: true,
            package_sources: vec!["evil".into()],
            run: [
                ("sh", "dash"),
                ("find", "findutils"),
                ("sed", "sed"),
                ("cp", "coreutils"),
                ("pam-auth-update", "libpam-runtime"),
                ("/usr/bin/python3.11", "python3.11"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            privileges: BTreeSet::from([Privilege::WorldWritable]),
        }
    }

    /// The attacks a hostile plugin tried when steps were only syntax-checked:
    /// each needs a privilege, so a plugin that declares everything but was
    /// granted nothing is refused every one of them.
    #[test]
    fn every_known_takeover_needs_a_privilege() {
        let attacks: Vec<(Step, Privilege)> = vec![
            (file("/etc/sudoers.d/planted", 0o440), Privilege::Sudoers),
            (
                file("/etc/apt/apt.conf.d/00hook", 0o644),
                Privilege::PackageSources,
            ),
            (
                file("/etc/apt/sources.list.d/x.list", 0o644),
                Privilege::PackageSources,
            ),
            (
                Step::AddAptSource(AptSource {
                    name: "evil".into(),
                    uris: vec!["http://x/".into()],
                    suites: vec!["a".into()],
                    components: vec!["b".into()],
                    signed_by: String::new(),
                }),
                Privilege::PackageSources,
            ),
            (file("/etc/ld.so.preload", 0o644), Privilege::Loader),
            (file("/etc/pam.d/common-auth", 0o644), Privilege::Pam),
            (file("/etc/profile.d/x.sh", 0o666), Privilege::WorldWritable),
            (file("/usr/local/bin/sudo", 0o755), Privilege::SearchPath),
            (
                file("/home/alice/.ssh/authorized_keys", 0o600),
                Privilege::HomeDirectories,
            ),
            (
                Step::AddKernelArg {
                    arg: "init=/bin/sh".into(),
                },
                Privilege::KernelBoot,
            ),
            (
                Step::SetSysctl {
                    key: "kernel.core_pattern".into(),
                    value: "|/tmp/x".into(),
                },
                Privilege::KernelHooks,
            ),
            (
                Step::MaskService {
                    unit: "apparmor.service".into(),
                },
                Privilege::SecurityServices,
            ),
            (
                Step::AddUser(UserStep {
                    name: "alice".into(),
                    groups: vec!["shadow".into()],
                    shell: None,
                    system: false,
                    password_hash: None,
                }),
                Privilege::PrivilegedGroups,
            ),
            (run(&["sh", "-c", "id"]), Privilege::Interpreter),
            (
                run(&["find", ".", "-exec", "id", ";"]),
                Privilege::Interpreter,
            ),
            (
                run(&["/usr/bin/python3.11", "-c", "x"]),
                Privilege::Interpreter,
            ),
            (run(&["pam-auth-update", "--enable", "x"]), Privilege::Pam),
            // A program given a path writes it, as far as the planner knows.
            (
                run(&[
                    "sed",
                    "-i",
                    "$a mallory ALL=(ALL) NOPASSWD: ALL",
                    "/etc/sudoers",
                ]),
                Privilege::Sudoers,
            ),
            (
                run(&["cp", "--target-directory=/etc/pam.d", "x"]),
                Privilege::Pam,
            ),
        ];
        let caps = generous();
        for (step, privilege) in attacks {
            let refusals = caps.permits(&BTreeSet::new(), &step);
            assert_eq!(refusals, vec![Refusal::NotGranted(privilege)], "{step:?}");
            assert!(
                caps.privileges().contains(&privilege),
                "the declaration must show {privilege} to the operator"
            );
            let granted = BTreeSet::from([privilege]);
            assert!(caps.permits(&granted, &step).is_empty(), "{step:?}");
        }
    }

    #[test]
    fn a_step_outside_the_declaration_is_refused_by_name() {
        let caps = Capabilities {
            packages: vec!["nginx".into()],
            files: vec!["/etc/nginx/".into()],
            units: vec!["nginx.service".into()],
            ..Default::default()
        };
        let none = BTreeSet::new();
        assert!(
            caps.permits(&none, &file("/etc/nginx/sites/x", 0o644))
                .is_empty()
        );
        assert_eq!(
            caps.permits(&none, &file("/etc/hosts", 0o644)),
            vec![Refusal::Undeclared {
                what: "files",
                item: "/etc/hosts".into()
            }]
        );
        // `/etc/nginx` (no slash) is a file, not the directory's contents.
        let exact = Capabilities {
            files: vec!["/etc/nginx".into()],
            ..Default::default()
        };
        assert!(
            !exact
                .permits(&none, &file("/etc/nginx/x", 0o644))
                .is_empty()
        );
        let step = Step::InstallPackages {
            packages: vec!["nginx".into(), "netcat".into()],
        };
        assert_eq!(caps.permits(&none, &step).len(), 1);
        // The paths a `run` names are paths it writes: declared, or refused.
        let sed = Capabilities {
            files: vec!["/etc/login.defs".into()],
            run: BTreeMap::from([("sed".to_string(), "sed".to_string())]),
            ..Default::default()
        };
        assert!(
            sed.permits(&none, &run(&["sed", "-i", "s/a/b/", "/etc/login.defs"]))
                .is_empty()
        );
        // A script's `/regex/` address is not a path; the file operands are.
        for argv in [
            &[
                "sed",
                "-i",
                "-E",
                "-e",
                "/^#?UMASK/d",
                "-e",
                "$a UMASK 027",
                "/etc/login.defs",
            ][..],
            &["sed", "-i", "/^#?UMASK/d", "/etc/login.defs"],
            &["sed", "-i", "--expression=/^x/d", "/etc/login.defs"],
        ] {
            assert!(sed.permits(&none, &run(argv)).is_empty(), "{argv:?}");
        }
        assert_eq!(
            sed.permits(
                &none,
                &run(&["sed", "-i", "-e", "/x/d", "/etc/login.defs", "/etc/shadow"])
            )
            .len(),
            1
        );
        assert_eq!(
            sed.permits(&none, &run(&["sed", "-i", "s/a/b/", "/etc/hosts"])),
            vec![Refusal::Undeclared {
                what: "files",
                item: "/etc/hosts".into()
            }]
        );
        let message = caps.permits(&none, &run(&["id"]))[0].to_string();
        assert!(
            message.contains("`id`") && message.contains("`run`"),
            "{message}"
        );
        assert!(
            Capabilities::default()
                .permits(
                    &none,
                    &Step::OpenPort {
                        port: 80,
                        protocol: crate::recipe::Protocol::Tcp
                    }
                )
                .len()
                == 1
        );
    }

    #[test]
    fn declarations_show_the_privileges_they_reach() {
        let broad = Capabilities {
            files: vec!["/etc/".into()],
            ..Default::default()
        };
        let shown = broad.privileges();
        for p in [
            Privilege::PackageSources,
            Privilege::Sudoers,
            Privilege::Pam,
            Privilege::Loader,
        ] {
            assert!(shown.contains(&p), "{p}");
        }
        let narrow = Capabilities {
            files: vec!["/etc/nginx/".into(), "/etc/motd".into()],
            units: vec!["nginx.service".into()],
            groups: vec!["www-data".into()],
            sysctls: vec!["net.core.somaxconn".into()],
            ..Default::default()
        };
        assert!(narrow.privileges().is_empty());
        // Starting a security unit is no privilege; stopping one is.
        let starts = Capabilities {
            units: vec!["apparmor*".into(), "nftables.service".into()],
            ..Default::default()
        };
        assert!(starts.privileges().is_empty());
        let masks = Capabilities {
            disables: vec!["apparmor*".into()],
            sysctls: vec!["kernel.*".into()],
            ..Default::default()
        };
        assert_eq!(
            masks.privileges(),
            BTreeSet::from([Privilege::KernelHooks, Privilege::SecurityServices])
        );
    }

    #[test]
    fn bad_declarations_name_the_field() {
        let caps = Capabilities {
            packages: vec!["*".into(), "Bad Name".into(), "python3-*".into()],
            files: vec!["etc/x".into(), "/etc/".into(), "/etc/ok/".into()],
            kernel_args: vec!["init=/bin/sh".into()],
            run: BTreeMap::from([("aideinit".into(), "aide-common".into())]),
            ..Default::default()
        };
        let fields: Vec<String> = caps.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["packages[0]", "packages[1]", "files[0]", "kernel_args[0]"]
        );
        assert_eq!(Privilege::parse("sudoers"), Ok(Privilege::Sudoers));
        assert!(
            Privilege::parse("root")
                .unwrap_err()
                .contains("interpreter")
        );
    }

    #[test]
    fn manifests_read_as_toml() {
        let caps: Capabilities = toml::from_str(
            r#"
            packages = ["aide", "aide-common"]
            files = ["/etc/aide/"]
            ports = true
            [run]
            aideinit = "aide-common"
            "#,
        )
        .unwrap();
        assert_eq!(caps.run["aideinit"], "aide-common");
        assert!(toml::from_str::<Capabilities>("packagez = []").is_err());
    }
}
