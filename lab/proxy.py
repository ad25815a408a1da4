"""The lab's HTTPS front: a real nginx (Debian's) with the production site template, on loopback.

`up(directory, ...)` makes (once) a lab TLS CA and a server certificate for LAB_HOST and 127.0.0.1
(lab.certs.make_tls), renders server.deploy's nginx site with lab values, wraps it in a minimal
main config of its own (pid, logs and temp paths in `directory`, not the system service's), checks
it with `nginx -t` and starts `nginx -c CONF -p PREFIX -g 'daemon off;'` as a lab service.
Clients trust tls/ca.pem; they connect to 127.0.0.1 (in the certificate's SAN, so no resolver
override is needed; LAB_HOST is there too for clients that send it as SNI).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab import processes
from lab.certs import LAB_HOST, LabTLS, make_tls
from lab.errors import LabServiceError
from lab.processes import HTTPReady, Service
from server.deploy import NginxSite, render_nginx_site

PROCESS = "nginx"
NGINX_BIN = Path(shutil.which("nginx") or "/usr/sbin/nginx")


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


def prepare(directory: Path, nanomdm: str | tuple[str, ...], scep: str, web: str, enrol_path: str, port: int,
            tls: LabTLS, api_listen: str = "", max_conns: int = 0) -> Service:
    """Write and check the lab's nginx config in front of the given loopback upstreams; returns
    nginx's descriptor (ready when https://127.0.0.1:PORT answers with the lab CA's certificate).
    Several NanoMDM replicas: nginx spreads over them and serves their API on `api_listen`."""
    if not NGINX_BIN.is_file():
        raise LabServiceError("nginx is missing; run scripts/setup.sh (it installs Debian's nginx)")
    site = NginxSite(host=LAB_HOST, https_listen=f"127.0.0.1:{port}", tls_cert=str(tls.cert), tls_key=str(tls.key),
                     nanomdm_upstream=nanomdm, scep_upstream=scep, web_upstream=web, enrol_path=enrol_path,
                     written_by="lab.proxy", api_listen=api_listen,
                     nanomdm_max_conns=max_conns)
    for sub in ("logs", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    site_file, conf = directory / "nginx-site.conf", directory / "nginx.conf"
    site_file.write_text(render_nginx_site(site), encoding="utf-8")
    conf.write_text(main_config(directory, site_file), encoding="utf-8")
    argv = [str(NGINX_BIN), "-c", str(conf), "-p", str(directory)]
    test = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    if test.returncode != 0:
        raise LabServiceError(f"nginx -t refused the lab config: {test.stderr.strip().splitlines()[-1:]}")
    return Service(name=PROCESS, what="the lab's nginx", directory=directory, argv=(*argv, "-g", "daemon off;"),
                   ready=HTTPReady(f"https://127.0.0.1:{port}/healthz", ca=tls.ca_cert, any_status=True),
                   depends_on=("nanomdm", "scepserver", "web"))


def up(directory: Path, nanomdm: str, scep: str, web: str, enrol_path: str, port: int | None = None,
       tls: LabTLS | None = None) -> tuple[str, LabTLS]:
    """Start the lab's nginx in front of the given loopback upstreams; returns its base URL and TLS."""
    down(directory)
    tls = tls or make_tls(directory / "tls")
    port = port or processes.free_port()
    processes.up(prepare(directory, nanomdm, scep, web, enrol_path, port, tls))
    return f"https://127.0.0.1:{port}", tls


def down(directory: Path) -> None:
    if directory.is_dir():
        processes.stop(PROCESS, directory)
