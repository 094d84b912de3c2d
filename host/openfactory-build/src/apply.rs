//! The apply stage: each typed step of the plan given its meaning inside the
//! image root (the table in `openfactory_core::step` says what each means).

use openfactory_core::Plan;
use openfactory_core::plan::PlannedStep;
use openfactory_core::step::{AptSource, FileStep, Step, UserStep};

use crate::chroot::{ImageRoot, RootError};
use crate::command::Runner;
use crate::error::{BuildError, Result};
use crate::lock::FileLock;
use crate::progress::Stage;

/// `invoke-rc.d` asks this before starting a service; 101 means "not now".
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// argv for an apt-get call that never asks and keeps existing configuration.
pub fn apt_get(args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "apt-get",
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-o",
        "Dpkg::Use-Pty=0",
        "-o",
        "APT::Keep-Downloaded-Packages=true",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// File name of the drop-in for one sysctl key (`/` separators become `.`).
pub fn sysctl_path(key: &str) -> String {
    format!(
        "/etc/sysctl.d/90-openfactory-{}.conf",
        key.replace('/', ".")
    )
}

/// The nftables fragment that opens one port (see the firewall feature).
pub fn port_fragment(port: u16, protocol: &str) -> (String, String) {
    (
        format!("/etc/nftables.d/50-open-{protocol}-{port}.nft"),
        format!("add rule inet openfactory input {protocol} dport {port} accept\n"),
    )
}

/// A deb822 source and its key file.
pub fn apt_source_files(source: &AptSource) -> [(String, String); 2] {
    let key = format!("/etc/apt/keyrings/openfactory-{}.asc", source.name);
    let list = format!(
        "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {key}\n",
        source.uris.join(" "),
        source.suites.join(" "),
        source.components.join(" "),
    );
    [
        (key.clone(), source.signed_by.clone()),
        (
            format!(
                "/etc/apt/sources.list.d/openfactory-{}.sources",
                source.name
            ),
            list,
        ),
    ]
}

/// argv to create a user that does not exist yet.
pub fn useradd(user: &UserStep) -> Vec<String> {
    let mut argv = vec!["useradd".to_owned()];
    if user.system {
        argv.extend(["--system", "--no-create-home"].map(String::from));
    } else {
        argv.extend(["--create-home", "--user-group"].map(String::from));
    }
    if let Some(shell) = &user.shell {
        argv.extend(["--shell".to_owned(), shell.clone()]);
    }
    if !user.groups.is_empty() {
        argv.extend(["--groups".to_owned(), user.groups.join(",")]);
    }
    argv.push(user.name.clone());
    argv
}

/// Runs a plan's steps in an image root.
pub struct Applier<'a> {
    pub root: &'a ImageRoot,
    pub runner: &'a Runner<'a>,
    /// Held around apt calls: the package cache is shared between builds.
    pub apt_lock: &'a std::path::Path,
    /// Kernel arguments the steps asked for, in order.
    pub kernel_args: Vec<String>,
    lists_fresh: bool,
}

impl<'a> Applier<'a> {
    pub fn new(root: &'a ImageRoot, runner: &'a Runner<'a>, apt_lock: &'a std::path::Path) -> Self {
        Applier {
            root,
            runner,
            apt_lock,
            kernel_args: Vec::new(),
            lists_fresh: false,
        }
    }

    /// Run every step of the plan, reporting progress after each.
    pub fn apply_plan(&mut self, plan: &Plan) -> Result<()> {
        self.root
            .write(POLICY_RC_D, b"#!/bin/sh\nexit 101\n", 0o755, "root", "root")
            .map_err(stage_error)?;
        let total = plan.steps.len().max(1);
        for (i, planned) in plan.steps.iter().enumerate() {
            let PlannedStep { source, step } = planned;
            self.runner.log.progress(
                Stage::Apply,
                i as f64 / total as f64,
                // A step's words come from a plugin: shown, never obeyed by a terminal.
                &format!(
                    "step {}/{}: {source}: {}",
                    i + 1,
                    plan.steps.len(),
                    openfactory_core::rules::printable(&step.to_string(), 300)
                ),
            );
            if self.runner.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            self.apply(step).map_err(|e| {
                if matches!(
                    &e,
                    RootError::Command(crate::command::CommandError::Cancelled)
                ) {
                    return BuildError::Cancelled;
                }
                BuildError::Step {
                    index: i + 1,
                    source_: source.clone(),
                    step: step.to_string(),
                    detail: e.summary(),
                }
            })?;
        }
        Ok(())
    }

    fn apt(&mut self, args: &[&str]) -> Result<(), RootError> {
        let _lock = FileLock::exclusive(self.apt_lock).map_err(|e| RootError::Io {
            path: self.apt_lock.display().to_string(),
            source: e,
        })?;
        if !self.lists_fresh {
            self.root.run(self.runner, &apt_get(&["update"]))?;
            self.lists_fresh = true;
        }
        self.root.run(self.runner, &apt_get(args))
    }

    fn write(&self, file: &FileStep) -> Result<(), RootError> {
        self.root.write(
            &file.path,
            file.content.as_bytes(),
            file.mode,
            &file.owner,
            &file.group,
        )
    }

    fn root_file(&self, path: &str, content: &str) -> Result<(), RootError> {
        self.root
            .write(path, content.as_bytes(), 0o644, "root", "root")
    }

    /// Give one step its meaning.
    pub fn apply(&mut self, step: &Step) -> Result<(), RootError> {
        let run = |argv: Vec<String>| self.root.run(self.runner, &argv);
        match step {
            Step::InstallPackages { packages } => {
                let mut args = vec!["install", "--no-install-recommends"];
                args.extend(packages.iter().map(String::as_str));
                self.apt(&args)
            }
            Step::RemovePackages { packages } => {
                let mut args = vec!["purge"];
                args.extend(packages.iter().map(String::as_str));
                self.apt(&args)
            }
            Step::WriteFile(file) => self.write(file),
            Step::EnableService { unit } => {
                run(vec!["systemctl".into(), "enable".into(), unit.clone()])
            }
            Step::DisableService { unit } => {
                run(vec!["systemctl".into(), "disable".into(), unit.clone()])
            }
            Step::MaskService { unit } => {
                run(vec!["systemctl".into(), "mask".into(), unit.clone()])
            }
            Step::AddGroup { name, system } => {
                if self.root.has_account("/etc/group", name) {
                    return Ok(());
                }
                let mut argv = vec!["groupadd".to_owned()];
                if *system {
                    argv.push("--system".into());
                }
                argv.push(name.clone());
                run(argv)
            }
            Step::AddUser(user) => {
                if self.root.has_account("/etc/passwd", &user.name) {
                    if !user.groups.is_empty() {
                        run(vec![
                            "usermod".into(),
                            "--append".into(),
                            "--groups".into(),
                            user.groups.join(","),
                            user.name.clone(),
                        ])?;
                    }
                    if let Some(shell) = &user.shell {
                        run(vec![
                            "usermod".into(),
                            "--shell".into(),
                            shell.clone(),
                            user.name.clone(),
                        ])?;
                    }
                } else {
                    run(useradd(user))?;
                }
                if let Some(hash) = &user.password_hash {
                    // On stdin, never in argv: argv is visible to every process.
                    self.root.run_with_input(
                        self.runner,
                        &["chpasswd".into(), "--encrypted".into()],
                        format!("{}:{hash}\n", user.name).as_bytes(),
                    )?;
                }
                Ok(())
            }
            Step::SetSysctl { key, value } => {
                self.root_file(&sysctl_path(key), &format!("{key} = {value}\n"))
            }
            Step::OpenPort { port, protocol } => {
                let (path, content) = port_fragment(*port, &protocol.to_string());
                self.root_file(&path, &content)
            }
            Step::AddKernelArg { arg } => {
                if !self.kernel_args.contains(arg) {
                    self.kernel_args.push(arg.clone());
                }
                Ok(())
            }
            Step::AddAptSource(source) => {
                for (path, content) in apt_source_files(source) {
                    self.root_file(&path, &content)?;
                }
                self.lists_fresh = false;
                Ok(())
            }
            Step::Run { argv, .. } => run(argv.clone()),
        }
    }
}

fn stage_error(e: RootError) -> BuildError {
    BuildError::Stage {
        stage: Stage::Apply,
        detail: e.summary(),
    }
}

/// Files that differ on every build for no reason the image needs, and the
/// host keys that must never be shared by every machine booting the image.
const VOLATILE: &[&str] = &[
    POLICY_RC_D,
    "/var/log/apt",
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/log/bootstrap.log",
    "/var/cache/debconf/config.dat-old",
    "/var/cache/debconf/templates.dat-old",
    "/var/lib/dpkg/status-old",
    "/var/lib/dpkg/diversions-old",
    "/var/lib/dpkg/statoverride-old",
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/dbus/machine-id",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
];

/// Generates the SSH host keys a machine needs at its first boot.
pub const SSH_KEYGEN_UNIT: &str = "[Unit]\n\
Description=Generate this machine's SSH host keys (OpenFactory images ship none)\n\
Before=ssh.service\n\
ConditionPathExists=/usr/bin/ssh-keygen\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart=/usr/bin/ssh-keygen -A\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";

/// Leave the root as an image should be: no apt lists, no logs of the build,
/// an empty machine id (systemd makes one at boot), no SSH host keys.
pub fn tidy(root: &ImageRoot, runner: &Runner) -> Result<(), RootError> {
    if root.exists("/usr/sbin/sshd")
        && !root.exists("/etc/systemd/system/openfactory-ssh-keygen.service")
    {
        root.write(
            "/etc/systemd/system/openfactory-ssh-keygen.service",
            SSH_KEYGEN_UNIT.as_bytes(),
            0o644,
            "root",
            "root",
        )?;
        root.run(
            runner,
            &[
                "systemctl".into(),
                "enable".into(),
                "openfactory-ssh-keygen.service".into(),
            ],
        )?;
    }
    for path in VOLATILE {
        root.remove(path)?;
    }
    root.clear_dir("/var/lib/apt/lists")?;
    root.clear_dir("/var/cache/apt/archives")?;
    for cache in [
        "/var/cache/apt/pkgcache.bin",
        "/var/cache/apt/srcpkgcache.bin",
    ] {
        root.remove(cache)?;
    }
    // The build host's resolver must not travel with the image.
    if root
        .host_path("/etc/resolv.conf")
        .is_ok_and(|p| p.is_file())
        && !root.is_symlink("/etc/resolv.conf")
    {
        root.write("/etc/resolv.conf", b"", 0o644, "root", "root")?;
    }
    if root.exists("/etc/machine-id") {
        root.write("/etc/machine-id", b"", 0o444, "root", "root")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_never_asks() {
        let argv = apt_get(&["install", "--no-install-recommends", "vim"]);
        assert_eq!(argv[..3], ["apt-get", "-y", "-q"]);
        assert!(argv.contains(&"Dpkg::Options::=--force-confold".to_owned()));
        assert_eq!(argv.last().unwrap(), "vim");
    }

    #[test]
    fn step_files_have_stable_names() {
        assert_eq!(
            sysctl_path("net/ipv4/ip_forward"),
            "/etc/sysctl.d/90-openfactory-net.ipv4.ip_forward.conf"
        );
        let (path, rule) = port_fragment(22, "tcp");
        assert_eq!(path, "/etc/nftables.d/50-open-tcp-22.nft");
        assert_eq!(
            rule,
            "add rule inet openfactory input tcp dport 22 accept\n"
        );
    }

    #[test]
    fn users_get_home_and_group_unless_system() {
        let user = UserStep {
            name: "alice".into(),
            groups: vec!["sudo".into(), "docker".into()],
            shell: Some("/bin/bash".into()),
            system: false,
            password_hash: Some("$6$secret".into()),
        };
        let argv = useradd(&user);
        assert_eq!(
            argv,
            [
                "useradd",
                "--create-home",
                "--user-group",
                "--shell",
                "/bin/bash",
                "--groups",
                "sudo,docker",
                "alice"
            ]
        );
        assert!(!argv.iter().any(|a| a.contains("secret")));
        let system = useradd(&UserStep {
            system: true,
            groups: vec![],
            shell: None,
            ..user
        });
        assert_eq!(system, ["useradd", "--system", "--no-create-home", "alice"]);
    }

    #[test]
    fn apt_sources_are_deb822_with_their_key() {
        let [key, list] = apt_source_files(&AptSource {
            name: "docker".into(),
            uris: vec!["https://download.docker.com/linux/debian".into()],
            suites: vec!["bookworm".into()],
            components: vec!["stable".into()],
            signed_by: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n...".into(),
        });
        assert_eq!(key.0, "/etc/apt/keyrings/openfactory-docker.asc");
        assert_eq!(list.0, "/etc/apt/sources.list.d/openfactory-docker.sources");
        assert!(
            list.1
                .contains("Signed-By: /etc/apt/keyrings/openfactory-docker.asc\n")
        );
    }
}
