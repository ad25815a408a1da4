"""The lab's local package source: a signed APT repository on the lab host, for the lab's laptops.

Production laptops fetch package lists from a mirror; the lab's have no route to one. So each lab
serves its own repository from the host's address on its bridge (reached from the office network,
and through the VPN from home) with a real HTTP server (Python's http.server, a lab service):

    STATE/lab/apt/keys/    signing.key (the lab's archive key, 0600) and werne-lab.gpg (public)
    STATE/lab/apt/www/     dists/SUITE/{Release,InRelease,Release.gpg,main/binary-ARCH/Packages(.gz)}
                           pool/base -> the .debs the base image was built from (lab.image)
                           pool/server -> what a lab server installs beyond the base (PostgreSQL,
                           nginx, python3-venv: lab.image.server_debs), in the base suite
                           pool/SUITE/ packages published into SUITE (publish_package)

Two suites, named and labelled as Debian's: `bookworm` (Label Debian: the base image's packages,
so a new laptop has nothing to upgrade) and `bookworm-security` (Label Debian-Security, empty at
first), so unattended-upgrades' security origins and the compliance run's patch-level facts see
them as they see Debian's. `publish_package(state_dir, deb, suite)` adds a package (an older,
vulnerable version to `bookworm`, a fixed one to `bookworm-security`) and re-signs that suite;
the laptops see it at their next `apt-get update`.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.locks import file_lock
from lab.errors import LabError, LabInputError
from lab.processes import PortReady, Service

# The package source's name: the lab's resolver (on vpngw) answers it with the host's bridge address.
REPO_HOST = "apt.lab.werne.test"
BASE_SUITE = "bookworm"
SECURITY_SUITE = "bookworm-security"
SUITES = {BASE_SUITE: "Debian", SECURITY_SUITE: "Debian-Security"}
COMPONENT = "main"
PROCESS = "apt-repo"
KEYRING_NAME = "werne-lab.gpg"
# Where the laptops find the key and the source (written into each laptop's upper layer).
LAPTOP_KEYRING = Path("/etc/apt/keyrings") / KEYRING_NAME
LAPTOP_SOURCES = Path("/etc/apt/sources.list.d/werne-lab.sources")
GPG_TIMEOUT_S = 60


def repo_dir(lab_dir: Path) -> Path:
    return lab_dir / "apt"


def architecture() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


@contextmanager
def _gnupg_home() -> Iterator[Path]:
    """A throwaway GnuPG home (short path: gpg-agent's socket must fit), its agent ended after."""
    home = Path(tempfile.mkdtemp(prefix="wlgpg-"))
    home.chmod(0o700)
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30,
                       check=False)
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    argv = ["gpg", "--homedir", str(home), "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback",
            "--passphrase", "", *args]
    try:
        p = subprocess.run(argv, capture_output=True, input=input, timeout=GPG_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise LabError("gpg is not installed (run scripts/setup.sh as root)") from None
    if p.returncode != 0:
        raise LabError(f"gpg {args[0]} failed: {p.stderr.decode(errors='replace').strip()[-200:]}")
    return p.stdout


def ensure_key(keys: Path) -> Path:
    """The lab's archive signing key (made once); returns the public keyring file for the laptops."""
    secret, public = keys / "signing.key", keys / KEYRING_NAME
    if secret.is_file() and public.is_file():
        return public
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o700)
    with _gnupg_home() as home:
        _gpg(home, "--quick-generate-key", "werne lab package source <lab@werne.test>", "ed25519", "sign", "never")
        armored = _gpg(home, "--armor", "--export-secret-keys")
        key = _gpg(home, "--export")
    fd_path = secret.with_suffix(".tmp")
    fd_path.unlink(missing_ok=True)
    fd_path.touch(mode=0o600)
    fd_path.write_bytes(armored)
    fd_path.replace(secret)
    public.write_bytes(key)
    return public


def _control(deb: Path) -> str:
    p = subprocess.run(["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, timeout=60, check=False)
    if p.returncode != 0:
        raise LabInputError(f"{deb}: not a Debian package ({p.stderr.strip()[-120:]})")
    return p.stdout.strip()


def _stanza(deb: Path, filename: str) -> str:
    data = deb.read_bytes()
    return (f"{_control(deb)}\nFilename: {filename}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")


def _packages(www: Path, pools: list[str], arch: str) -> str:
    """The Packages index of every .deb in these pool dirs (arch and `all` ones)."""
    stanzas = []
    for pool in pools:
        d = www / "pool" / pool
        for deb in sorted(d.glob("*.deb")) if d.is_dir() else []:
            if deb.name.endswith((f"_{arch}.deb", "_all.deb")):
                stanzas.append(_stanza(deb, f"pool/{pool}/{deb.name}"))
    return "\n".join(stanzas)


def _write_suite(www: Path, suite: str, arch: str, keys: Path) -> None:
    """Index and sign one suite: Packages(.gz), Release with its hashes, InRelease and Release.gpg."""
    pools = ["base", "server", suite] if suite == BASE_SUITE else [suite]
    rel = www / "dists" / suite
    idx = rel / COMPONENT / f"binary-{arch}"
    idx.mkdir(parents=True, exist_ok=True)
    text = _packages(www, pools, arch).encode()
    (idx / "Packages").write_bytes(text)
    (idx / "Packages.gz").write_bytes(gzip.compress(text, mtime=0))
    sums = [f" {hashlib.sha256(f.read_bytes()).hexdigest()} {f.stat().st_size} {f.relative_to(rel)}"
            for f in sorted(idx.iterdir())]
    label = SUITES[suite]
    date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
    release = (f"Origin: Debian\nLabel: {label}\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n"
               f"Architectures: {arch}\nComponents: {COMPONENT}\n"
               f"Description: werne lab package source ({label})\nSHA256:\n" + "\n".join(sums) + "\n")
    (rel / "Release").write_text(release, encoding="utf-8")
    with _gnupg_home() as home:
        _gpg(home, "--import", input=(keys / "signing.key").read_bytes())
        (rel / "InRelease").write_bytes(_gpg(home, "--clearsign", "--output", "-", str(rel / "Release")))
        (rel / "Release.gpg").write_bytes(
            _gpg(home, "--armor", "--detach-sign", "--output", "-", str(rel / "Release")))


def ensure(lab_dir: Path, debs: Path | None, server_debs: Path | None = None) -> Path:
    """The repository of this lab (keys, indexes, signatures), made if missing; returns www/.

    `debs` is the directory of the base image's .debs (pool/base links to it); None leaves the
    base suite with what it has (a base image built before the lab kept its packages).
    `server_debs` (pool/server) adds a lab server's packages to the base suite.
    """
    d = repo_dir(lab_dir)
    www = d / "www"
    with file_lock(d / ".lock", what="the lab's package source", held_error=LabError, unusable_error=LabError):
        keys = d / "keys"
        ensure_key(keys)
        (www / "pool").mkdir(parents=True, exist_ok=True)
        changed = False
        for name, source in (("base", debs), ("server", server_debs)):
            link = www / "pool" / name
            if source is not None and (not link.is_symlink() or link.resolve() != source.resolve()):
                link.unlink(missing_ok=True)
                link.symlink_to(source)
                changed = True
        shutil.copyfile(keys / KEYRING_NAME, www / KEYRING_NAME)
        arch = architecture()
        for suite in SUITES:
            if not (www / "dists" / suite / "InRelease").is_file() or (changed and suite == BASE_SUITE):
                _write_suite(www, suite, arch, keys)
    return www


def publish_package(lab_dir: Path, deb: Path, suite: str = SECURITY_SUITE) -> str:
    """Add a .deb to one suite of this lab's package source and re-sign it; returns the package's
    "name version". The laptops see it at their next `apt-get update`."""
    if suite not in SUITES:
        raise LabInputError(f"unknown suite '{suite}' (the lab has {', '.join(SUITES)})")
    fields = dict(line.split(": ", 1) for line in _control(deb).splitlines() if ": " in line and line[0] != " ")
    d = repo_dir(lab_dir)
    www = d / "www"
    if not (www / "dists" / suite).is_dir():
        raise LabError(f"{www}: the lab's package source is not set up (run `werne lab up`)")
    with file_lock(d / ".lock", what="the lab's package source", held_error=LabError, unusable_error=LabError):
        pool = www / "pool" / suite
        pool.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, pool / f"{fields['Package']}_{fields['Version']}_{fields['Architecture']}.deb")
        _write_suite(www, suite, architecture(), d / "keys")
    return f"{fields['Package']} {fields['Version']}"


def build_probe_package(workdir: Path, name: str, version: str, summary: str) -> Path:
    """Build an empty package (Architecture: all; /usr/share/NAME/VERSION holds its version) with
    dpkg-deb in workdir, for publishing into the lab's package source; returns the .deb."""
    root = workdir / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share" / name).mkdir(parents=True)
    (root / "usr/share" / name / "VERSION").write_text(version + "\n", encoding="utf-8")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: werne lab <lab@invalid>\n"
        f"Priority: optional\nSection: misc\nDescription: {summary}\n A package with nothing in it.\n",
        encoding="utf-8")
    deb = workdir / f"{name}_{version}_all.deb"
    p = subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], capture_output=True,
                       text=True, timeout=120, check=False)
    if p.returncode != 0:
        raise LabError(f"dpkg-deb could not build {name} {version}: {p.stderr.strip()[-200:]}")
    return deb


# Python's threading http.server with a listen backlog of 128 instead of socketserver's 5: when
# every laptop of a lab runs `apt-get update` at once on a loaded machine, a full accept queue
# drops their connection attempts until apt gives up ("connection timed out").
SERVE = """
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[3])
Server((sys.argv[1], int(sys.argv[2])), handler).serve_forever()
"""


def service(lab_dir: Path, address: str, port: int, cgroups: tuple[Path, ...]) -> Service:
    """The HTTP server of the package source on the host's bridge address (Python's http.server,
    serving www/ read-only)."""
    www = repo_dir(lab_dir) / "www"
    return Service(name=PROCESS, what="the lab's package source", directory=repo_dir(lab_dir),
                   argv=(sys.executable, "-c", SERVE, address, str(port), str(www)),
                   ready=PortReady(address, port), cgroups=cgroups)


def sources_file(port: int) -> str:
    """The laptops' APT source (deb822): both suites of the lab's package source, signed-by its key."""
    return ("# werne lab: the lab's package source on the lab host (lab/aptrepo.py).\n"
            f"Types: deb\nURIs: http://{REPO_HOST}:{port}/\nSuites: {' '.join(SUITES)}\n"
            f"Components: {COMPONENT}\nSigned-By: {LAPTOP_KEYRING}\n")
