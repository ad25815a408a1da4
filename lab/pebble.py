"""Let's Encrypt's ACME test server pebble on a lab server: the ACME CA for `server.tls = "acme"`.

pebble (.tools/bin/pebble, scripts/setup.sh) is a real ACME peer: it validates HTTP-01 by fetching
the challenge from the server's port 80 under its public name, which the lab server resolves to
itself (/etc/hosts, lab.server). It runs on the lab server itself (a transient systemd unit there,
gone with the container), since the lab server has no route to this machine's other ports and
nothing here may change this machine's resolver. Its directory's TLS certificate comes from a lab
CA made for it; that CA is the bundle the config's `server.acme_ca_file` names. Its issuing root
changes every start: `issuing_root` reads it from pebble's management API.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from core.config import REPO_ROOT
from lab.certs import issue_leaf, make_ca
from lab.errors import LabError
from lab.server import CONFIG_DIR, LabServer

PEBBLE_BIN = REPO_ROOT / ".tools" / "bin" / "pebble"
BINARY = "/usr/local/bin/pebble"
DIRECTORY_PORT, MANAGEMENT_PORT = 14000, 15000
UNIT = "werne-lab-pebble"


@dataclass(frozen=True)
class Pebble:
    """pebble running on a lab server: its directory URL and CA bundle (paths on the server), and
    the bundle on this machine (to read the management API)."""

    srv: LabServer
    directory_url: str
    ca_file: str
    local_ca: Path

    def issuing_root(self) -> x509.Certificate:
        """The root pebble issues from this run (management API /roots/0)."""
        fetch = ("import ssl, sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], "
                 "context=ssl.create_default_context(cafile=sys.argv[2]), timeout=30).read().decode())")
        p = self.srv.exec(["python3", "-c", fetch, f"https://localhost:{MANAGEMENT_PORT}/roots/0", self.ca_file],
                          timeout=60)
        if p.returncode != 0:
            raise LabError(f"pebble's management API: {p.stderr.strip()[-200:]}")
        return x509.load_pem_x509_certificate(p.stdout.encode("ascii"))


def start(srv: LabServer) -> Pebble:
    """Put pebble, its config and its TLS certificate on the server and start it (HTTP-01 on port 80)."""
    if not PEBBLE_BIN.is_file():
        raise LabError(f"{PEBBLE_BIN} is missing: run `make setup`")
    d = srv.files / "pebble"
    ca_cert, ca_key = make_ca(d / "ca")
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                       x509.IPAddress(ipaddress.ip_address(srv.address))])
    issue_leaf(ca_cert, ca_key, "localhost", d / "cert.pem", d / "key.pem", days=30, extensions=((san, False),))
    srv.put_bytes(BINARY, PEBBLE_BIN.read_bytes(), 0o755)
    ca_file = f"{CONFIG_DIR}/acme-ca.pem"
    srv.put(ca_file, ca_cert.read_text(encoding="ascii"))
    srv.put("/etc/pebble/cert.pem", (d / "cert.pem").read_text(encoding="ascii"))
    srv.put("/etc/pebble/key.pem", (d / "key.pem").read_text(encoding="ascii"), 0o600)
    config = {"pebble": {"listenAddress": f"0.0.0.0:{DIRECTORY_PORT}",
                         "managementListenAddress": f"0.0.0.0:{MANAGEMENT_PORT}",
                         "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
                         "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
                         "externalAccountBindingRequired": False}}
    srv.put("/etc/pebble/pebble.json", json.dumps(config, indent=2))
    # No artificial validation delay and no random nonce rejections: the lab wants the protocol,
    # not pebble's robustness tests.
    p = srv.exec(["systemd-run", f"--unit={UNIT}", "--setenv=PEBBLE_VA_NOSLEEP=1", "--setenv=PEBBLE_WFE_NONCEREJECT=0",
                  BINARY, "-config", "/etc/pebble/pebble.json"])
    if p.returncode != 0:
        raise LabError(f"cannot start pebble on the lab server: {(p.stderr or p.stdout).strip()[-200:]}")
    return Pebble(srv, f"https://localhost:{DIRECTORY_PORT}/dir", ca_file, ca_cert)
