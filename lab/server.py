"""A fresh Debian 12 lab server for `werne server install`: the go-live drill's machine.

`fresh_server(state_dir)` boots the lab host `mdm` (lab.laptops: systemd-nspawn, real systemd and
sshd, its own address on the lab bridge, the lab's package source as its only APT source, with
PostgreSQL, nginx and python3-venv published there; no route to the internet) on a new disk, and
writes what a city brings to a new server: a config for it (`LabServer.config_text`), the city's
TLS certificate and profile-signing certificate (from the lab CA), and the stand-in for Apple's
device CA that the simulated iPads' MachineInfo chains to. The install itself is werne's own
(`werne server install --host ADDRESS`); `put` and `run_as_service` are the administrator's hands.

The server's public name is lab.certs.LAB_HOST. The server resolves it to itself (/etc/hosts);
clients on this machine connect to its address and send that name (TLS SNI, Host), as
lab.ipad_sim's `resolve` does, since nothing here may change this machine's /etc/hosts.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from core.config import DEFAULT_INVENTORY
from lab.certs import LAB_HOST, issue_leaf, make_ca
from lab.errors import LabError
from lab.laptops import DEFAULT_CACHE_DIR, SERVER_NAME, Lab

# Where the drill's config puts what the city brings (paths on the server).
CONFIG_DIR = "/etc/werne"
STATE_DIR = "/var/lib/werne"
SERVICE_USER = "werne"


@dataclass(frozen=True)
class LabServer:
    """One running lab server: its lab, address, public name and the lab CA files on this machine."""

    lab: Lab
    address: str
    public_name: str
    files: Path

    @property
    def name(self) -> str:
        return SERVER_NAME

    @property
    def tls_ca(self) -> Path:
        """The CA of the server's TLS certificate (what clients trust)."""
        return self.files / "tls-ca" / "ca.pem"

    @property
    def device_ca(self) -> tuple[Path, Path]:
        """The stand-in for Apple's device CA: certificate and key (the simulated iPads sign with it)."""
        return self.files / "apple-device-ca" / "ca.pem", self.files / "apple-device-ca" / "ca.key"

    def exec(self, argv: list[str], timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(self.name, argv, timeout=timeout, input=input)

    def run_as_service(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A werne command on the server as its service account, the way an administrator runs one."""
        return self.exec(["runuser", "-u", SERVICE_USER, "--", *argv], timeout=timeout)

    def put(self, path: str, text: str, mode: int = 0o644, group: str = "root") -> None:
        """Put a text file on the server (root-owned, `group`), as an administrator copies one over."""
        p = self.exec(["install", "-D", "-m", f"{mode:o}", "-o", "root", "-g", group, "/dev/stdin", path],
                      input=text)
        if p.returncode != 0:
            raise LabError(f"cannot put {path} on the lab server: {(p.stderr or p.stdout).strip()[-200:]}")

    def put_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Put a binary file on the server (root-owned), through base64 on the command's input."""
        import base64

        p = self.exec(["sh", "-c", 'umask 077 && base64 -d > "$0" && chmod "$1" "$0"', path, f"{mode:o}"],
                      input=base64.b64encode(data).decode("ascii"), timeout=300)
        if p.returncode != 0:
            raise LabError(f"cannot put {path} on the lab server: {p.stderr.strip()[-200:]}")

    def read_bytes(self, path: str) -> bytes:
        """A binary file from the server (base64 through the command's output)."""
        import base64

        p = self.exec(["base64", "-w0", path], timeout=300)
        if p.returncode != 0:
            raise LabError(f"cannot read {path} on the lab server: {p.stderr.strip()[-200:]}")
        return base64.b64decode(p.stdout)

    def read(self, path: str) -> str:
        p = self.exec(["cat", path])
        if p.returncode != 0:
            raise LabError(f"cannot read {path} on the lab server: {p.stderr.strip()[-200:]}")
        return p.stdout

    def city_files(self) -> dict[str, str]:
        """What the city brings, by path on the server: the TLS chain and key for the public name
        (and the server's address), the profile-signing certificate and key, and Apple's device CA."""
        tls_dir, signer_dir = self.files / "tls", self.files / "signer"
        for d in (tls_dir, signer_dir):
            d.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = make_ca(self.files / "tls-ca")
        san = x509.SubjectAlternativeName([x509.DNSName(self.public_name),
                                           x509.IPAddress(ipaddress.ip_address(self.address))])
        issue_leaf(ca_cert, ca_key, self.public_name, tls_dir / "fullchain.pem", tls_dir / "privkey.pem", days=90,
                   extensions=((san, False),))
        issue_leaf(ca_cert, ca_key, "werne lab profile signing", signer_dir / "signer.pem", signer_dir / "signer.key")
        device_ca, _ = make_ca(self.files / "apple-device-ca")
        ca = ca_cert.read_text(encoding="ascii")
        return {
            f"{CONFIG_DIR}/tls/fullchain.pem": (tls_dir / "fullchain.pem").read_text(encoding="ascii") + ca,
            f"{CONFIG_DIR}/tls/privkey.pem": (tls_dir / "privkey.pem").read_text(encoding="ascii"),
            f"{CONFIG_DIR}/tls/ca.pem": ca,
            f"{CONFIG_DIR}/profile-signer.pem": (signer_dir / "signer.pem").read_text(encoding="ascii"),
            f"{CONFIG_DIR}/profile-signer.key": (signer_dir / "signer.key").read_text(encoding="ascii"),
            f"{CONFIG_DIR}/apple-device-ca.pem": device_ca.read_text(encoding="ascii"),
            f"{CONFIG_DIR}/wifi.secret": "schul-wlan-passwort\n",
        }

    def put_inventory(self, serials: list[str], directory: str = f"{CONFIG_DIR}/inventory") -> None:
        """The site inventory on the server: the demo's schools, and these iPads in its first school."""
        schools = (DEFAULT_INVENTORY / "schools.yml").read_text(encoding="utf-8")
        school = next(line.split(":", 1)[1].strip() for line in schools.splitlines() if "- id:" in line)
        rows = ["serial;model;school;group;name",
                *(f"{s};iPad (10th generation);{school};pupil;{school}-{i:03d}" for i, s in enumerate(serials, 1))]
        self.put(f"{directory}/schools.yml", schools)
        self.put(f"{directory}/ipads.csv", "\n".join(rows) + "\n")
        self.put(f"{directory}/hosts.yml", "all:\n  children:\n    laptops:\n      hosts: {}\n")

    def config_text(self, *, ssh_key: Path, inventory: str = f"{CONFIG_DIR}/inventory", extra: str = "",
                    acme: tuple[str, str] | None = None) -> str:
        """A config for this server as a city writes it (paths on the server; ssh for the install).
        `acme`: (directory URL, CA bundle file) of an ACME CA for the TLS certificate, else the city's."""
        host = self.public_name
        tls = (f'tls = "acme"\nacme_directory_url = "{acme[0]}"\nacme_ca_file = "{acme[1]}"\n\n' if acme else
               f'tls = "city"\ntls_cert_file = "{CONFIG_DIR}/tls/fullchain.pem"\n'
               f'tls_key_file = "{CONFIG_DIR}/tls/privkey.pem"\n\n')
        return (
            "# The lab server's werne.toml (lab.server): every path is a path on the server.\n"
            f'[site]\nname = "lab"\nstate_dir = "{STATE_DIR}"\ninventory = "{inventory}"\n\n'
            f'[ssh]\nuser = "admin"\nprivate_key_file = "{ssh_key}"\n\n'
            f'[server]\n{tls}'
            f'[mdm]\nserver_url = "https://{host}/mdm"\napi_key_file = "{CONFIG_DIR}/mdm-api.key"\n'
            f'webhook_hmac_key_file = "{CONFIG_DIR}/webhook-hmac.key"\n'
            f'signing_cert_file = "{CONFIG_DIR}/profile-signer.pem"\n'
            f'signing_key_file = "{CONFIG_DIR}/profile-signer.key"\n'
            f'tls_ca_file = "{CONFIG_DIR}/tls/ca.pem"\nwifi_secret_file = "{CONFIG_DIR}/wifi.secret"\n'
            'query_deadline_s = 30.0\n\n'
            f'[scep]\nurl = "https://{host}/scep"\n\n'
            f'[ddm]\napi_key_file = "{CONFIG_DIR}/ddm-api.key"\n\n'
            f'[web]\nsecret_key_file = "{CONFIG_DIR}/web-secret.key"\n\n'
            f'[dep]\nenabled = false\nenrol_url = "https://{host}/mdm/enroll"\n'
            f'machineinfo_ca_file = "{CONFIG_DIR}/apple-device-ca.pem"\n'
            + extra
        )


def fresh_server(state_dir: Path, cache_dir: Path = DEFAULT_CACHE_DIR, owner_pid: int | None = None) -> LabServer:
    """Boot the lab server `mdm` on a new disk (a server left by an earlier run is removed first)."""
    lab = Lab(state_dir, cache_dir=cache_dir, demo=False, owner_pid=owner_pid)
    if (lab.hosts_dir / SERVER_NAME).exists():
        lab.down(purge=True)
    hosts = lab.up(laptops=0, gateway=False, server=True)
    host = next(h for h in hosts if h.name == SERVER_NAME)
    files = Path(state_dir) / "lab" / "server-files"
    files.mkdir(parents=True, exist_ok=True)
    os.chmod(files, 0o700)
    return LabServer(lab=lab, address=host.address, public_name=LAB_HOST, files=files)


# ---------------------------------------------------------------- the go-live drill's steps -----


def prepare(srv: LabServer, serials: list[str], config_file: Path, extra: str = "",
            acme: tuple[str, str] | None = None) -> Path:
    """What the city does before the install: its files and inventory on the server, and the
    config (on this machine, the controller) for `werne server install`, with `extra` sections
    at its end (`acme`: LabServer.config_text). Returns the config file."""
    for path, text in srv.city_files().items():
        mode = 0o600 if path.endswith("privkey.pem") else 0o640 if path.endswith((".key", ".secret")) else 0o644
        srv.put(path, text, mode)
    srv.put_inventory(serials)
    config_file.write_text(srv.config_text(ssh_key=srv.lab.key_file, extra=extra, acme=acme), encoding="utf-8")
    config_file.chmod(0o600)
    return config_file


def werne(srv: LabServer, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`werne ARGS` on the server as its service account (the config is /etc/werne/werne.toml)."""
    return srv.run_as_service(["werne", *args], timeout=timeout)


def go_live(srv: LabServer) -> None:
    """The administrator's step after the install: the push certificate (Apple's part played by
    the lab's stand-in for Apple's push CA)."""
    from lab.certs import lab_push_certificate

    csr = f"{STATE_DIR}/push.csr"
    _werne_ok(srv, "mdm", "push-cert", "csr", "--out", csr)
    cert = lab_push_certificate(srv.read(csr).encode(), srv.files / "apple-push-ca")
    srv.put(f"{STATE_DIR}/push.pem", cert.decode("ascii"), 0o640, group=SERVICE_USER)
    _werne_ok(srv, "mdm", "push-cert", "install", f"{STATE_DIR}/push.pem")


def apply_declarations(srv: LabServer) -> None:
    """The group sets in KMFDDM, every enrolled iPad mapped into its group's set (exit 1, a
    finding, while an inventory iPad is not enrolled yet)."""
    _werne_ok(srv, "ipad", "declarations", "apply", "--max-devices", "1000")


def _werne_ok(srv: LabServer, *args: str) -> None:
    p = werne(srv, *args)
    if p.returncode != 0:
        raise LabError(f"werne {' '.join(args)} on the lab server: {(p.stderr or p.stdout).strip()[-300:]}")


def simulated_ipads(srv: LabServer, serials: list[str], workdir: Path, poll_interval: float = 0.5) -> Any:
    """Start simulated iPads that enrol through the server's nginx over HTTPS, the ADE way: their
    MachineInfo signed by the stand-in for Apple's device CA, the profile verified, the identity
    from its scepserver, then check-ins to its NanoMDM. Returns the running lab.ipad_sim.Simulator."""
    from core.config import REPO_ROOT
    from lab.certs import udid_for
    from lab.ipad_sim import ADEEnrolment, SimDevice, Simulator

    devices = [SimDevice(serial=s, udid=udid_for(s)) for s in serials]
    ca_cert, ca_key = srv.device_ca
    ade = ADEEnrolment(enrol_url=f"https://{srv.public_name}/mdm/enroll", tls_ca_file=srv.tls_ca,
                       profile_ca_file=srv.tls_ca, device_ca_cert=ca_cert, device_ca_key=ca_key,
                       workdir=workdir, scepclient=REPO_ROOT / ".tools" / "bin" / "scepclient", parallel=4)
    return Simulator(f"https://{srv.public_name}/mdm", devices, poll_interval=poll_interval, ade=ade,
                     resolve={srv.public_name: srv.address}).start()
