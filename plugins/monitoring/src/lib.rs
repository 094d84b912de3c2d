//! Feature `monitoring`: Prometheus node exporter, optionally with a local Prometheus server.
//!
//! Debian's units run `/usr/bin/prometheus-node-exporter $ARGS` and
//! `/usr/bin/prometheus $ARGS` with ARGS read from /etc/default/<package>; flags
//! not given keep Debian's defaults (config /etc/prometheus/prometheus.yml, data
//! in /var/lib/prometheus/metrics2/).

use std::net::IpAddr;

use openfactory_plugin_sdk::prelude::*;

const DEFAULT_TEXTFILE_DIRECTORY: &str = "/var/lib/prometheus/node-exporter";
/// Prefixes under which the build may create the textfile directory. Not
/// /usr/local/: a README there could land in /usr/local/bin or lib, which the
/// planner treats as privileged (search path, loader), and the plugin's
/// capabilities declare only these prefixes.
const WRITABLE_PREFIXES: [&str; 3] = ["/var/lib/", "/srv/", "/opt/"];

/// Options of the `monitoring` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// TCP port of the node exporter's /metrics endpoint.
    #[schemars(range(min = 1, max = 65535))]
    pub node_exporter_port: u16,
    /// IPv4 or IPv6 address the node exporter (and Prometheus, when enabled) listen on, without brackets, e.g. `127.0.0.1` or `::1`. Empty listens on all addresses. A loopback address opens no firewall port.
    #[schemars(regex(pattern = r"^[0-9A-Fa-f:.\[\]]*$"))]
    pub listen_address: String,
    /// Export the state of systemd units (node exporter's systemd collector, read over D-Bus; installs `dbus`).
    pub systemd_collector: bool,
    /// Directory whose `*.prom` files the node exporter's textfile collector exports. Absolute path; a directory other than Debian's default must be under /var/lib/, /srv/ or /opt/, without a trailing `/`.
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._/-]*$"))]
    pub textfile_directory: String,
    /// Also install a Prometheus server that scrapes the local node exporter and itself.
    pub prometheus: bool,
    /// TCP port of the Prometheus web UI and API (only with `prometheus: true`).
    #[schemars(range(min = 1, max = 65535))]
    pub prometheus_port: u16,
    /// How long Prometheus keeps samples, e.g. `15d`, `12h`, `4w`, `1y` (only with `prometheus: true`).
    #[schemars(regex(pattern = r"^[0-9]+[dhwy]$"))]
    pub retention: String,
    /// How often Prometheus scrapes its targets, e.g. `15s`, `1m` (only with `prometheus: true`).
    #[schemars(regex(pattern = r"^[0-9]+[sm]$"))]
    pub scrape_interval: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_exporter_port: 9100,
            listen_address: String::new(),
            systemd_collector: true,
            textfile_directory: DEFAULT_TEXTFILE_DIRECTORY.into(),
            prometheus: false,
            prometheus_port: 9090,
            retention: "15d".into(),
            scrape_interval: "15s".into(),
        }
    }
}

/// `Some(address)` when one is set; `Err` when it does not parse.
fn listen_ip(o: &Options) -> Result<Option<IpAddr>, ()> {
    if o.listen_address.is_empty() {
        Ok(None)
    } else {
        o.listen_address.parse().map(Some).map_err(|_| ())
    }
}

/// `--web.listen-address` value: `:port` listens on all addresses.
fn listen(ip: Option<IpAddr>, port: u16) -> String {
    match ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Some(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        None => format!(":{port}"),
    }
}

/// Scrape target for a local service listening on `ip`.
fn target(ip: Option<IpAddr>, port: u16) -> String {
    match ip {
        Some(ip) if !ip.is_unspecified() => listen(Some(ip), port),
        _ => format!("localhost:{port}"),
    }
}

/// A duration like `15d`: digits, one unit from `units`, and not zero.
fn is_duration(s: &str, units: &[char]) -> bool {
    let digits = s.strip_suffix(units).unwrap_or("");
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.bytes().all(|b| b == b'0')
}

fn textfile_directory_ok(dir: &str) -> bool {
    let clean = dir.starts_with('/')
        && !dir.ends_with('/')
        && !dir.contains("//")
        && dir.split('/').all(|part| part != ".." && part != ".")
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    let creatable = dir == DEFAULT_TEXTFILE_DIRECTORY
        || WRITABLE_PREFIXES
            .iter()
            .any(|p| dir.starts_with(p) && dir.len() > p.len());
    clean && creatable
}

fn prometheus_yml(o: &Options, ip: Option<IpAddr>) -> String {
    format!(
        "# Managed by OpenFactory (feature `monitoring`).\n\
         global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\n\
         scrape_configs:\n\
         \x20 - job_name: node\n    static_configs:\n      - targets: ['{node}']\n\
         \x20 - job_name: prometheus\n    static_configs:\n      - targets: ['{prometheus}']\n",
        interval = o.scrape_interval,
        node = target(ip, o.node_exporter_port),
        prometheus = target(ip, o.prometheus_port),
    )
}

fn default_file(program: &str, args: &[String]) -> String {
    format!(
        "# Managed by OpenFactory (feature `monitoring`).\n\
         # Command-line arguments of {program} (see `{program} --help`).\n\
         ARGS=\"{}\"\n",
        args.join(" ")
    )
}

pub struct Monitoring;

impl Feature for Monitoring {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "monitoring",
            env!("CARGO_PKG_VERSION"),
            "Prometheus node exporter and optional Prometheus server",
            "observability",
        )
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let o = &ctx.options;
        let defaults = Options::default();
        let mut problems = Vec::new();
        if listen_ip(o).is_err() {
            let bare = o
                .listen_address
                .trim_start_matches('[')
                .trim_end_matches(']');
            let fix = if bare.parse::<IpAddr>().is_ok() {
                format!("write the address without brackets: `{bare}`")
            } else {
                "use an IPv4 or IPv6 address such as `127.0.0.1` or `::1`, or leave it empty to listen on all addresses".into()
            };
            problems.push(
                diag::error(
                    "monitoring.listen-address",
                    "options.listen_address",
                    format!("`{}` is not an IP address", o.listen_address),
                )
                .suggest(fix),
            );
        }
        if !textfile_directory_ok(&o.textfile_directory) {
            problems.push(
                diag::error(
                    "monitoring.textfile-directory",
                    "options.textfile_directory",
                    format!("`{}` is not an absolute directory path the build can create", o.textfile_directory),
                )
                .suggest(format!("use `{DEFAULT_TEXTFILE_DIRECTORY}` or a path under /var/lib/, /srv/ or /opt/ without `..` or a trailing `/`")),
            );
        }
        if !is_duration(&o.retention, &['d', 'h', 'w', 'y']) {
            problems.push(
                diag::error(
                    "monitoring.retention",
                    "options.retention",
                    format!(
                        "retention `{}` must be a number above zero followed by d, h, w or y",
                        o.retention
                    ),
                )
                .suggest("use e.g. `15d`"),
            );
        }
        if !is_duration(&o.scrape_interval, &['s', 'm']) {
            problems.push(
                diag::error(
                    "monitoring.scrape-interval",
                    "options.scrape_interval",
                    format!(
                        "scrape_interval `{}` must be a number above zero followed by s or m",
                        o.scrape_interval
                    ),
                )
                .suggest("use e.g. `15s`"),
            );
        }
        if o.prometheus && o.prometheus_port == o.node_exporter_port {
            problems.push(
                diag::error(
                    "monitoring.port-clash",
                    "options.prometheus_port",
                    format!(
                        "Prometheus and the node exporter cannot both listen on port {}",
                        o.prometheus_port
                    ),
                )
                .suggest(format!(
                    "use the defaults: node_exporter_port {} and prometheus_port {}",
                    defaults.node_exporter_port, defaults.prometheus_port
                )),
            );
        }
        if !o.prometheus {
            let unused = [
                (
                    "options.prometheus_port",
                    o.prometheus_port != defaults.prometheus_port,
                ),
                ("options.retention", o.retention != defaults.retention),
                (
                    "options.scrape_interval",
                    o.scrape_interval != defaults.scrape_interval,
                ),
            ];
            for (path, set) in unused {
                if set {
                    problems.push(
                        diag::warning("monitoring.prometheus-disabled", path, "this option only applies to the Prometheus server, which is not enabled")
                            .suggest("set prometheus: true, or remove this option"),
                    );
                }
            }
        }
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let Ok(ip) = listen_ip(&ctx.options) else {
            return Err(vec![diag::error(
                "monitoring.listen-address",
                "options.listen_address",
                "is not an IP address",
            )]);
        };
        let o = &ctx.options;
        let open = !ip.is_some_and(|ip| ip.is_loopback());

        let mut packages = vec!["prometheus-node-exporter"];
        if o.systemd_collector {
            packages.push("dbus");
        }
        let mut args = vec![format!(
            "--web.listen-address={}",
            listen(ip, o.node_exporter_port)
        )];
        args.push(
            if o.systemd_collector {
                "--collector.systemd"
            } else {
                "--no-collector.systemd"
            }
            .into(),
        );
        args.push(format!(
            "--collector.textfile.directory={}",
            o.textfile_directory
        ));

        let mut steps = vec![
            step::install(&packages),
            step::write_file(
                "/etc/default/prometheus-node-exporter",
                &default_file("prometheus-node-exporter", &args),
            ),
        ];
        if o.textfile_directory != DEFAULT_TEXTFILE_DIRECTORY {
            // Debian's package creates only its default directory; writing a file creates this one.
            steps.push(step::write_file(
                &format!("{}/README", o.textfile_directory),
                "Files named *.prom here are exported by prometheus-node-exporter's textfile collector.\n",
            ));
        }
        steps.push(step::enable("prometheus-node-exporter.service"));
        if open {
            steps.push(step::open_tcp(o.node_exporter_port));
        }
        if o.prometheus {
            let args = vec![
                format!("--storage.tsdb.retention.time={}", o.retention),
                format!("--web.listen-address={}", listen(ip, o.prometheus_port)),
            ];
            steps.push(step::install(&["prometheus"]));
            steps.push(step::write_file(
                "/etc/prometheus/prometheus.yml",
                &prometheus_yml(o, ip),
            ));
            steps.push(step::write_file(
                "/etc/default/prometheus",
                &default_file("prometheus", &args),
            ));
            steps.push(step::enable("prometheus.service"));
            if open {
                steps.push(step::open_tcp(o.prometheus_port));
            }
        }
        Ok(steps)
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        let o = &ctx.options;
        let mut checks = vec![
            check::unit_active(
                "node-exporter-active",
                "the node exporter is running",
                "prometheus-node-exporter.service",
            ),
            check::tcp_port_open(
                "node-exporter-port",
                &format!(
                    "the node exporter listens on TCP port {}",
                    o.node_exporter_port
                ),
                o.node_exporter_port,
            ),
        ];
        if o.prometheus {
            checks.push(check::unit_active(
                "prometheus-active",
                "the Prometheus server is running",
                "prometheus.service",
            ));
            checks.push(check::tcp_port_open(
                "prometheus-port",
                &format!("Prometheus listens on TCP port {}", o.prometheus_port),
                o.prometheus_port,
            ));
        }
        checks
    }
}

export_feature!(Monitoring);
