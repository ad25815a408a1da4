"""The lab's network services on real lab laptops: the resolver on the VPN gateway (lab.resolver)
and the lab's signed package source (lab.aptrepo).

A laptop at home resolves the package source's name through its tunnel (its only resolver is the
gateway's tunnel address, and the gateway's resolver logs the question from the laptop's tunnel
address); unknown names are refused at once (NXDOMAIN), not left to time out. `apt-get update`
works at home and in the office against the signed source, and a package published into the
security suite becomes the laptop's candidate after the next update.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lab import aptrepo
from lab.resolver import QUERY_LOG

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PKG = "werne-lab-probe"


def build_deb(workdir: Path, version: str) -> Path:
    return aptrepo.build_probe_package(workdir, PKG, version, "werne lab package source probe")


@pytest.fixture(scope="module")
def services_lab(lab_factory):  # type: ignore[no-untyped-def]
    """lap01 at home (enrolled, behind its NAT router, reached through the tunnel), lap02 in the office."""
    from tests.fixtures.vpn import home_office_lab

    lab = lab_factory(2, gateway=True)
    _, config, db = home_office_lab(lab, ["lap01"])
    db.dispose()
    return lab, config


def sh(lab, host: str, script: str, timeout: float = 120) -> str:  # type: ignore[no-untyped-def]
    p = lab.exec(host, ["sh", "-c", script], timeout=timeout)
    assert p.returncode == 0, f"{host}: {script}: {p.stdout[-500:]} {p.stderr[-500:]}"
    return str(p.stdout)


def wait_tunnel_dns(lab, host: str, dns: str) -> None:  # type: ignore[no-untyped-def]
    import time

    for _ in range(60):
        if f"nameserver {dns}" in sh(lab, host, "cat /etc/resolv.conf"):
            return
        time.sleep(1)
    raise AssertionError(f"{host}: wg-quick did not set the tunnel's resolver {dns}")


def test_a_laptop_at_home_resolves_through_the_tunnel(services_lab) -> None:  # type: ignore[no-untyped-def]
    lab, config = services_lab
    dns = lab.vpn_dns()
    assert config.vpn.dns == [dns]
    wait_tunnel_dns(lab, "lap01", dns)
    # The tunnel's resolver is the only one the laptop has.
    assert [line.split()[1] for line in sh(lab, "lap01", "cat /etc/resolv.conf").splitlines()
            if line.startswith("nameserver")] == [dns]
    out = sh(lab, "lap01", f"getent ahostsv4 {aptrepo.REPO_HOST}")
    assert out.split()[0] == lab.network()["host_address"], out
    # The question reached the gateway's resolver from the laptop's tunnel address.
    tunnel_addr = sh(lab, "lap01", "ip -4 -o addr show dev wg0").split()[3].split("/")[0]
    log = sh(lab, "vpngw", f"cat {QUERY_LOG}")
    assert f"query[A] {aptrepo.REPO_HOST} from {tunnel_addr}" in log, log[-1000:]
    # A name the lab does not know is refused, not left to time out.
    p = lab.exec("lap01", ["getent", "hosts", "mirror.invalid"], timeout=30)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "mirror.invalid is NXDOMAIN" in sh(lab, "vpngw", f"cat {QUERY_LOG}")


def both_sides(lab, host: str) -> str:  # type: ignore[no-untyped-def]
    """Both ends of the way to the package source, for a failure message: the laptop's route to it
    and its tunnel's last handshake; the bridge's addresses, the listening sockets on it, and
    whether the repository's server still runs."""
    from lab import processes

    net = lab.network()
    addr = subprocess.run(["ip", "-br", "addr", "show", "dev", net.get("bridge", "?")],
                          capture_output=True, text=True, check=False)
    ss = subprocess.run(["ss", "-ltnH", "src", net.get("host_address", "0.0.0.0")],
                        capture_output=True, text=True, check=False)
    pid = processes.running(aptrepo.PROCESS, aptrepo.repo_dir(lab.lab_dir))
    laptop = lab.exec(host, ["sh", "-c", f"ip route get {net.get('host_address', '0.0.0.0')}; "
                             "wg show wg0 latest-handshakes 2>&1 | awk '{print $2}'; date +%s"], timeout=30)
    return (f"laptop {host}: {laptop.stdout.strip()!r}; network {net}; "
            f"bridge: {addr.stdout.strip()} {addr.stderr.strip()}; "
            f"listening: {ss.stdout.strip()!r}; server pid: {pid}")


def test_apt_update_works_at_home_and_in_the_office(services_lab) -> None:  # type: ignore[no-untyped-def]
    lab, _ = services_lab
    for host in ("lap01", "lap02"):
        # CI twice saw the first `apt-get update` of lap01 (at home, through the tunnel) time out
        # after the rest of the suite had run; no local run repeated it. A failed attempt is
        # recorded with both ends of the path, and the update is tried again (at most twice) once
        # the source answers a TCP connect from the laptop, so a lasting fault still fails here.
        seen = []
        for _ in range(3):
            out = sh(lab, host, "apt-get update 2>&1")
            if "Err:" not in out and "W:" not in out:
                break
            seen.append(f"{out}\n{both_sides(lab, host)}")
            addr = lab.network()["host_address"]
            port = re.search(rf"http://{re.escape(aptrepo.REPO_HOST)}:(\d+)", out)
            assert port is not None, out
            lab.exec(host, ["sh", "-c", f"for i in $(seq 30); do timeout 2 bash -c '</dev/tcp/{addr}/{port.group(1)}' "
                                        "&& break; sleep 2; done"], timeout=120)
        assert "Err:" not in out and "W:" not in out, "\n---\n".join(seen)
        assert f"http://{aptrepo.REPO_HOST}:" in out and "bookworm-security InRelease" in out, out
        # The base image's packages come from the lab's source, at the installed versions.
        policy = sh(lab, host, "apt-cache policy sudo")
        installed = policy.split("Installed:")[1].split()[0]
        assert policy.split("Candidate:")[1].split()[0] == installed, policy
        assert f"http://{aptrepo.REPO_HOST}:" in policy, policy


def test_a_published_package_reaches_the_laptops(services_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lab, _ = services_lab
    assert aptrepo.publish_package(lab.lab_dir, build_deb(tmp_path, "1.0"), aptrepo.BASE_SUITE) == f"{PKG} 1.0"
    sh(lab, "lap01", "apt-get update && apt-get install -y " + PKG)
    assert sh(lab, "lap01", f"dpkg-query -W -f '${{Version}}' {PKG}") == "1.0"
    aptrepo.publish_package(lab.lab_dir, build_deb(tmp_path, "1.1"), aptrepo.SECURITY_SUITE)
    policy = sh(lab, "lap01", f"apt-get update >/dev/null && apt-cache policy {PKG}")
    assert policy.split("Candidate:")[1].split()[0] == "1.1", policy
    assert "bookworm-security/main" in policy, policy
