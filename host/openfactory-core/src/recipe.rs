//! The recipe model: what an image is made of.
//!
//! One serde model serves TOML files in `recipes/` and JSON over MCP. Every
//! struct denies unknown fields. Parsing and validation live in
//! [`crate::validate`]; this module only says what a recipe *is*.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A recipe: the complete description of a bootable image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Recipe name: lowercase letters, digits and `-` (e.g. `web-server`).
    pub name: String,
    /// What the image is for, in a sentence or two.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub description: String,
    /// Search tags, lowercase (e.g. `["docker", "monitoring"]`).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub tags: Vec<String>,
    /// Base image: `debian-bookworm` (Debian 12) or `debian-trixie` (Debian 13).
    pub base_image: String,
    /// CPU architecture. Only `amd64` is built today.
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Host name of the booted system; defaults to the recipe name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// System locale, e.g. `en_US.UTF-8`.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Time zone from the tz database, e.g. `Europe/Paris`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Features to enable, in order, each a plugin name with optional options:
    /// `"ssh"` or `{ "name": "docker", "options": { "compose": true } }`.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub features: Vec<FeatureRef>,
    /// Extra Debian packages to install (package names only).
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub packages: Vec<String>,
    /// systemd units to enable at boot (e.g. `nginx.service`).
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub services: Vec<String>,
    /// User accounts to create.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub users: Vec<User>,
    /// Files to write into the image.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub files: Vec<File>,
    /// Extra kernel command-line arguments, one per entry.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub kernel_args: Vec<String>,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub security: Security,
    /// Put the QEMU guest agent (and dbus, so ACPI power-down works) in the
    /// image, so that `run_tests` can run checks inside it. On by default;
    /// `false` gives an image without them, whose tests cannot run.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub guest_agent: bool,
    /// Checks of the booted image beyond those its features declare: what the
    /// recipe promises (`{ name = "postgres-tls", command_succeeds = [...] }`,
    /// `{ name = "dicom", port_open = 4242 }`). Test runs run them with the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub checks: Vec<Check>,
}

/// One of a recipe's own checks: a name and exactly one kind, as run_tests'
/// `tests` takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Lowercase letters, digits and `-`; plans and results name it `recipe/NAME`.
    pub name: String,
    /// What it proves, in a sentence.
    #[serde(default)]
    pub description: String,
    /// How long it may retry until it passes, in seconds (default 120, at most 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// A systemd unit that must be active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_active: Option<String>,
    /// A command (argv) that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_succeeds: Option<Vec<String>>,
    /// A TCP port something must listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_open: Option<u16>,
    /// An absolute path that must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_exists: Option<String>,
    /// A Debian package that must be installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_installed: Option<String>,
    /// A URL that a GET inside the guest must answer with 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<String>,
}

/// Longest a recipe's check may retry.
pub const MAX_CHECK_SECONDS: u32 = 600;

impl Check {
    /// The kinds this check names, as `(field, kind)`; a valid check has exactly one.
    pub fn kinds(&self) -> Vec<(&'static str, crate::step::CheckKind)> {
        use crate::step::CheckKind;
        let mut out = Vec::new();
        if let Some(unit) = &self.unit_active {
            out.push(("unit_active", CheckKind::UnitActive { unit: unit.clone() }));
        }
        if let Some(argv) = &self.command_succeeds {
            out.push((
                "command_succeeds",
                CheckKind::CommandSucceeds { argv: argv.clone() },
            ));
        }
        if let Some(port) = self.port_open {
            out.push((
                "port_open",
                CheckKind::PortOpen {
                    port,
                    protocol: Protocol::Tcp,
                },
            ));
        }
        if let Some(path) = &self.file_exists {
            out.push(("file_exists", CheckKind::FileExists { path: path.clone() }));
        }
        if let Some(package) = &self.package_installed {
            out.push((
                "package_installed",
                CheckKind::PackageInstalled {
                    package: package.clone(),
                },
            ));
        }
        if let Some(url) = &self.http_get {
            out.push(("http_get", CheckKind::HttpGet { url: url.clone() }));
        }
        out
    }
}

pub(crate) fn default_true() -> bool {
    true
}
fn is_true(value: &bool) -> bool {
    *value
}

pub(crate) fn default_architecture() -> String {
    "amd64".into()
}
pub(crate) fn default_locale() -> String {
    "en_US.UTF-8".into()
}
pub(crate) fn default_timezone() -> String {
    "UTC".into()
}

impl Recipe {
    /// The host name the image boots with.
    pub fn effective_hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureRef> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// A feature in a recipe. In files, a bare string `"ssh"` is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureRef {
    /// Feature (plugin) name, e.g. `docker`.
    pub name: String,
    /// The feature's options, checked against its schema (see `list_features`).
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
}

impl FeatureRef {
    pub fn new(name: &str) -> Self {
        FeatureRef {
            name: name.into(),
            options: BTreeMap::new(),
        }
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// Supplementary groups (created if missing).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub groups: Vec<String>,
    /// Whether the user may use `sudo`.
    #[serde(default)]
    pub sudo: bool,
    /// Login shell, e.g. `/bin/bash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// OpenSSH public keys allowed to log in as this user.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt(3) hash (`mkpasswd -m yescrypt`), never a clear-text password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// A file written into the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Absolute path under /etc/, /usr/local/, /opt/, /srv/, /var/lib/ or /home/.
    pub path: String,
    /// File content (text).
    #[schemars(length(max = 1048576))]
    pub content: String,
    /// Octal permission bits as a string, e.g. `"0644"`.
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
}

fn default_mode() -> String {
    "0644".into()
}
fn root() -> String {
    "root".into()
}

/// Network configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Networking {
    /// Configure wired interfaces with DHCP (systemd-networkd).
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// Static DNS servers (IP addresses); empty means those DHCP gives.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub nameservers: Vec<String>,
    /// Inbound ports the firewall allows, besides those features open.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub allowed_ports: Vec<AllowedPort>,
}

impl Default for Networking {
    fn default() -> Self {
        Networking {
            dhcp: true,
            nameservers: Vec::new(),
            allowed_ports: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedPort {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Security posture shared by features (ssh, hardening, gxp read it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Allow root to log in over SSH (with a key). Off by default.
    #[serde(default)]
    pub root_login: bool,
    /// Allow SSH logins with passwords. Off by default: keys only.
    #[serde(default)]
    pub password_authentication: bool,
}

/// The base images OpenFactory builds from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BaseImage {
    DebianBookworm,
    DebianTrixie,
}

impl BaseImage {
    pub const ALL: [BaseImage; 2] = [BaseImage::DebianBookworm, BaseImage::DebianTrixie];

    pub fn name(self) -> &'static str {
        match self {
            BaseImage::DebianBookworm => "debian-bookworm",
            BaseImage::DebianTrixie => "debian-trixie",
        }
    }

    /// The Debian suite to bootstrap.
    pub fn suite(self) -> &'static str {
        match self {
            BaseImage::DebianBookworm => "bookworm",
            BaseImage::DebianTrixie => "trixie",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            BaseImage::DebianBookworm => "Debian 12 (bookworm)",
            BaseImage::DebianTrixie => "Debian 13 (trixie)",
        }
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().map(BaseImage::name)
    }
}

impl FromStr for BaseImage {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|b| b.name() == s).ok_or(())
    }
}

impl fmt::Display for BaseImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Architectures OpenFactory builds for.
pub const ARCHITECTURES: &[&str] = &["amd64"];
