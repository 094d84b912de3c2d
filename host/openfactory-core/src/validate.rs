//! Parse and check a recipe on its own, before any plugin sees it.
//!
//! Three passes, each reporting every problem it finds:
//! 1. syntax (TOML or JSON) and size;
//! 2. structure, against the JSON Schema derived from [`Recipe`] (unknown
//!    fields, wrong types, missing fields);
//! 3. rules on each field's content (package names, paths, users…).
//!
//! A field that fails pass 2 is left out of pass 3, so one mistake is not
//! reported twice. Feature-dependent checks (unknown features, options,
//! conflicts, the plugins' own validation) happen in [`crate::plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diagnostics, Path, did_you_mean};
use crate::recipe::{ARCHITECTURES, BaseImage, Recipe};
use crate::rules;
use crate::schema::Schema;

/// Largest recipe document accepted, in bytes.
pub const MAX_RECIPE_BYTES: usize = 2 * 1024 * 1024;

/// User names the base system already owns.
const RESERVED_USERS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "messagebus",
    "sshd",
    "_apt",
    "statd",
    "docker",
    "prometheus",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// The format a file name implies (`.json` → JSON, anything else → TOML).
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// The outcome of checking a recipe by itself.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The typed recipe, when its structure was sound (even if rules failed).
    pub recipe: Option<Recipe>,
    pub diagnostics: Diagnostics,
}

/// Parse recipe text and check it by itself.
pub fn check_text(text: &str, format: Format) -> Checked {
    if text.len() > MAX_RECIPE_BYTES {
        return failed(Diagnostic::error(
            "recipe.too-large",
            "",
            format!(
                "the recipe is {} bytes; the limit is {MAX_RECIPE_BYTES}",
                text.len()
            ),
        ));
    }
    let value = match format {
        Format::Json => serde_json::from_str::<Value>(text).map_err(|e| {
            Diagnostic::error("recipe.syntax", "", format!("not valid JSON: {e}"))
                .suggest("check quotes, commas and brackets around that line and column")
        }),
        Format::Toml => toml::from_str::<toml::Table>(text)
            .map_err(|e| {
                let msg = e.message().to_owned();
                let at = e
                    .span()
                    .map(|s| {
                        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default();
                Diagnostic::error("recipe.syntax", "", format!("not valid TOML{at}: {msg}"))
            })
            .and_then(|t| {
                serde_json::to_value(t).map_err(|e| {
                    Diagnostic::error("recipe.syntax", "", format!("unsupported TOML value: {e}"))
                })
            }),
    };
    match value {
        Ok(value) => check_value(value),
        Err(d) => failed(d),
    }
}

/// Check a recipe given as a JSON value (as MCP clients send it).
pub fn check_value(mut value: Value) -> Checked {
    let mut diagnostics = Diagnostics::new();
    if !value.is_object() {
        return failed(Diagnostic::error(
            "recipe.wrong-type",
            "",
            "a recipe must be an object with at least `name` and `base_image`",
        ));
    }
    normalize_features(&mut value);

    let structural = recipe_schema().check(&value, &Path::root(), "recipe");
    // Top-level fields with structural problems are left out of the rules pass.
    let mut broken: BTreeSet<String> = BTreeSet::new();
    for d in &structural {
        let top = d.path.split(['.', '[']).next().unwrap_or("").to_owned();
        broken.insert(top);
    }
    diagnostics.extend(structural);

    let recipe = match lenient(&value, &broken) {
        Some(recipe) => recipe,
        None => {
            return Checked {
                recipe: None,
                diagnostics,
            };
        }
    };
    check_rules(&recipe, &broken, &mut diagnostics);
    Checked {
        recipe: Some(recipe),
        diagnostics,
    }
}

fn failed(d: Diagnostic) -> Checked {
    Checked {
        recipe: None,
        diagnostics: [d].into_iter().collect(),
    }
}

/// The JSON Schema of a recipe, derived from the Rust model.
pub fn recipe_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::schema_for!(Recipe);
        Schema::compile(serde_json::to_value(schema).expect("schema serialises"))
            .expect("the recipe schema compiles")
    })
}

/// A name for a recipe object that has none: its base image and its
/// features, joined with `-` and made a valid slug (`debian-bookworm-docker-ssh`);
/// `None` when the recipe has a `name` (even an invalid one: that is the
/// caller's to fix) or is not an object. At most 64 characters, cut at a `-`.
pub fn suggested_name(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    if !matches!(map.get("name"), None | Some(Value::Null)) {
        return None;
    }
    let base = map.get("base_image").and_then(Value::as_str);
    let features = map
        .get("features")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().or_else(|| f.get("name")?.as_str()));
    let mut name = String::new();
    for word in base.into_iter().chain(features) {
        let word: String = word
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        for part in word.split('-').filter(|p| !p.is_empty()) {
            if name.len() + 1 + part.len() > 64 {
                break;
            }
            if !name.is_empty() {
                name.push('-');
            }
            name.push_str(part);
        }
    }
    Some(if name.is_empty() {
        "build".into()
    } else {
        name
    })
}

/// `features = ["ssh", {name = "docker"}]` → every entry an object.
fn normalize_features(value: &mut Value) {
    if let Some(Value::Array(features)) = value.get_mut("features") {
        for f in features.iter_mut() {
            if let Value::String(name) = f {
                *f = serde_json::json!({ "name": name.clone() });
            }
        }
    }
}

/// Deserialize what is sound: broken top-level fields are replaced by their
/// defaults (required ones by placeholders), so the rules pass can still run
/// on every other field.
fn lenient(value: &Value, broken: &BTreeSet<String>) -> Option<Recipe> {
    let mut value = value.clone();
    let map = value.as_object_mut()?;
    map.retain(|k, _| {
        !broken.contains(k) && recipe_schema().document()["properties"].get(k).is_some()
    });
    for required in ["name", "base_image"] {
        map.entry(required)
            .or_insert_with(|| Value::String(String::new()));
    }
    serde_json::from_value(value).ok()
}

/// Rules on field contents. Fields in `skip` already failed structurally.
fn check_rules(recipe: &Recipe, skip: &BTreeSet<String>, out: &mut Diagnostics) {
    let root = Path::root();
    let live = |field: &str| !skip.contains(field);
    let rule = |out: &mut Diagnostics, code: &str, path: Path, result: Result<(), String>| {
        if let Err(reason) = result {
            out.push(Diagnostic::error(
                code,
                path.clone(),
                format!("`{}` {reason}", path),
            ));
        }
    };

    if live("name") {
        rule(
            out,
            "recipe.name",
            root.field("name"),
            rules::slug(&recipe.name),
        );
    }
    if live("description")
        && recipe
            .description
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        out.push(Diagnostic::error(
            "recipe.description",
            "description",
            "contains control characters",
        ));
    }
    if live("tags") {
        for (i, tag) in recipe.tags.iter().enumerate() {
            rule(
                out,
                "recipe.tag",
                root.field("tags").index(i),
                rules::slug(tag),
            );
        }
        duplicates(
            &recipe.tags,
            &root.field("tags"),
            "recipe.duplicate-tag",
            false,
            out,
        );
    }
    if live("base_image") && recipe.base_image.parse::<BaseImage>().is_err() {
        out.push(base_image_error(&recipe.base_image));
    }
    if live("architecture") && !ARCHITECTURES.contains(&recipe.architecture.as_str()) {
        out.push(
            Diagnostic::error(
                "recipe.architecture",
                "architecture",
                format!(
                    "architecture `{}` is not built",
                    rules::truncate(&recipe.architecture, 32)
                ),
            )
            .suggest(format!("use one of: {}", ARCHITECTURES.join(", "))),
        );
    }
    if live("hostname") {
        match &recipe.hostname {
            Some(h) => rule(
                out,
                "recipe.hostname",
                root.field("hostname"),
                rules::hostname(h),
            ),
            None if live("name") && rules::slug(&recipe.name).is_ok() => rule(
                out,
                "recipe.hostname",
                root.field("name"),
                rules::hostname(&recipe.name),
            ),
            None => {}
        }
    }
    if live("locale") {
        rule(
            out,
            "recipe.locale",
            root.field("locale"),
            rules::locale(&recipe.locale),
        );
    }
    if live("timezone") {
        rule(
            out,
            "recipe.timezone",
            root.field("timezone"),
            rules::timezone(&recipe.timezone),
        );
    }
    if live("features") {
        let mut seen = BTreeMap::new();
        for (i, f) in recipe.features.iter().enumerate() {
            let path = root.field("features").index(i).field("name");
            rule(
                out,
                "recipe.feature-name",
                path.clone(),
                rules::slug(&f.name),
            );
            if let Some(first) = seen.insert(f.name.as_str(), i) {
                out.push(
                    Diagnostic::error(
                        "recipe.duplicate-feature",
                        path,
                        format!("feature `{}` is listed twice", f.name),
                    )
                    .suggest(format!(
                        "merge its options into features[{first}] and remove this entry"
                    )),
                );
            }
        }
    }
    if live("packages") {
        for (i, p) in recipe.packages.iter().enumerate() {
            rule(
                out,
                "recipe.package-name",
                root.field("packages").index(i),
                rules::package_name(p),
            );
        }
        duplicates(
            &recipe.packages,
            &root.field("packages"),
            "recipe.duplicate-package",
            false,
            out,
        );
    }
    if live("services") {
        for (i, s) in recipe.services.iter().enumerate() {
            rule(
                out,
                "recipe.service-name",
                root.field("services").index(i),
                rules::unit_name(s),
            );
        }
        duplicates(
            &recipe.services,
            &root.field("services"),
            "recipe.duplicate-service",
            false,
            out,
        );
    }
    if live("users") {
        check_users(recipe, out);
    }
    if live("checks") {
        check_checks(recipe, out);
    }
    if live("files") {
        let mut paths = BTreeMap::new();
        for (i, f) in recipe.files.iter().enumerate() {
            let at = root.field("files").index(i);
            rule(
                out,
                "recipe.file-path",
                at.field("path"),
                rules::image_path(&f.path),
            );
            rule(
                out,
                "recipe.file-owner",
                at.field("owner"),
                rules::account_name(&f.owner),
            );
            rule(
                out,
                "recipe.file-group",
                at.field("group"),
                rules::account_name(&f.group),
            );
            match parse_mode(&f.mode) {
                Ok(_) => {}
                Err(reason) => out.push(
                    Diagnostic::error(
                        "recipe.file-mode",
                        at.field("mode"),
                        format!("`{}` {reason}", at.field("mode")),
                    )
                    .suggest("use an octal string such as \"0644\" or \"0600\""),
                ),
            }
            if let Some(first) = paths.insert(f.path.as_str(), i) {
                out.push(Diagnostic::error(
                    "recipe.duplicate-file",
                    at.field("path"),
                    format!("`{}` is also written by files[{first}]", f.path),
                ));
            }
        }
    }
    if live("kernel_args") {
        for (i, a) in recipe.kernel_args.iter().enumerate() {
            rule(
                out,
                "recipe.kernel-arg",
                root.field("kernel_args").index(i),
                rules::kernel_arg(a),
            );
        }
        duplicates(
            &recipe.kernel_args,
            &root.field("kernel_args"),
            "recipe.duplicate-kernel-arg",
            false,
            out,
        );
    }
    if live("networking") {
        let net = root.field("networking");
        for (i, ns) in recipe.networking.nameservers.iter().enumerate() {
            if ns.parse::<IpAddr>().is_err() {
                out.push(
                    Diagnostic::error(
                        "recipe.nameserver",
                        net.field("nameservers").index(i),
                        format!("`{}` is not an IP address", rules::truncate(ns, 64)),
                    )
                    .suggest("name servers are IP addresses such as 9.9.9.9 or 2620:fe::fe"),
                );
            }
        }
        let mut ports = BTreeMap::new();
        for (i, p) in recipe.networking.allowed_ports.iter().enumerate() {
            let at = net.field("allowed_ports").index(i);
            if p.port == 0 {
                out.push(Diagnostic::error(
                    "recipe.port",
                    at.field("port"),
                    "port 0 is not a port; use 1–65535",
                ));
            }
            if let Some(first) = ports.insert((p.port, p.protocol), i) {
                out.push(Diagnostic::warning(
                    "recipe.duplicate-port",
                    at,
                    format!(
                        "{}/{} is already allowed by networking.allowed_ports[{first}]",
                        p.port, p.protocol
                    ),
                ));
            }
        }
    }
    if live("security")
        && live("users")
        && recipe.security.password_authentication
        && recipe.users.iter().all(|u| u.password_hash.is_none())
    {
        out.push(
            Diagnostic::warning("recipe.password-authentication", "security.password_authentication", "password logins are enabled but no user has a password_hash, so nobody can log in with a password")
                .suggest("give a user a password_hash, or turn password_authentication off and use ssh_authorized_keys"),
        );
    }
}

/// The recipe's own checks: a unique name each, exactly one kind, a kind
/// that obeys the rules steps do, a bounded timeout.
fn check_checks(recipe: &Recipe, out: &mut Diagnostics) {
    let list = Path::root().field("checks");
    let derived: Vec<String> = {
        let mut without = recipe.clone();
        without.checks.clear();
        crate::system::recipe_checks(&without)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    };
    let mut seen = BTreeSet::new();
    for (i, check) in recipe.checks.iter().enumerate() {
        let at = list.index(i);
        let name = at.field("name");
        if let Err(reason) = rules::slug(&check.name) {
            out.push(Diagnostic::error(
                "recipe.check-name",
                name.clone(),
                format!("`{name}` {reason}"),
            ));
        } else if derived.contains(&check.name) {
            out.push(
                Diagnostic::error(
                    "recipe.check-name",
                    name.clone(),
                    format!(
                        "`{name}`: `recipe/{}` is already a check the recipe's fields give",
                        check.name
                    ),
                )
                .suggest("choose another name"),
            );
        } else if !seen.insert(check.name.as_str()) {
            out.push(Diagnostic::error(
                "recipe.check-name",
                name.clone(),
                format!("`{name}`: another check is named `{}`", check.name),
            ));
        }
        let kinds = check.kinds();
        match kinds.as_slice() {
            [(field, kind)] => {
                for (sub, reason) in kind.check() {
                    let path = at.field(field);
                    out.push(Diagnostic::error(
                        "recipe.check",
                        path.clone(),
                        format!("`{path}`: its {sub} {reason}"),
                    ));
                }
            }
            [] => out.push(
                Diagnostic::error("recipe.check", at.clone(), format!("`{at}` says nothing to check"))
                    .suggest("give one of unit_active, command_succeeds, port_open, file_exists, package_installed, http_get"),
            ),
            many => out.push(
                Diagnostic::error(
                    "recipe.check",
                    at.clone(),
                    format!(
                        "`{at}` has {}: one kind per check",
                        many.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(" and ")
                    ),
                )
                .suggest("split it into several checks"),
            ),
        }
        if let Some(t) = check.timeout_seconds
            && !(1..=crate::recipe::MAX_CHECK_SECONDS).contains(&t)
        {
            let path = at.field("timeout_seconds");
            out.push(Diagnostic::error(
                "recipe.check-timeout",
                path.clone(),
                format!(
                    "`{path}` is {t}; give 1 to {} seconds",
                    crate::recipe::MAX_CHECK_SECONDS
                ),
            ));
        }
    }
}

fn check_users(recipe: &Recipe, out: &mut Diagnostics) {
    let users = Path::root().field("users");
    let mut seen = BTreeMap::new();
    for (i, u) in recipe.users.iter().enumerate() {
        let at = users.index(i);
        let push = |out: &mut Diagnostics, code: &str, path: Path, result: Result<(), String>| {
            if let Err(reason) = result {
                out.push(Diagnostic::error(
                    code,
                    path.clone(),
                    format!("`{path}` {reason}"),
                ));
            }
        };
        push(
            out,
            "recipe.user-name",
            at.field("name"),
            rules::account_name(&u.name),
        );
        if RESERVED_USERS.contains(&u.name.as_str()) {
            out.push(
                Diagnostic::error("recipe.user-reserved", at.field("name"), format!("`{}` is a system account and cannot be declared as a user", u.name))
                    .suggest("choose a person's login name such as `admin`; root logins are set with security.root_login"),
            );
        }
        if let Some(first) = seen.insert(u.name.as_str(), i) {
            out.push(Diagnostic::error(
                "recipe.duplicate-user",
                at.field("name"),
                format!("user `{}` is already declared at users[{first}]", u.name),
            ));
        }
        for (g, group) in u.groups.iter().enumerate() {
            push(
                out,
                "recipe.group-name",
                at.field("groups").index(g),
                rules::account_name(group),
            );
        }
        if let Some(shell) = &u.shell {
            push(
                out,
                "recipe.shell",
                at.field("shell"),
                rules::shell_path(shell),
            );
        }
        for (k, key) in u.ssh_authorized_keys.iter().enumerate() {
            push(
                out,
                "recipe.ssh-key",
                at.field("ssh_authorized_keys").index(k),
                rules::ssh_public_key(key),
            );
        }
        if let Some(hash) = &u.password_hash {
            // Never echo the value: it may be a clear-text password by mistake.
            if let Err(reason) = rules::password_hash(hash) {
                out.push(Diagnostic::error(
                    "recipe.password-hash",
                    at.field("password_hash"),
                    format!("the password_hash {reason}"),
                ));
            }
        }
    }
}

/// Parse an octal mode string; reject setuid/setgid/sticky bits.
pub fn parse_mode(mode: &str) -> Result<u32, String> {
    let bits = u32::from_str_radix(mode, 8)
        .map_err(|_| "is not an octal mode like \"0644\"".to_owned())?;
    if mode.len() > 4 || bits > 0o7777 {
        return Err("is not an octal mode like \"0644\"".into());
    }
    if bits > 0o777 {
        return Err("sets setuid, setgid or sticky bits, which recipes may not".into());
    }
    Ok(bits)
}

fn duplicates(items: &[String], path: &Path, code: &str, error: bool, out: &mut Diagnostics) {
    let mut seen = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(first) = seen.insert(item.as_str(), i) {
            let message = format!(
                "`{}` is already listed at {}",
                rules::truncate(item, 64),
                path.index(first)
            );
            let d = if error {
                Diagnostic::error(code, path.index(i), message)
            } else {
                Diagnostic::warning(code, path.index(i), message)
            };
            out.push(d.suggest("remove the duplicate"));
        }
    }
}

fn base_image_error(given: &str) -> Diagnostic {
    let lower = given.to_ascii_lowercase();
    let suggestion = if lower.contains("bookworm") || lower.contains("12") {
        Some("debian-bookworm".to_owned())
    } else if lower.contains("trixie") || lower.contains("13") {
        Some("debian-trixie".to_owned())
    } else {
        did_you_mean(given, BaseImage::names()).map(str::to_owned)
    };
    let accepted: Vec<String> = BaseImage::ALL
        .iter()
        .map(|b| format!("`{}` ({})", b.name(), b.description()))
        .collect();
    let d = Diagnostic::error(
        "recipe.base-image",
        "base_image",
        format!(
            "unknown base image `{}`; accepted: {}",
            rules::truncate(given, 64),
            accepted.join(", ")
        ),
    );
    match suggestion {
        Some(s) => d.suggest(format!("did you mean `{s}`?")),
        None => {
            d.suggest("OpenFactory builds Debian images (amd64); pick one of the accepted names")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_recipes_own_checks_are_checked_and_planned() {
        let text = r#"
name = "db"
base_image = "debian-bookworm"
services = ["postgresql.service"]
checks = [
  { name = "tls", description = "PostgreSQL takes TLS", command_succeeds = ["psql", "sslmode=require"], timeout_seconds = 300 },
  { name = "port", port_open = 5432 },
]
"#;
        let checked = check_text(text, Format::Toml);
        assert!(
            !checked.diagnostics.has_errors(),
            "{:?}",
            checked.diagnostics
        );
        let recipe = checked.recipe.unwrap();
        let planned = crate::system::recipe_checks(&recipe);
        assert!(
            planned
                .iter()
                .any(|(n, d, _)| n == "tls" && d == "PostgreSQL takes TLS")
        );
        assert!(
            planned
                .iter()
                .any(|(n, d, _)| n == "port" && d == "port open: 5432")
        );
        assert_eq!(crate::system::check_timeout(&recipe, "tls"), 300);
        assert_eq!(crate::system::check_timeout(&recipe, "port"), 120);

        let bad = r#"
name = "db"
base_image = "debian-bookworm"
services = ["postgresql.service"]
checks = [
  { name = "Bad Name", port_open = 1 },
  { name = "service-postgresql", port_open = 2 },
  { name = "nothing" },
  { name = "two", port_open = 3, unit_active = "x.service" },
  { name = "argv", command_succeeds = [] },
  { name = "slow", port_open = 4, timeout_seconds = 9000 },
  { name = "slow", port_open = 5 },
]
"#;
        let checked = check_text(bad, Format::Toml);
        let paths: Vec<String> = checked
            .diagnostics
            .errors()
            .map(|d| d.path.to_string())
            .collect();
        for want in [
            "checks[0].name",
            "checks[1].name",
            "checks[2]",
            "checks[3]",
            "checks[4].command_succeeds",
            "checks[5].timeout_seconds",
            "checks[6].name",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "no error at {want}: {paths:?}"
            );
        }
        let unknown = "name = \"db\"\nbase_image = \"debian-bookworm\"\nchecks = [{ name = \"c\", port_open = 6, colour = \"red\" }]\n";
        let checked = check_text(unknown, Format::Toml);
        let paths: Vec<String> = checked
            .diagnostics
            .errors()
            .map(|d| d.path.to_string())
            .collect();
        assert!(
            paths.iter().any(|p| p.starts_with("checks[0]")),
            "{paths:?}"
        );
    }

    #[test]
    fn a_recipe_without_a_name_is_named_after_its_base_and_features() {
        use serde_json::json;
        let named = |v: Value| suggested_name(&v);
        assert_eq!(
            named(
                json!({"base_image": "debian-bookworm", "features": ["ssh", {"name": "docker"}]})
            ),
            Some("debian-bookworm-ssh-docker".into())
        );
        // Whatever the fields hold, the suggestion is a valid name.
        for v in [
            json!({}),
            json!({"base_image": "Debian 12!", "features": [{"name": "__"}, 7, null]}),
            json!({"base_image": "x".repeat(200), "features": ["a".repeat(70), "ssh"]}),
            json!({"name": null, "base_image": "-debian-"}),
        ] {
            let name = named(v.clone()).expect("no name given");
            assert!(rules::slug(&name).is_ok(), "{v} gave `{name}`");
        }
        // A recipe with a name keeps it, valid or not.
        assert_eq!(
            named(json!({"name": "web", "base_image": "debian-bookworm"})),
            None
        );
        assert_eq!(
            named(json!({"name": "", "base_image": "debian-bookworm"})),
            None
        );
        assert_eq!(named(json!("debian-docker-monitoring")), None);
    }

    use super::*;

    fn codes(checked: &Checked) -> Vec<(String, String)> {
        checked
            .diagnostics
            .iter()
            .map(|d| (d.path.clone(), d.code.clone()))
            .collect()
    }

    #[test]
    fn a_minimal_recipe_is_clean() {
        let c = check_text(
            "name = \"web\"\nbase_image = \"debian-bookworm\"\n",
            Format::Toml,
        );
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
        let r = c.recipe.unwrap();
        assert_eq!(r.locale, "en_US.UTF-8");
        assert!(r.networking.dhcp);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = r#"
name = "Web Server"
base_image = "ubuntu-22.04"
packges = ["vim"]
packages = ["vim", "rm -rf /", "vim"]
services = ["nginx; reboot"]
features = ["ssh", { name = "docker", optons = {} }]
[[users]]
name = "root"
ssh_authorized_keys = ["not a key"]
[[files]]
path = "/etc/../boot/evil"
content = ""
mode = "4755"
"#;
        let c = check_text(text, Format::Toml);
        let got = codes(&c);
        for expected in [
            ("name", "recipe.name"),
            ("base_image", "recipe.base-image"),
            ("packges", "recipe.unknown-field"),
            ("packages[1]", "recipe.package-name"),
            ("packages[2]", "recipe.duplicate-package"),
            ("services[0]", "recipe.service-name"),
            ("features[1].optons", "recipe.unknown-field"),
            ("users[0].name", "recipe.user-reserved"),
            ("users[0].ssh_authorized_keys[0]", "recipe.ssh-key"),
            ("files[0].path", "recipe.file-path"),
            ("files[0].mode", "recipe.file-mode"),
        ] {
            assert!(
                got.contains(&(expected.0.into(), expected.1.into())),
                "missing {expected:?} in {got:#?}"
            );
        }
        let unknown = c.diagnostics.iter().find(|d| d.path == "packges").unwrap();
        assert_eq!(
            unknown.suggestion.as_deref(),
            Some("did you mean `packages`?")
        );
        let typo = c
            .diagnostics
            .iter()
            .find(|d| d.path == "features[1].optons")
            .unwrap();
        assert_eq!(typo.suggestion.as_deref(), Some("did you mean `options`?"));
        // The duplicate is a warning; the rest are errors.
        assert!(
            !c.diagnostics
                .iter()
                .find(|d| d.code == "recipe.duplicate-package")
                .unwrap()
                .is_error()
        );
    }

    #[test]
    fn base_image_suggestions() {
        let c = check_text("name = \"x1\"\nbase_image = \"bookworm\"\n", Format::Toml);
        let d = c.diagnostics.iter().next().unwrap();
        assert_eq!(
            d.suggestion.as_deref(),
            Some("did you mean `debian-bookworm`?")
        );
        assert!(d.message.contains("debian-trixie"));
    }

    #[test]
    fn wrong_types_are_reported_and_other_fields_still_checked() {
        let json = serde_json::json!({
            "name": "ok",
            "base_image": "debian-trixie",
            "packages": "vim",
            "services": ["bad service"],
            "networking": {"allowed_ports": [{"port": 70000}]},
        });
        let c = check_value(json);
        let got = codes(&c);
        assert!(
            got.contains(&("packages".into(), "recipe.wrong-type".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("services[0]".into(), "recipe.service-name".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&(
                "networking.allowed_ports[0].port".into(),
                "recipe.out-of-range".into()
            )),
            "{got:?}"
        );
        assert!(
            c.diagnostics
                .iter()
                .find(|d| d.path == "packages")
                .unwrap()
                .message
                .contains("expected array")
        );
    }

    #[test]
    fn missing_required_fields() {
        let c = check_value(serde_json::json!({}));
        let got = codes(&c);
        assert!(
            got.contains(&("name".into(), "recipe.missing-field".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("base_image".into(), "recipe.missing-field".into())),
            "{got:?}"
        );
        assert_eq!(c.diagnostics.errors().count(), 2);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let c = check_text("name = \"x\"\nbase_image = \n", Format::Toml);
        assert!(
            c.diagnostics
                .iter()
                .next()
                .unwrap()
                .message
                .contains("line 2"),
            "{:?}",
            c.diagnostics
        );
        let c = check_text("{\"name\": ", Format::Json);
        assert_eq!(c.diagnostics.iter().next().unwrap().code, "recipe.syntax");
        assert!(c.recipe.is_none());
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        let c = check_text(&"#".repeat(MAX_RECIPE_BYTES + 1), Format::Toml);
        assert_eq!(
            c.diagnostics.iter().next().unwrap().code,
            "recipe.too-large"
        );
        let json =
            serde_json::json!({"name": "x".repeat(100_000), "base_image": "debian-bookworm"});
        let c = check_value(json);
        assert!(c.diagnostics.iter().all(|d| d.message.len() < 300));
        assert!(c.diagnostics.has_errors());
    }

    #[test]
    fn secrets_are_not_echoed() {
        let json = serde_json::json!({"name": "x1", "base_image": "debian-bookworm", "users": [{"name": "admin", "password_hash": "hunter2-secret"}]});
        let c = check_value(json);
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.code == "recipe.password-hash")
            .unwrap();
        assert!(!d.message.contains("hunter2"));
    }
}
