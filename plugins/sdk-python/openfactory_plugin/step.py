"""Build steps, one function per kind (the ``step`` variant of wit/feature.wit)."""

from __future__ import annotations

from typing import Iterable, Optional

from wit_world.imports import types as t


def install(*packages: str) -> t.Step:
    return t.Step_InstallPackages(list(packages))


def remove(*packages: str) -> t.Step:
    return t.Step_RemovePackages(list(packages))


def write_file(path: str, content: str, mode: int = 0o644, owner: str = "root", group: str = "root") -> t.Step:
    """A file written into the image (root-owned, 0644 unless told)."""
    return t.Step_WriteFile(t.File(path, mode, owner, group, content))


def enable(unit: str) -> t.Step:
    return t.Step_EnableService(unit)


def disable(unit: str) -> t.Step:
    return t.Step_DisableService(unit)


def mask(unit: str) -> t.Step:
    return t.Step_MaskService(unit)


def group(name: str, system: bool = False) -> t.Step:
    return t.Step_AddGroup(t.Group(name, system))


def user(name: str, groups: Iterable[str] = (), shell: Optional[str] = None) -> t.Step:
    """Ensure a person's account exists, in ``groups`` (appended)."""
    return t.Step_AddUser(t.User(name, list(groups), shell, False))


def system_user(name: str) -> t.Step:
    """A system account: no home, no login."""
    return t.Step_AddUser(t.User(name, [], None, True))


def sysctl(key: str, value: str) -> t.Step:
    return t.Step_SetSysctl(t.Sysctl(key, value))


def open_tcp(port: int) -> t.Step:
    return t.Step_OpenPort(t.Port(port, t.Protocol.TCP))


def open_udp(port: int) -> t.Step:
    return t.Step_OpenPort(t.Port(port, t.Protocol.UDP))


def kernel_arg(arg: str) -> t.Step:
    return t.Step_AddKernelArg(arg)


def apt_source(name: str, uris: Iterable[str], suites: Iterable[str], components: Iterable[str], signed_by: str) -> t.Step:
    return t.Step_AddAptSource(t.AptSource(name, list(uris), list(suites), list(components), signed_by))


def run(description: str, *argv: str) -> t.Step:
    """Last resort: a command run inside the image's chroot (declare it in capabilities.toml)."""
    return t.Step_Run(t.Command(list(argv), description))
