//! `firewall`: an nftables host firewall that lets in only the ports the recipe declares.
//!
//! /etc/nftables.conf defines table `inet openfactory` and then includes
//! /etc/nftables.d/*.nft, where the executor writes one fragment per `open-port`
//! step (from this plugin for `networking.allowed_ports`, and from other features).

use openfactory_plugin_sdk::prelude::*;
use openfactory_plugin_sdk::recipe::PortView;
use serde::Serialize;

/// Features whose containers need packets forwarded through the host.
const CONTAINER_ENGINES: [&str; 2] = ["docker", "podman"];
const LOG_PREFIX: &str = "openfactory-drop: ";

/// What a chain does with packets that no rule accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Drop,
    Accept,
}

impl Policy {
    fn nft(self) -> &'static str {
        match self {
            Policy::Drop => "drop",
            Policy::Accept => "accept",
        }
    }
}

/// Options of the `firewall` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Fate of inbound packets that no rule accepts: `drop` (default) lets in only loopback traffic,
    /// replies to connections the machine opened, ICMP (see `allow_icmp`), DHCPv6 replies when
    /// `networking.dhcp` is on, and the ports opened by `networking.allowed_ports` and by other
    /// features (ssh, monitoring, …); `accept` lets everything in.
    pub input_policy: Policy,
    /// Fate of packets routed through the machine. Leave it unset (null) to get `accept` when docker or
    /// podman is in the recipe (container networking forwards packets) and `drop` otherwise.
    pub forward_policy: Option<Policy>,
    /// Accept ICMP and ICMPv6 (ping, path-MTU and error messages). IPv6 neighbour discovery is
    /// always accepted, since IPv6 cannot work without it.
    pub allow_icmp: bool,
    /// Log packets about to be dropped by a `drop` input or forward policy to the kernel log, at most
    /// 5 per minute per chain, with the prefix "openfactory-drop: ".
    pub log_dropped: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            input_policy: Policy::Drop,
            forward_policy: None,
            allow_icmp: true,
            log_dropped: false,
        }
    }
}

pub struct Firewall;

fn has_container_engine(recipe: &RecipeView) -> bool {
    CONTAINER_ENGINES
        .iter()
        .any(|name| recipe.has_feature(name))
}

/// The forward policy in effect: the option, else `accept` with a container engine and `drop` without.
fn forward_policy(ctx: &Context<Options>) -> Policy {
    let default = if has_container_engine(&ctx.recipe) {
        Policy::Accept
    } else {
        Policy::Drop
    };
    ctx.options.forward_policy.unwrap_or(default)
}

fn protocol(port: &PortView) -> Option<Protocol> {
    match port.protocol.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
    }
}

/// Problems with `networking.allowed_ports`, and the ports to open (each once, in recipe order).
fn allowed_ports(recipe: &RecipeView) -> (Vec<Port>, Vec<Diagnostic>) {
    let (mut ports, mut problems) = (Vec::<Port>::new(), Vec::new());
    for (i, entry) in recipe.networking.allowed_ports.iter().enumerate() {
        let path = format!("networking.allowed_ports[{i}]");
        let Some(proto) = protocol(entry) else {
            problems.push(
                diag::error(
                    "firewall.port-protocol",
                    &format!("{path}.protocol"),
                    format!("protocol `{}` is not supported", entry.protocol),
                )
                .suggest("use `tcp` or `udp`"),
            );
            continue;
        };
        if entry.port == 0 {
            problems.push(
                diag::error(
                    "firewall.invalid-port",
                    &format!("{path}.port"),
                    "port 0 cannot be opened",
                )
                .suggest("use a port between 1 and 65535"),
            );
        } else if ports
            .iter()
            .any(|p| p.port == entry.port && p.protocol == proto)
        {
            problems.push(
                diag::warning(
                    "firewall.duplicate-port",
                    &path,
                    format!(
                        "{} port {} is listed more than once",
                        entry.protocol, entry.port
                    ),
                )
                .suggest("remove the duplicate entry"),
            );
        } else {
            ports.push(Port {
                port: entry.port,
                protocol: proto,
            });
        }
    }
    (ports, problems)
}

fn ruleset(options: &Options, forward: Policy, containers: bool, dhcp: bool) -> String {
    let mut input = vec![
        "ct state established,related accept",
        "ct state invalid drop",
        "iif \"lo\" accept",
    ];
    if options.allow_icmp {
        input.push("meta l4proto { icmp, ipv6-icmp } accept");
    } else {
        input.push("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept");
    }
    if dhcp {
        // DHCPv6 replies come from the server's link-local address and are not tracked as replies.
        input.push("ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept");
    }
    let forward_rules: &[&str] = if forward == Policy::Drop {
        &[
            "ct state established,related accept",
            "ct state invalid drop",
        ]
    } else {
        &[]
    };

    let mut out = String::from(
        "#!/usr/sbin/nft -f\n# Written by OpenFactory (feature `firewall`). Open ports live in /etc/nftables.d/*.nft.\n\n",
    );
    if containers {
        out.push_str("# Reset only this table: the container engine's own tables survive `systemctl reload nftables`.\n");
        out.push_str("table inet openfactory\ndelete table inet openfactory\n\n");
    } else {
        out.push_str("flush ruleset\n\n");
    }
    out.push_str("table inet openfactory {\n");
    for (chain, policy, rules) in [
        ("input", options.input_policy, &input[..]),
        ("forward", forward, forward_rules),
        ("output", Policy::Accept, &[][..]),
    ] {
        out.push_str(&format!(
            "\tchain {chain} {{\n\t\ttype filter hook {chain} priority filter; policy {};\n",
            policy.nft()
        ));
        for rule in rules {
            out.push_str(&format!("\t\t{rule}\n"));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n\ninclude \"/etc/nftables.d/*.nft\"\n");

    let log = format!("limit rate 5/minute burst 10 packets log prefix \"{LOG_PREFIX}\"");
    let logged: Vec<&str> = [("input", options.input_policy), ("forward", forward)]
        .into_iter()
        .filter(|(_, policy)| options.log_dropped && *policy == Policy::Drop)
        .map(|(chain, _)| chain)
        .collect();
    if !logged.is_empty() {
        out.push_str("\n# Added after the fragments so that logging stays the last rule before the drop policy.\n");
        for chain in logged {
            out.push_str(&format!("add rule inet openfactory {chain} {log}\n"));
        }
    }
    out
}

impl Feature for Firewall {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "firewall",
            env!("CARGO_PKG_VERSION"),
            "nftables firewall that only lets in the ports the recipe opens",
            "network",
        )
        .reads(&["networking", "features"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let options = &ctx.options;
        let mut problems = Vec::new();
        if options.input_policy == Policy::Accept {
            problems.push(
                diag::warning("firewall.input-accept", "options.input_policy", "input_policy `accept` lets every inbound packet in, so the firewall protects nothing")
                    .suggest("use `drop` and open the needed ports in networking.allowed_ports"),
            );
        }
        if options.log_dropped
            && options.input_policy == Policy::Accept
            && forward_policy(ctx) == Policy::Accept
        {
            problems.push(
                diag::warning("firewall.log-without-drop", "options.log_dropped", "log_dropped has no effect: neither the input nor the forward policy drops packets")
                    .suggest("set input_policy to `drop`, or log_dropped to false"),
            );
        }
        if options.forward_policy == Some(Policy::Drop) && has_container_engine(&ctx.recipe) {
            problems.push(
                diag::warning("firewall.forward-drop-containers", "options.forward_policy", "forward_policy `drop` blocks the network traffic of docker/podman containers")
                    .suggest("remove forward_policy (it defaults to `accept` with containers) or set it to `accept`"),
            );
        }
        problems.extend(allowed_ports(&ctx.recipe).1);
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let (ports, problems) = allowed_ports(&ctx.recipe);
        let errors: Vec<Diagnostic> = problems
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let containers = has_container_engine(&ctx.recipe);
        let forward = forward_policy(ctx);
        let mut steps = vec![
            // nft resolves protocol names (`icmp`, `ipv6-icmp`) through
            // /etc/protocols, which minimal images lack without netbase.
            step::install(&["nftables", "netbase"]),
            step::write_file_with(
                "/etc/nftables.conf",
                &ruleset(
                    &ctx.options,
                    forward,
                    containers,
                    ctx.recipe.networking.dhcp,
                ),
                0o755,
                "root",
                "root",
            ),
            step::write_file(
                "/etc/nftables.d/00-openfactory.nft",
                "# Written by OpenFactory (feature `firewall`): keeps the include glob in /etc/nftables.conf matching.\n\
                 # Each opened port gets its own fragment here: add rule inet openfactory input <proto> dport <port> accept\n",
            ),
        ];
        steps.extend(ports.into_iter().map(Step::OpenPort));
        steps.push(step::enable("nftables.service"));
        Ok(steps)
    }

    fn checks(_ctx: &Context<Options>) -> Vec<BootCheck> {
        vec![
            check::unit_active(
                "nftables-active",
                "nftables loaded the ruleset at boot",
                "nftables.service",
            ),
            check::command_succeeds(
                "table-loaded",
                "the openfactory table is in the kernel",
                &["nft", "list", "table", "inet", "openfactory"],
            ),
        ]
    }
}

export_feature!(Firewall);
