"""Patch level over a real lab laptop: a real security update, not a seeded fact.

The controller builds a tiny APT repository: a dummy package (dpkg-deb), 1.0 installed on the
laptop, 1.1 in the repository, whose Release file says what Debian's security archive says
(Origin Debian, Label Debian-Security, Suite/Codename bookworm-security). A real HTTP server on
the host's lab-bridge address serves it; the laptop gets it as an APT source ([trusted=yes]) and
fetches its lists. The compliance run (real werne_facts over SSH, check mode) must fail
lx-security-updates naming the package; `werne laptop provision` (the unattended_upgrades role
runs unattended-upgrade with the baseline's security origins) installs 1.1; the next run passes.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from compliance.history import load_run
from compliance.run import run_compliance
from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from lab.aptrepo import build_probe_package
from tests.fixtures.http import serving

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PKG = "werne-patch-probe"
SUITE = "bookworm-security"
SOURCE_FILE = "/etc/apt/sources.list.d/werne-patch-probe.list"


def build_deb(workdir: Path, version: str) -> Path:
    return build_probe_package(workdir, PKG, version, "werne patch level probe")


def build_repo(repo: Path, deb: Path, arch: str) -> None:
    """A dists/ layout with one Packages index and a Release file that lists its hashes."""
    pool = repo / "pool/main"
    pool.mkdir(parents=True)
    target = pool / deb.name
    target.write_bytes(deb.read_bytes())
    control = subprocess.run(["dpkg-deb", "--field", str(target)], check=True, capture_output=True,
                             text=True).stdout.strip()
    data = target.read_bytes()
    stanza = (f"{control}\nFilename: pool/main/{deb.name}\nSize: {len(data)}\n"
              f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n")
    rel_dir = repo / "dists" / SUITE
    idx = rel_dir / f"main/binary-{arch}"
    idx.mkdir(parents=True)
    (idx / "Packages").write_text(stanza, encoding="utf-8")
    (idx / "Packages.gz").write_bytes(gzip.compress(stanza.encode()))
    sums = []
    for f in sorted(idx.iterdir()):
        b = f.read_bytes()
        sums.append(f" {hashlib.sha256(b).hexdigest()} {len(b)} main/binary-{arch}/{f.name}")
    date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
    (rel_dir / "Release").write_text(
        f"Origin: Debian\nLabel: Debian-Security\nSuite: {SUITE}\nCodename: {SUITE}\nVersion: 12\n"
        f"Date: {date}\nArchitectures: {arch}\nComponents: main\nDescription: werne test security archive\n"
        "SHA256:\n" + "\n".join(sums) + "\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def repo_server(tmp_path_factory, patch_lab) -> Iterator[str]:
    """The repository over real HTTP on the host's address on the lab bridge; yields its URL."""
    lab, _ = patch_lab
    work = tmp_path_factory.mktemp("patch-repo")
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()
    build_repo(work / "repo", build_deb(work, "1.1"), arch)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(work / "repo"))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    with serving(ThreadingHTTPServer((lab.network()["host_address"], 0), handler)) as server:
        yield f"http://{lab.network()['host_address']}:{server.server_address[1]}"


@pytest.fixture(scope="module")
def patch_lab(lab_factory, lab_config, werne_cli):
    lab = lab_factory(1, gateway=False)
    cfg = lab_config(lab, extra='\n[compliance]\nluks_missing = "not_applicable"\n')
    r = werne_cli(cfg, "laptop", "preflight", "--all", "--accept-new")
    assert r.exit_code == 0, r.output
    return lab, cfg


def laptop_exec(lab, argv: list[str], timeout: float = 120) -> str:
    p = lab.exec("lap01", argv, timeout=timeout)
    assert p.returncode == 0, f"{argv}: {p.stdout[-500:]} {p.stderr[-500:]}"
    return p.stdout


def installed_version(lab) -> str:
    return laptop_exec(lab, ["dpkg-query", "-W", "-f", "${Version}", PKG]).strip()


def patch_results(cfg: Path) -> dict[str, tuple[str, str]]:
    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        s = run_compliance(config, db, load_inventory(config.inventory_dir), ("laptops",))
        run = load_run(db, s.run_id)
        return {rule: (v.status, v.evidence) for (dev, rule), v in run.results.items() if dev == "lap01"}
    finally:
        db.dispose()


def test_pending_security_update_fails_then_provision_installs_it(patch_lab, repo_server, tmp_path, werne_cli):
    lab, cfg = patch_lab
    # Version 1.0 installed from a .deb copied in; 1.1 only in the security repository.
    deb10 = build_deb(tmp_path, "1.0")
    p = lab.exec("lap01", ["sh", "-c", f"base64 -d > /var/tmp/{deb10.name}"], timeout=30,
                 input=base64.b64encode(deb10.read_bytes()).decode())
    assert p.returncode == 0, p.stderr
    laptop_exec(lab, ["dpkg", "-i", f"/var/tmp/{deb10.name}"])
    assert installed_version(lab) == "1.0"
    laptop_exec(lab, ["sh", "-c", f"echo 'deb [trusted=yes] {repo_server} {SUITE} main' > {SOURCE_FILE}"])
    # Only this source: the lab has no route to the Debian mirrors of the image's sources.list.
    laptop_exec(lab, ["apt-get", "update", "-o", f"Dir::Etc::sourcelist={SOURCE_FILE}",
                      "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0"])

    before = patch_results(cfg)
    status, evidence = before["lx-security-updates"]
    assert status == "fail", evidence
    assert f"1 security update(s) pending: {PKG} 1.0 -> 1.1" in evidence
    # Never run on this laptop, so the unattended-upgrade rule fails too; the container's kernel
    # is the host's: not applicable, with the reason.
    assert before["lx-unattended-upgrade-recent"][0] == "fail"
    assert before["lx-kernel-current"][0] == "not_applicable"
    assert "the host's" in before["lx-kernel-current"][1]
    assert before["lx-reboot-pending"] == ("pass", "no reboot required")
    # The facts run is read-only: nothing was installed.
    assert installed_version(lab) == "1.0"

    r = werne_cli(cfg, "laptop", "provision", "lap01")
    assert r.exit_code == 0, r.output
    assert installed_version(lab) == "1.1"

    after = patch_results(cfg)
    assert after["lx-security-updates"][0] == "pass", after["lx-security-updates"]
    assert "Debian-Security/bookworm-security" in after["lx-security-updates"][1]
    assert after["lx-unattended-upgrade-recent"][0] == "pass", after["lx-unattended-upgrade-recent"]
    assert after["lx-kernel-current"][0] == "not_applicable"
