//! `gxp`: controls for regulated healthcare data (21 CFR Part 11 / EU Annex 11 flavoured).
//!
//! An audit trail on the data directories and on who/when/privilege changes (optionally
//! immutable until reboot), an AIDE integrity baseline, trusted time from NTP, no USB mass
//! storage and idle shell sessions closed. Builds on the `hardening` feature.

use openfactory_plugin_sdk::prelude::*;

const RULES_TEMPLATE: &str = "audit.rules.in";
const WATCHES_PLACEHOLDER: &str = "@DATA_DIRECTORY_WATCHES@";
const DATA_PREFIXES: [&str; 2] = ["/srv/", "/var/lib/"];
const README: &str = "This directory holds GxP-regulated data.\n\
    Every change is recorded by auditd (ausearch -k gxp-data) and checked by AIDE.\n\
    Do not modify or delete records outside the validated application.\n";

/// Options of the `gxp` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Directories holding regulated data: absolute paths under /srv/ or /var/lib/ (letters, digits,
    /// `.`, `_`, `-`, `/`; no `..`, no trailing `/`). Each is created (with a README.gxp inside),
    /// audited for every write and attribute change (key `gxp-data`) and covered by AIDE.
    #[schemars(inner(regex(pattern = r"^/(srv|var/lib)/[A-Za-z0-9._/-]+$")))]
    pub data_directories: Vec<String>,
    /// Install AIDE, watch the data directories and record the integrity baseline at the end of
    /// this feature's build steps (/var/lib/aide/aide.db); the daily AIDE check reports changes.
    pub aide: bool,
    /// NTP servers (host names or IP addresses) for systemd-timesyncd. Empty keeps Debian's
    /// fallback servers.
    #[schemars(inner(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9.:-]*$"), length(max = 253)))]
    pub ntp_servers: Vec<String>,
    /// Allow USB mass storage. false (default) makes the usb-storage and uas modules unloadable.
    pub usb_storage: bool,
    /// Idle time in seconds after which interactive bash sessions are logged out (read-only TMOUT).
    #[schemars(range(min = 60, max = 86400))]
    pub session_timeout_seconds: u32,
    /// Make the audit configuration immutable after boot (`-e 2`): rules cannot be changed or
    /// auditing stopped without a reboot.
    pub audit_immutable: bool,
    /// Number of audit log files auditd keeps when rotating (auditd.conf num_logs, 8 MB each).
    #[schemars(range(min = 2, max = 999))]
    pub audit_log_retention: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data_directories: vec!["/srv/gxp-data".into()],
            aide: true,
            ntp_servers: vec![
                "0.debian.pool.ntp.org".into(),
                "1.debian.pool.ntp.org".into(),
            ],
            usb_storage: false,
            session_timeout_seconds: 900,
            audit_immutable: true,
            audit_log_retention: 30,
        }
    }
}

pub struct Gxp;

/// Why a data directory path is unusable, if it is.
fn data_directory_problem(dir: &str) -> Option<String> {
    let Some(rest) = DATA_PREFIXES
        .iter()
        .find_map(|prefix| dir.strip_prefix(prefix))
    else {
        return Some(format!("`{dir}` is not under /srv/ or /var/lib/"));
    };
    if rest.is_empty() {
        return Some(format!(
            "`{dir}` is the top directory itself; name a directory inside it"
        ));
    }
    if !dir
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
    {
        return Some(format!(
            "`{dir}` contains characters other than letters, digits, `.`, `_`, `-` and `/`"
        ));
    }
    if rest.ends_with('/')
        || rest
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Some(format!(
            "`{dir}` has an empty, `.` or `..` component or a trailing `/`"
        ));
    }
    None
}

fn ntp_server_ok(server: &str) -> bool {
    !server.is_empty()
        && server.len() <= 253
        && !server.starts_with(['-', '.', ':'])
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c))
}

/// The directories to create, each once, in option order.
fn data_directories(options: &Options) -> Vec<&str> {
    let mut dirs: Vec<&str> = Vec::new();
    for dir in &options.data_directories {
        if !dirs.contains(&dir.as_str()) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The audit rules file: the template with one watch per data directory, then `-e 2` if immutable.
fn audit_rules(options: &Options) -> Result<String, Diagnostic> {
    let template = std::fs::read_to_string(format!("/assets/{RULES_TEMPLATE}")).map_err(|e| {
        diag::error(
            "gxp.asset-missing",
            "options",
            format!("the plugin asset /assets/{RULES_TEMPLATE} cannot be read: {e}"),
        )
        .suggest("reinstall the gxp plugin bundle (its assets directory is incomplete)")
    })?;
    if !template.contains(WATCHES_PLACEHOLDER) {
        return Err(diag::error(
            "gxp.asset-invalid",
            "options",
            format!(
                "the plugin asset /assets/{RULES_TEMPLATE} lacks the {WATCHES_PLACEHOLDER} line"
            ),
        )
        .suggest("reinstall the gxp plugin bundle"));
    }
    let watches: Vec<String> = data_directories(options)
        .iter()
        .map(|dir| format!("-w {dir} -p wa -k gxp-data"))
        .collect();
    let mut rules = template.replace(WATCHES_PLACEHOLDER, &watches.join("\n"));
    if options.audit_immutable {
        rules.push_str("\n## Lock the audit configuration until the next reboot (augenrules always puts this last)\n-e 2\n");
    }
    Ok(rules)
}

/// AIDE selection lines: the config is a regex, so dots are escaped (`\\.` in aide.conf).
fn aide_conf(options: &Options) -> String {
    let mut conf = String::from(
        "# Written by OpenFactory (feature `gxp`): integrity of the regulated data directories.\n",
    );
    for dir in data_directories(options) {
        conf.push_str(&format!("{}(/|$) 0 Full\n", dir.replace('.', "\\\\.")));
    }
    conf
}

impl Feature for Gxp {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "gxp",
            env!("CARGO_PKG_VERSION"),
            "GxP controls: data audit trail, AIDE, trusted time, no USB storage, session timeout",
            "healthcare",
        )
        .reads(&["security"])
        .requires(&["hardening"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let options = &ctx.options;
        let mut problems = Vec::new();
        if options.data_directories.is_empty() {
            problems.push(
                diag::warning(
                    "gxp.no-data-directories",
                    "options.data_directories",
                    "no data directory is listed, so no regulated data is audited",
                )
                .suggest("list the directories that hold regulated data, e.g. \"/srv/gxp-data\""),
            );
        }
        for (i, dir) in options.data_directories.iter().enumerate() {
            let path = format!("options.data_directories[{i}]");
            if let Some(problem) = data_directory_problem(dir) {
                problems.push(diag::error("gxp.data-directory", &path, problem).suggest(
                    "use an absolute path such as \"/srv/gxp-data\" or \"/var/lib/lims\"",
                ));
            } else if options.data_directories[..i].contains(dir) {
                problems.push(
                    diag::warning(
                        "gxp.duplicate-data-directory",
                        &path,
                        format!("`{dir}` is listed more than once"),
                    )
                    .suggest("remove the duplicate entry"),
                );
            }
        }
        for (i, server) in options.ntp_servers.iter().enumerate() {
            if !ntp_server_ok(server) {
                problems.push(
                    diag::error("gxp.ntp-server", &format!("options.ntp_servers[{i}]"), format!("`{server}` is not a host name or IP address"))
                        .suggest("use a name such as \"0.debian.pool.ntp.org\" or an address such as \"192.0.2.10\""),
                );
            }
        }
        if options.ntp_servers.is_empty() {
            problems.push(
                diag::warning(
                    "gxp.no-ntp-servers",
                    "options.ntp_servers",
                    "no NTP server is listed; systemd-timesyncd uses Debian's fallback pool",
                )
                .suggest("list the site's validated time sources"),
            );
        }
        if ctx.recipe.security.password_authentication {
            problems.push(
                diag::warning("gxp.password-authentication", "security.password_authentication", "password logins are enabled; regulated systems should use stronger, attributable credentials")
                    .suggest("set security.password_authentication to false and use SSH keys"),
            );
        }
        problems.extend(audit_rules(options).err());
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let options = &ctx.options;
        let rules = audit_rules(options).map_err(|e| vec![e])?;

        let mut steps = vec![
            step::install(&["auditd"]),
            step::write_file_with(
                "/etc/audit/rules.d/60-openfactory-gxp.rules",
                &rules,
                0o640,
                "root",
                "root",
            ),
            step::run(
                "Keep the configured number of audit logs",
                &[
                    "sed",
                    "-i",
                    "-E",
                    "-e",
                    &format!(
                        "s/^#?[[:space:]]*num_logs[[:space:]]*=.*/num_logs = {}/",
                        options.audit_log_retention
                    ),
                    "-e",
                    "s/^#?[[:space:]]*max_log_file_action[[:space:]]*=.*/max_log_file_action = ROTATE/",
                    "/etc/audit/auditd.conf",
                ],
            ),
            step::enable("auditd.service"),
        ];
        if ctx.recipe.suite() != "bookworm" {
            steps.push(step::enable("audit-rules.service"));
        }
        for dir in data_directories(options) {
            steps.push(step::write_file_with(
                &format!("{dir}/README.gxp"),
                README,
                0o640,
                "root",
                "root",
            ));
        }

        steps.push(step::install(&["systemd-timesyncd"]));
        if !options.ntp_servers.is_empty() {
            steps.push(step::write_file(
                "/etc/systemd/timesyncd.conf.d/50-openfactory.conf",
                &format!(
                    "# Written by OpenFactory (feature `gxp`).\n[Time]\nNTP={}\n",
                    options.ntp_servers.join(" ")
                ),
            ));
        }
        steps.push(step::enable("systemd-timesyncd.service"));

        if !options.usb_storage {
            steps.push(step::write_file(
                "/etc/modprobe.d/openfactory-gxp-usb.conf",
                "# Written by OpenFactory (feature `gxp`): no USB mass storage.\ninstall usb-storage /bin/false\nblacklist usb-storage\ninstall uas /bin/false\nblacklist uas\n",
            ));
        }
        steps.push(step::write_file(
            "/etc/profile.d/openfactory-timeout.sh",
            &format!("# Written by OpenFactory (feature `gxp`): log out idle shells.\nreadonly TMOUT={}; export TMOUT\n", options.session_timeout_seconds),
        ));

        if options.aide {
            // Last, so that the baseline includes every file written above.
            // `aideinit` ships in aide-common, which aide only recommends.
            steps.push(step::install(&["aide", "aide-common"]));
            steps.push(step::write_file(
                "/etc/aide/aide.conf.d/90_openfactory_gxp",
                &aide_conf(options),
            ));
            steps.push(step::run(
                "Record the AIDE integrity baseline",
                &["aideinit", "--yes", "--force"],
            ));
        }
        Ok(steps)
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        let options = &ctx.options;
        let key = if options.data_directories.is_empty() {
            "gxp-identity"
        } else {
            "gxp-data"
        };
        let mut checks = vec![
            check::command_succeeds(
                "audit-rules-loaded",
                "the GxP audit rules are loaded",
                &["sh", "-c", &format!("auditctl -l | grep -q {key}")],
            ),
            check::unit_active(
                "time-sync-active",
                "systemd-timesyncd keeps the clock synchronised",
                "systemd-timesyncd.service",
            ),
            check::file_exists(
                "session-timeout",
                "idle shells are logged out",
                "/etc/profile.d/openfactory-timeout.sh",
            ),
        ];
        if options.audit_immutable {
            checks.push(check::command_succeeds(
                "audit-immutable",
                "the audit configuration is locked",
                &["sh", "-c", "auditctl -s | grep -q '^enabled 2'"],
            ));
        }
        if options.aide {
            checks.push(check::file_exists(
                "aide-baseline",
                "the AIDE baseline database exists",
                "/var/lib/aide/aide.db",
            ));
        }
        if !options.usb_storage {
            checks.push(check::command_succeeds(
                "usb-storage-blocked",
                "the usb-storage module cannot be loaded",
                &[
                    "sh",
                    "-c",
                    "modprobe -n -v usb-storage | grep -q /bin/false",
                ],
            ));
        }
        checks
    }
}

export_feature!(Gxp);
