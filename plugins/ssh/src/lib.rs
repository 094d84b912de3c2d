//! Feature `ssh`: the OpenSSH server, configured with an `sshd_config.d` drop-in.
//!
//! Debian's `/etc/ssh/sshd_config` starts with `Include /etc/ssh/sshd_config.d/*.conf`
//! and sshd keeps the first value it reads for a keyword, so the drop-in wins over
//! Debian's defaults (e.g. its `X11Forwarding yes`). Users' `authorized_keys` are
//! written by the host core, not here.

use openfactory_plugin_sdk::prelude::*;

const DROP_IN: &str = "/etc/ssh/sshd_config.d/50-openfactory.conf";
const HOST_KEYS_UNIT: &str = "openfactory-ssh-host-keys.service";
/// Host key types Debian's openssh-server may have generated (`dsa` only before bookworm).
const HOST_KEY_TYPES: [&str; 4] = ["rsa", "ecdsa", "ed25519", "dsa"];

/// Options of the `ssh` feature.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// TCP port sshd listens on (`Port`). It is opened in the image's firewall when the `firewall` feature is used.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Authentication attempts allowed per connection before sshd disconnects (`MaxAuthTries`).
    #[schemars(range(min = 1, max = 10))]
    pub max_auth_tries: u8,
    /// Allow X11 forwarding (`X11Forwarding`). When true, `xauth` is installed too.
    pub x11_forwarding: bool,
    /// Allow TCP port forwarding and tunnels through SSH (`AllowTcpForwarding`).
    pub allow_tcp_forwarding: bool,
    /// Seconds of client silence after which sshd sends a keep-alive probe (`ClientAliveInterval`); 0 disables probes.
    #[schemars(range(max = 86400))]
    pub client_alive_interval: u32,
    /// Delete the host keys generated while building the image and generate new ones on each machine's first boot (oneshot unit ordered before ssh.service), so machines built from one image never share host keys.
    pub regenerate_host_keys: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 22,
            max_auth_tries: 3,
            x11_forwarding: false,
            allow_tcp_forwarding: false,
            client_alive_interval: 300,
            regenerate_host_keys: true,
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn sshd_config(ctx: &Context<Options>) -> String {
    let o = &ctx.options;
    let security = &ctx.recipe.security;
    // `prohibit-password` lets root in with a key only; never with a password.
    let root = if security.root_login {
        "prohibit-password"
    } else {
        "no"
    };
    format!(
        "# Managed by OpenFactory (feature `ssh`); rebuild the image to change it.\n\
         Port {}\n\
         PermitRootLogin {root}\n\
         PasswordAuthentication {}\n\
         KbdInteractiveAuthentication no\n\
         MaxAuthTries {}\n\
         X11Forwarding {}\n\
         AllowTcpForwarding {}\n\
         ClientAliveInterval {}\n",
        o.port,
        yes_no(security.password_authentication),
        o.max_auth_tries,
        yes_no(o.x11_forwarding),
        yes_no(o.allow_tcp_forwarding),
        o.client_alive_interval,
    )
}

/// Generates whatever host keys are missing before sshd starts. `ssh-keygen -A`
/// only creates missing keys, so it is harmless on later boots and after
/// trixie's own `sshd-keygen.service` (which runs only when systemd sees a first boot).
const HOST_KEYS_UNIT_TEXT: &str = "\
# Managed by OpenFactory (feature `ssh`).
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service ssh.socket
After=sshd-keygen.service
ConditionPathIsReadWrite=/etc/ssh

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
";

pub struct Ssh;

impl Feature for Ssh {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "ssh",
            env!("CARGO_PKG_VERSION"),
            "OpenSSH server with a hardened sshd configuration",
            "access",
        )
        .reads(&["users", "security"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        let security = &ctx.recipe.security;
        let any_key = ctx
            .recipe
            .users
            .iter()
            .any(|u| u.ssh_authorized_keys.iter().any(|k| !k.trim().is_empty()));
        // Root login is `prohibit-password` at most, so without keys and passwords nobody gets in.
        if !any_key && !security.password_authentication {
            problems.push(
                diag::warning(
                    "ssh.no-login-path",
                    "users",
                    "no user has ssh_authorized_keys and password authentication is off, so nobody can log in over SSH",
                )
                .suggest("add a public key to ssh_authorized_keys of one of the users"),
            );
        }
        if security.password_authentication {
            problems.push(
                diag::warning(
                    "ssh.password-authentication",
                    "security.password_authentication",
                    "SSH password authentication is on, which exposes the image to password guessing",
                )
                .suggest("give users ssh_authorized_keys and set security.password_authentication to false"),
            );
        }
        if !ctx.options.regenerate_host_keys {
            problems.push(
                diag::warning(
                    "ssh.shared-host-keys",
                    "options.regenerate_host_keys",
                    "every machine built from this image will share the SSH host keys generated at build time",
                )
                .suggest("set regenerate_host_keys to true"),
            );
        }
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let o = &ctx.options;
        let mut packages = vec!["openssh-server"];
        if o.x11_forwarding {
            packages.push("xauth");
        }
        let mut steps = vec![
            step::install(&packages),
            step::write_file(DROP_IN, &sshd_config(ctx)),
        ];
        if o.regenerate_host_keys {
            // `rm` on named files rather than `find -delete`: `find` can run
            // anything (`-exec`), so it needs the `interpreter` privilege, and
            // argv is not globbed; `-f` because bookworm and trixie make no DSA key.
            let mut argv = vec!["rm".to_owned(), "-f".to_owned()];
            for kind in HOST_KEY_TYPES {
                argv.push(format!("/etc/ssh/ssh_host_{kind}_key"));
                argv.push(format!("/etc/ssh/ssh_host_{kind}_key.pub"));
            }
            steps.push(step::run(
                "remove the SSH host keys generated at build time; each machine generates its own on first boot",
                &argv,
            ));
            steps.push(step::write_file(
                &format!("/etc/systemd/system/{HOST_KEYS_UNIT}"),
                HOST_KEYS_UNIT_TEXT,
            ));
            steps.push(step::enable(HOST_KEYS_UNIT));
        }
        steps.push(step::enable("ssh.service"));
        steps.push(step::open_tcp(o.port));
        Ok(steps)
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        let mut checks = vec![
            check::unit_active(
                "sshd-active",
                "the OpenSSH server is running",
                "ssh.service",
            ),
            check::tcp_port_open(
                "port-open",
                &format!("sshd listens on TCP port {}", ctx.options.port),
                ctx.options.port,
            ),
            check::command_succeeds(
                "config-valid",
                "sshd accepts its configuration and host keys",
                &["/usr/sbin/sshd", "-t"],
            ),
        ];
        if ctx.options.regenerate_host_keys {
            checks.push(check::file_exists(
                "host-keys",
                "this machine generated its own ed25519 host key",
                "/etc/ssh/ssh_host_ed25519_key",
            ));
        }
        checks
    }
}

export_feature!(Ssh);
