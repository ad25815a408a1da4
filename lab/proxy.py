"""The lab's HTTPS front: a real nginx (Debian's) with the production site template, on loopback.

`up(directory, site_values)` makes (once) a lab TLS CA and a server certificate for LAB_HOST and
127.0.0.1 (directory/tls/), renders enrolment.deploy's nginx site with lab values, wraps it in a
minimal main config of its own (pid, logs and temp paths in `directory`, not the system service's),
checks it with `nginx -t` and starts `nginx -c CONF -p PREFIX -g 'daemon off;'` as a lab process.
Clients trust tls/ca.pem; they connect to 127.0.0.1 (in the certificate's SAN, so no resolver
override is needed; LAB_HOST is there too for clients that send it as SNI).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from enrolment.deploy import NginxSite, render_nginx_site
from lab.mdm import LabMDMError, free_port, issue_leaf, make_ca, start_process, stop_process

LAB_HOST = "mdm.lab.werne.test"
PROCESS = "nginx"
NGINX_BIN = Path(shutil.which("nginx") or "/usr/sbin/nginx")


@dataclass(frozen=True)
class LabTLS:
    """The lab's TLS CA and the proxy's server certificate."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def make_tls(directory: Path, host: str = LAB_HOST) -> LabTLS:
    """A lab CA (kept if it exists) and a fresh server certificate for host and 127.0.0.1."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca(directory)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    issue_leaf(ca_cert, ca_key, host, cert_path, key_path, days=90, keep=False, extensions=(
        (x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
         False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
    ))
    return LabTLS(ca_cert, ca_key, cert_path, key_path)


def main_config(prefix: Path, site_file: Path) -> str:
    """nginx's main config for the lab: everything of its own under prefix, the site included."""
    return (
        "# The lab's nginx (lab.proxy); the site is deploy/templates/nginx-werne.conf.j2.\n"
        # Root's own process in the lab (its files are in a 0700 state dir); Debian's www-data in production.
        "user root;\n"
        "worker_processes 1;\n"
        f"pid {prefix / 'logs' / 'nginx-master.pid'};\n"
        f"error_log {prefix / 'logs' / 'nginx-error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"    access_log {prefix / 'logs' / 'nginx-access.log'};\n"
        f"    client_body_temp_path {prefix / 'tmp' / 'body'};\n"
        f"    proxy_temp_path {prefix / 'tmp' / 'proxy'};\n"
        f"    fastcgi_temp_path {prefix / 'tmp' / 'fastcgi'};\n"
        f"    uwsgi_temp_path {prefix / 'tmp' / 'uwsgi'};\n"
        f"    scgi_temp_path {prefix / 'tmp' / 'scgi'};\n"
        "    default_type application/octet-stream;\n"
        f"    include {site_file};\n"
        "}\n"
    )


def up(directory: Path, nanomdm: str, scep: str, web: str, enrol_path: str, port: int | None = None,
       tls: LabTLS | None = None) -> tuple[str, LabTLS]:
    """Start the lab's nginx in front of the given loopback upstreams; returns its base URL and TLS."""
    if not NGINX_BIN.is_file():
        raise LabMDMError("nginx is missing; run scripts/setup.sh (it installs Debian's nginx)")
    down(directory)
    tls = tls or make_tls(directory / "tls")
    port = port or free_port()
    site = NginxSite(host=LAB_HOST, https_listen=f"127.0.0.1:{port}", tls_cert=str(tls.cert), tls_key=str(tls.key),
                     nanomdm_upstream=nanomdm, scep_upstream=scep, web_upstream=web, enrol_path=enrol_path,
                     written_by="lab.proxy")
    for sub in ("logs", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    site_file, conf = directory / "nginx-site.conf", directory / "nginx.conf"
    site_file.write_text(render_nginx_site(site), encoding="utf-8")
    conf.write_text(main_config(directory, site_file), encoding="utf-8")
    argv = [str(NGINX_BIN), "-c", str(conf), "-p", str(directory)]
    test = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    if test.returncode != 0:
        raise LabMDMError(f"nginx -t refused the lab config: {test.stderr.strip().splitlines()[-1:]}")
    pid = start_process(PROCESS, [*argv, "-g", "daemon off;"], directory)
    url = f"https://127.0.0.1:{port}"
    _wait_tls(url, tls.ca_cert, directory, pid)
    return url, tls


def _wait_tls(url: str, ca: Path, directory: Path, pid: int, timeout: float = 15.0) -> None:
    import time

    import requests

    from lab.mdm import _CHILDREN

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            requests.get(url + "/healthz", timeout=1, verify=str(ca))
            return
        except requests.RequestException:
            child = _CHILDREN.get(pid)
            if child is not None and child.poll() is not None:
                break
            time.sleep(0.1)
    raise LabMDMError(f"the lab's nginx did not start ({url}); see {directory / 'logs'}")


def down(directory: Path) -> None:
    if directory.is_dir():
        stop_process(PROCESS, directory)
