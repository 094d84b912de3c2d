"""Single-file bundles and OCI registries, through the CLI a plugin author and an operator use.

`plugin pack` writes `NAME-VERSION.ofbundle`; `plugin install` takes a file, a directory or
`oci://REGISTRY/REPO:TAG` (or `@sha256:…`); `plugin push` sends a bundle to a real registry
(Debian's docker-registry, started by `.ci/run` / `cargo xtask registry`, else by this file);
`serve --plugin` installs bundles before it starts. Verification is as strict from a file or a
registry as from a directory: signature, digests, no link, no special file, no path that leaves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import ofmcp

REPO = Path(__file__).resolve().parents[2]
BUNDLES = Path(os.environ.get("OPENFACTORY_BUNDLES") or REPO / "target/bundles")
PROJECT_KEY = os.environ.get("OPENFACTORY_PROJECT_KEY") or str(REPO / "target/signing/project.pub")
REGISTRY_BINARY = "/usr/bin/docker-registry"


def run(of_bin: str, home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [of_bin, "--home", str(home), *args], env=env or ofmcp.server_env(), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def refused(p: subprocess.CompletedProcess) -> str:
    assert p.returncode != 0, f"accepted:\n{p.stdout}"
    assert "panicked" not in p.stderr, p.stderr
    return p.stderr


def trusted_home(of_bin: str, path: Path) -> Path:
    path.mkdir(parents=True)
    ok(run(of_bin, path, "plugin", "trust", PROJECT_KEY))
    return path


def installed(home: Path) -> list[str]:
    plugins = home / "plugins"
    return sorted(p.name for p in plugins.iterdir() if not p.name.startswith(".")) if plugins.exists() else []


def leftovers(home: Path) -> list[str]:
    plugins = home / "plugins"
    return sorted(p.name for p in plugins.iterdir() if p.name.startswith(".") and p.name != ".grants") if plugins.exists() else []


def pack_ssh(of_bin: str, home: Path, out: Path) -> str:
    ssh = BUNDLES / "ssh"
    key = REPO / "target/signing/project.key"
    return ok(
        run(of_bin, home, "plugin", "pack", str(ssh / "plugin.wasm"), "--capabilities", str(REPO / "plugins/ssh/capabilities.toml"), "--key", str(key), "--out", str(out))
    )


# --------------------------------------------------------------------------- registries


def start_registry(workdir: Path, htpasswd: str | None = None) -> tuple[subprocess.Popen, str]:
    """A docker-registry of this test's own on a free port (anonymous, or behind htpasswd)."""
    assert os.access(REGISTRY_BINARY, os.X_OK), "docker-registry is not installed (apt-get install docker-registry)"
    workdir.mkdir(parents=True, exist_ok=True)
    port = ofmcp.free_port()
    config = f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {workdir}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    if htpasswd:
        (workdir / "htpasswd").write_text(htpasswd)
        config += f"auth:\n  htpasswd:\n    realm: test\n    path: {workdir}/htpasswd\n"
    (workdir / "config.yml").write_text(config)
    proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(workdir / "config.yml")], stdout=subprocess.DEVNULL, stderr=(workdir / "log").open("wb"))
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=1)
            return proc, address
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return proc, address
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"docker-registry did not start:\n{(workdir / 'log').read_text()}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """The registry `.ci/run` started (OPENFACTORY_TEST_REGISTRY), else one of this module's own."""
    address = os.environ.get("OPENFACTORY_TEST_REGISTRY")
    if address:
        yield address
        return
    proc, address = start_registry(tmp_path_factory.mktemp("registry"))
    yield address
    proc.kill()
    proc.wait()


def repo(registry: str, name: str) -> str:
    """A repository no other run of the suite uses."""
    return f"oci://{registry}/test-{uuid.uuid4().hex[:10]}/{name}"


# --------------------------------------------------------------------------- single files


def test_a_bundle_packs_to_one_file_that_verifies_and_installs(of_bin, tmp_path):
    home = trusted_home(of_bin, tmp_path / "home")
    # Without --out: NAME-VERSION.ofbundle in the current directory.
    work = tmp_path / "work"
    work.mkdir()
    ssh = BUNDLES / "ssh"
    said = ok(
        run(of_bin, home, "plugin", "pack", str(ssh / "plugin.wasm"), "--capabilities", str(REPO / "plugins/ssh/capabilities.toml"), "--key", str(REPO / "target/signing/project.key"), cwd=work)
    )
    file = work / "ssh-0.1.0.ofbundle"
    assert file.is_file() and "into ssh-0.1.0.ofbundle (signed)" in said, said
    # The same bundle packs to the same bytes, whenever and wherever it is packed.
    again = tmp_path / "again.ofbundle"
    pack_ssh(of_bin, home, again)
    assert hashlib.sha256(file.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    with tarfile.open(file) as tar:
        names = tar.getnames()
        assert names[:3] == ["manifest.toml", "signature.toml", "plugin.wasm"], names
        assert all(m.mtime == 315532800 and m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    assert "ssh 0.1.0: OK (signed by" in ok(run(of_bin, home, "plugin", "verify", str(file)))
    out = ok(run(of_bin, home, "plugin", "install", str(file)))
    assert out.startswith("installed ssh 0.1.0 (signed by") and "may touch:" in out, out
    assert installed(home) == ["ssh"] and leftovers(home) == []
    assert "ssh" in ok(run(of_bin, home, "plugin", "list"))


def hostile_file(path: Path, base: Path, extra: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> Path:
    """The ssh bundle file with `extra` entries appended."""
    with tarfile.open(base) as src, tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as out:
        for member in src.getmembers():
            out.addfile(member, src.extractfile(member))
        for item in extra:
            if isinstance(item, tuple):
                info, data = item
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(item)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_hostile_bundle_files_are_refused_and_nothing_lands(of_bin, tmp_path):
    home = trusted_home(of_bin, tmp_path / "home")
    base = tmp_path / "ssh-0.1.0.ofbundle"
    pack_ssh(of_bin, home, base)
    cases = {
        "symlink": ([entry("assets/passwd", tarfile.SYMTYPE, "/etc/passwd")], "symbolic link"),
        "hardlink": ([entry("assets/hard", tarfile.LNKTYPE, "plugin.wasm")], "hard link"),
        "device": ([entry("assets/null", tarfile.CHRTYPE)], "character device"),
        "fifo": ([entry("assets/fifo", tarfile.FIFOTYPE)], "FIFO"),
        "dotdot": ([(entry("assets/../../../tmp/escaped"), b"x")], "leaves the bundle"),
        "absolute": ([(entry("/tmp/escaped-abs"), b"x")], "absolute"),
        "twice": ([(entry("plugin.wasm"), b"\0asm")], "twice"),
        "unlisted": ([(entry("assets/planted.txt"), b"x")], "does not list"),
    }
    for name, (extra, says) in cases.items():
        file = hostile_file(tmp_path / f"{name}.ofbundle", base, extra)
        error = refused(run(of_bin, home, "plugin", "install", str(file)))
        assert says in error, f"{name}: {error}"
        assert error.startswith("error: bundle"), f"{name}: {error}"
    assert not Path("/tmp/escaped").exists() and not Path("/tmp/escaped-abs").exists()
    # One byte changed inside the component: the digest says so.
    data = bytearray(base.read_bytes())
    at = data.find(b"\0asm") + 64
    data[at] ^= 0xFF
    tampered = tmp_path / "tampered.ofbundle"
    tampered.write_bytes(bytes(data))
    assert "does not match its digest" in refused(run(of_bin, home, "plugin", "install", str(tampered)))
    # Not a tar at all.
    junk = tmp_path / "junk.ofbundle"
    junk.write_bytes(b"MZ" + os.urandom(4096))
    assert "not a bundle file" in refused(run(of_bin, home, "plugin", "install", str(junk)))
    assert installed(home) == [] and leftovers(home) == []


# --------------------------------------------------------------------------- OCI


def test_a_bundle_pushed_to_a_registry_installs_by_tag_or_pinned_digest(of_bin, tmp_path, registry):
    author = trusted_home(of_bin, tmp_path / "author")
    file = tmp_path / "ssh-0.1.0.ofbundle"
    pack_ssh(of_bin, author, file)
    where = repo(registry, "ssh")
    pushed = ok(run(of_bin, author, "plugin", "push", str(file), f"{where}:0.1.0"))
    digest = next(line.split(": ", 1)[1] for line in pushed.splitlines() if line.startswith("digest: "))
    assert digest.startswith("sha256:") and len(digest) == 71, pushed
    assert f"openfactory plugin install {where}@{digest}" in pushed, pushed
    # The artifact as the registry holds it: one layer, the very file, and our artifact type.
    name = where.removeprefix(f"oci://{registry}/")
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/0.1.0", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    manifest = json.load(urllib.request.urlopen(request, timeout=10))
    assert manifest["artifactType"] == "application/vnd.openfactory.plugin.bundle.v1"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.openfactory.plugin.bundle.v1.tar"
    assert layer["digest"] == "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    assert layer["annotations"]["org.opencontainers.image.title"] == "ssh-0.1.0.ofbundle"
    # A bundle directory pushes to the same bytes, so the same digest.
    again = ok(run(of_bin, author, "plugin", "push", str(BUNDLES / "ssh"), f"{where}:again"))
    assert f"digest: {digest}" in again, again

    by_tag = trusted_home(of_bin, tmp_path / "by-tag")
    assert ok(run(of_bin, by_tag, "plugin", "install", f"{where}:0.1.0")).startswith("installed ssh 0.1.0 (signed by")
    pinned = trusted_home(of_bin, tmp_path / "pinned")
    ok(run(of_bin, pinned, "plugin", "install", f"{where}@{digest}"))
    assert installed(by_tag) == installed(pinned) == ["ssh"]
    assert "ssh 0.1.0: OK" in ok(run(of_bin, pinned, "plugin", "verify", "ssh"))

    # What must not install, each with a message that says why, and nothing left behind.
    other = trusted_home(of_bin, tmp_path / "other")
    wrong_digest = "sha256:" + "0" * 64
    assert "not found in the registry" in refused(run(of_bin, other, "plugin", "install", f"{where}@{wrong_digest}"))
    assert "not found in the registry" in refused(run(of_bin, other, "plugin", "install", f"{where}:9.9.9"))
    assert "no tag" in refused(run(of_bin, other, "plugin", "install", where))
    assert "oci://REGISTRY/REPOSITORY:TAG" in refused(run(of_bin, other, "plugin", "install", "oci://no-registry/ssh:1"))
    assert installed(other) == [] and leftovers(other) == []


def test_a_registry_is_only_a_carrier_trust_stays_with_the_signer(of_bin, tmp_path, registry):
    author = trusted_home(of_bin, tmp_path / "author")
    # A stranger's key signs a copy of ssh: the registry takes it, an operator does not.
    ok(run(of_bin, author, "plugin", "keygen", str(tmp_path / "stranger"), "--comment", "a stranger"))
    stranger = tmp_path / "ssh-stranger.ofbundle"
    ok(
        run(of_bin, author, "plugin", "pack", str(BUNDLES / "ssh/plugin.wasm"), "--capabilities", str(REPO / "plugins/ssh/capabilities.toml"), "--key", str(tmp_path / "stranger"), "--out", str(stranger))
    )
    where = repo(registry, "ssh")
    ok(run(of_bin, author, "plugin", "push", str(stranger), f"{where}:0.1.0"))
    operator = trusted_home(of_bin, tmp_path / "operator")
    assert "not signed by a trusted key" in refused(run(of_bin, operator, "plugin", "install", f"{where}:0.1.0"))
    # Something else under a plugin's name: another artifact type is not a bundle.
    name = where.removeprefix(f"oci://{registry}/").replace("/ssh", "/other")
    config = b"{}"
    for blob in (config, b"not a bundle"):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        start = urllib.request.urlopen(urllib.request.Request(f"http://{registry}/v2/{name}/blobs/uploads/", method="POST"), timeout=10)
        location = start.headers["Location"]
        location = location if location.startswith("http") else f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        urllib.request.urlopen(urllib.request.Request(f"{location}{sep}digest={digest}", data=blob, method="PUT", headers={"Content-Type": "application/octet-stream"}), timeout=10)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.other",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": "sha256:" + hashlib.sha256(b"not a bundle").hexdigest(), "size": 12}],
        }
    ).encode()
    urllib.request.urlopen(
        urllib.request.Request(f"http://{registry}/v2/{name}/manifests/1", data=body, method="PUT", headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}), timeout=10
    )
    error = refused(run(of_bin, operator, "plugin", "install", f"oci://{registry}/{name}:1"))
    assert "not an OpenFactory plugin bundle" in error and "application/vnd.example.other" in error, error
    assert installed(operator) == [] and leftovers(operator) == []


def test_registry_credentials_come_from_dockers_config(of_bin, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's crypt(3) does bcrypt, which the registry's htpasswd wants

    hashed = crypt.crypt("s3cret-pass", "$2b$05$" + base64.b64encode(os.urandom(16), b"./").decode()[:22])
    proc, address = start_registry(tmp_path / "private", htpasswd=f"author:{hashed}\n")
    try:
        author = trusted_home(of_bin, tmp_path / "author")
        file = tmp_path / "ssh-0.1.0.ofbundle"
        pack_ssh(of_bin, author, file)
        env = ofmcp.server_env()
        env["DOCKER_CONFIG"] = str(tmp_path / "no-docker")
        error = refused(run(of_bin, author, "plugin", "push", str(file), f"oci://{address}/plugins/ssh:0.1.0", env=env))
        assert "docker login" in error, error
        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(b"author:s3cret-pass").decode()
        (docker / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))
        env["DOCKER_CONFIG"] = str(docker)
        ok(run(of_bin, author, "plugin", "push", str(file), f"oci://{address}/plugins/ssh:0.1.0", env=env))
        operator = trusted_home(of_bin, tmp_path / "operator")
        ok(run(of_bin, operator, "plugin", "install", f"oci://{address}/plugins/ssh:0.1.0", env=env))
        assert installed(operator) == ["ssh"]
        # A wrong password is refused by the registry, in words that say what to do.
        (docker / "config.json").write_text(json.dumps({"auths": {address: {"auth": base64.b64encode(b"author:wrong").decode()}}}))
        assert "docker login" in refused(run(of_bin, trusted_home(of_bin, tmp_path / "third"), "plugin", "install", f"oci://{address}/plugins/ssh:0.1.0", env=env))
    finally:
        proc.kill()
        proc.wait()


def test_serve_installs_the_bundles_it_is_told_to_before_it_starts(of_bin, tmp_path, registry):
    author = trusted_home(of_bin, tmp_path / "author")
    ssh = tmp_path / "ssh-0.1.0.ofbundle"
    pack_ssh(of_bin, author, ssh)
    where = repo(registry, "ssh")
    pushed = ok(run(of_bin, author, "plugin", "push", str(ssh), f"{where}:0.1.0"))
    pinned = next(line.split("install it with: openfactory plugin install ", 1)[1] for line in pushed.splitlines() if "install it with" in line)
    home = trusted_home(of_bin, tmp_path / "home")
    args = ("--plugin", pinned, "--plugin", str(BUNDLES / "firewall"))
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=args)
    try:
        page = urllib.request.urlopen(f"{srv.base}/plugins", timeout=10).read().decode()
        assert "<strong>ssh</strong>" in page and "<strong>firewall</strong>" in page
    finally:
        srv.stop()
    said = srv.stderr_path.read_text()
    assert "plugin ssh: installed 0.1.0 (signed by" in said and "plugin firewall: installed 0.1.0" in said, said
    # Declarative: a second start with the same list changes nothing.
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=args)
    srv.stop()
    said = srv.stderr_path.read_text()
    assert "plugin ssh 0.1.0: installed already" in said and "plugin firewall 0.1.0: installed already" in said, said
    # A source that cannot be installed stops the start, naming it.
    bad = subprocess.run(
        [of_bin, "--home", str(home), "serve", "--listen", f"127.0.0.1:{ofmcp.free_port()}", "--plugin", f"{where}:missing"],
        env=ofmcp.server_env(), capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and f"--plugin {where}:missing" in bad.stderr and "not found" in bad.stderr, bad.stderr
    shutil.rmtree(tmp_path / "author")
