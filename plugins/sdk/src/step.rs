//! Builders for build steps and boot checks.

use crate::{
    AptSource, BootCheck, CheckKind, Command, File, Group, Port, Protocol, Step, Sysctl, User,
};

fn strings<S: AsRef<str>>(xs: &[S]) -> Vec<String> {
    xs.iter().map(|s| s.as_ref().to_string()).collect()
}

pub fn install<S: AsRef<str>>(packages: &[S]) -> Step {
    Step::InstallPackages(strings(packages))
}

pub fn remove<S: AsRef<str>>(packages: &[S]) -> Step {
    Step::RemovePackages(strings(packages))
}

/// A root-owned file with mode 0644. Use [`write_file_with`] for other owners or modes.
pub fn write_file(path: &str, content: &str) -> Step {
    write_file_with(path, content, 0o644, "root", "root")
}

pub fn write_file_with(path: &str, content: &str, mode: u32, owner: &str, group: &str) -> Step {
    Step::WriteFile(File {
        path: path.into(),
        mode,
        owner: owner.into(),
        group: group.into(),
        content: content.into(),
    })
}

pub fn enable(unit: &str) -> Step {
    Step::EnableService(unit.into())
}

pub fn disable(unit: &str) -> Step {
    Step::DisableService(unit.into())
}

pub fn mask(unit: &str) -> Step {
    Step::MaskService(unit.into())
}

pub fn group(name: &str, system: bool) -> Step {
    Step::AddGroup(Group {
        name: name.into(),
        system,
    })
}

/// Ensure a user exists and belongs to `groups` (appended).
pub fn user<S: AsRef<str>>(name: &str, groups: &[S]) -> Step {
    Step::AddUser(User {
        name: name.into(),
        groups: strings(groups),
        shell: None,
        system: false,
    })
}

pub fn system_user(name: &str) -> Step {
    Step::AddUser(User {
        name: name.into(),
        groups: Vec::new(),
        shell: None,
        system: true,
    })
}

pub fn sysctl(key: &str, value: &str) -> Step {
    Step::SetSysctl(Sysctl {
        key: key.into(),
        value: value.into(),
    })
}

pub fn open_tcp(port: u16) -> Step {
    Step::OpenPort(Port {
        port,
        protocol: Protocol::Tcp,
    })
}

pub fn open_udp(port: u16) -> Step {
    Step::OpenPort(Port {
        port,
        protocol: Protocol::Udp,
    })
}

pub fn kernel_arg(arg: &str) -> Step {
    Step::AddKernelArg(arg.into())
}

pub fn apt_source<S: AsRef<str>>(
    name: &str,
    uris: &[S],
    suites: &[S],
    components: &[S],
    signed_by: &str,
) -> Step {
    Step::AddAptSource(AptSource {
        name: name.into(),
        uris: strings(uris),
        suites: strings(suites),
        components: strings(components),
        signed_by: signed_by.into(),
    })
}

/// Run a command inside the image's chroot. Prefer a typed step when one fits.
pub fn run<S: AsRef<str>>(description: &str, argv: &[S]) -> Step {
    Step::Run(Command {
        argv: strings(argv),
        description: description.into(),
    })
}

/// Boot checks.
pub mod check {
    use super::*;

    fn check(name: &str, description: &str, kind: CheckKind) -> BootCheck {
        BootCheck {
            name: name.into(),
            description: description.into(),
            kind,
            timeout_seconds: 120,
        }
    }

    pub fn unit_active(name: &str, description: &str, unit: &str) -> BootCheck {
        check(name, description, CheckKind::UnitActive(unit.into()))
    }

    pub fn command_succeeds<S: AsRef<str>>(name: &str, description: &str, argv: &[S]) -> BootCheck {
        check(name, description, CheckKind::CommandSucceeds(strings(argv)))
    }

    pub fn tcp_port_open(name: &str, description: &str, port: u16) -> BootCheck {
        check(
            name,
            description,
            CheckKind::PortOpen(Port {
                port,
                protocol: Protocol::Tcp,
            }),
        )
    }

    pub fn file_exists(name: &str, description: &str, path: &str) -> BootCheck {
        check(name, description, CheckKind::FileExists(path.into()))
    }

    pub fn package_installed(name: &str, description: &str, package: &str) -> BootCheck {
        check(
            name,
            description,
            CheckKind::PackageInstalled(package.into()),
        )
    }

    impl BootCheck {
        /// How long the check may keep retrying after boot (default 120 s).
        pub fn timeout(mut self, seconds: u32) -> Self {
            self.timeout_seconds = seconds;
            self
        }
    }
}
