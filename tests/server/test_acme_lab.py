"""The ACME path of `werne server install`, run against a real ACME server: Let's Encrypt's pebble
(lab.pebble) on a fresh lab server. Installed with `server.tls = "acme"`, the server's ACME
directory and its CA bundle as settings, the server first serves the bootstrap site on port 80,
certbot gets the certificate through it (pebble fetches the HTTP-01 challenge from port 80), and
nginx serves it: the chain verifies against the root pebble issues from (its management API).
Then certbot.service, as certbot.timer starts it (with the renewal's CA bundle from werne's
drop-in), renews it with --force-renewal: nginx is reloaded by the deploy hook and serves the new
certificate. One full install (~8 min on a loaded machine)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from core.config import load_config
from lab import pebble
from lab import server as lab_server
from lab.certs import LAB_HOST
from server.install import InstallTarget, install_server
from tests.fixtures.lab import require_root

pytestmark = [pytest.mark.lab, pytest.mark.mdm, pytest.mark.slow, pytest.mark.timeout(2400)]


def served(srv: lab_server.LabServer, root: x509.Certificate, tmp: Path) -> x509.Certificate:
    """The certificate nginx serves for the public name; the handshake verifies its chain against `root`."""
    (tmp / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    ctx = ssl.create_default_context(cafile=str(tmp / "root.pem"))
    with socket.create_connection((srv.address, 443), timeout=30) as sock, \
            ctx.wrap_socket(sock, server_hostname=LAB_HOST) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture(scope="module")
def acme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[lab_server.LabServer, pebble.Pebble]]:
    require_root()
    tmp = tmp_path_factory.mktemp("acme")
    srv = lab_server.fresh_server(tmp / "state")
    try:
        ca = pebble.start(srv)
        config_file = lab_server.prepare(srv, [], tmp / "werne.toml", acme=(ca.directory_url, ca.ca_file))
        result = install_server(load_config(config_file), InstallTarget(address=srv.address, user="admin"),
                                tmp / "install", accept_new=True)
        assert result.ok and result.tls == "https", (result.reason, result.changed_tasks)
        yield srv, ca
    finally:
        srv.lab.down(purge=True)


def test_the_certificate_comes_from_the_acme_server_and_is_renewed(
        acme_server: tuple[lab_server.LabServer, pebble.Pebble], tmp_path: Path) -> None:
    srv, ca = acme_server
    root = ca.issuing_root()
    first = served(srv, root, tmp_path)
    assert LAB_HOST in first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    # certbot keeps the directory for its renewals; the timer's unit carries the CA bundle.
    renewal = srv.read(f"/etc/letsencrypt/renewal/{LAB_HOST}.conf")
    assert f"server = {ca.directory_url}" in renewal and "systemctl reload nginx" in renewal, renewal
    assert f"REQUESTS_CA_BUNDLE={ca.ca_file}" in srv.read("/etc/systemd/system/certbot.service.d/werne.conf")
    assert srv.exec(["systemctl", "is-enabled", "certbot.timer"]).stdout.strip() == "enabled"
    # The renewal as certbot.timer runs it (certbot.service), forced: a test's drop-in adds --force-renewal.
    srv.put("/etc/systemd/system/certbot.service.d/zz-lab-force.conf",
            "[Service]\nExecStart=\nExecStart=/usr/bin/certbot -q renew --no-random-sleep-on-renew --force-renewal\n")
    assert srv.exec(["systemctl", "daemon-reload"]).returncode == 0
    run = srv.exec(["systemctl", "start", "certbot.service"], timeout=600)
    assert run.returncode == 0, srv.exec(["journalctl", "-u", "certbot.service", "--no-pager", "-n", "40"]).stdout
    # nginx's reload (certbot's deploy hook) swaps its workers asynchronously: a connection made at
    # once may still reach an old worker. Bounded wait for the new certificate, not a timing.
    for _ in range(60):
        second = served(srv, root, tmp_path)
        if second.serial_number != first.serial_number:
            break
        time.sleep(0.5)
    assert second.serial_number != first.serial_number
