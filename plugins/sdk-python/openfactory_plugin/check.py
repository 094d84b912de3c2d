"""Boot checks: what proves the feature works in a booted image."""

from __future__ import annotations

from wit_world.imports import types as t

#: How long a check may keep retrying after boot, unless told.
DEFAULT_TIMEOUT_SECONDS = 120


def _check(name: str, description: str, kind, timeout: int) -> t.BootCheck:
    return t.BootCheck(name, description, kind, timeout)


def unit_active(name: str, description: str, unit: str, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> t.BootCheck:
    return _check(name, description, t.CheckKind_UnitActive(unit), timeout)


def command_succeeds(name: str, description: str, *argv: str, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> t.BootCheck:
    return _check(name, description, t.CheckKind_CommandSucceeds(list(argv)), timeout)


def tcp_port_open(name: str, description: str, port: int, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> t.BootCheck:
    return _check(name, description, t.CheckKind_PortOpen(t.Port(port, t.Protocol.TCP)), timeout)


def file_exists(name: str, description: str, path: str, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> t.BootCheck:
    return _check(name, description, t.CheckKind_FileExists(path), timeout)


def package_installed(name: str, description: str, package: str, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> t.BootCheck:
    return _check(name, description, t.CheckKind_PackageInstalled(package), timeout)
