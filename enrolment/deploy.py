"""The production deployment of the iPad side, as files: systemd units for NanoMDM (PostgreSQL),
KMFDDM (declarative management), the SCEP server, the webhook receiver and the web page, and the
nginx site that is their one HTTPS front. One set of templates (deploy/templates, jinja2 with
StrictUndefined) serves production (`werne deploy write`) and the lab (lab.proxy renders the same
nginx site on loopback).

Secrets never appear in these files: the units read them from environment files with mode 0600
(NanoMDM, scepserver) or from the secret files werne.toml names.

    DeployError   (core.errors.InputError: exit 2)   a host name or option that cannot be deployed
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from core.config import REPO_ROOT, Config
from core.errors import InputError
from enrolment.ade import enrol_path
from enrolment.errors import EnrolmentError

TEMPLATES = REPO_ROOT / "deploy" / "templates"
NGINX_TEMPLATE = "nginx-werne.conf.j2"
UNITS = ("nanomdm.service", "scepserver.service", "werne-webhook.service", "werne-web.service", "kmfddm.service")
# A DNS name: labels of letters, digits and hyphens, at least one dot (nginx's server_name, TLS SAN).
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class DeployError(EnrolmentError, InputError):
    """The deployment cannot be written as asked (bad host name, missing TLS files)."""


@dataclass(frozen=True)
class NginxSite:
    """What the nginx site template needs; production and lab differ only in these values."""

    host: str
    https_listen: str
    tls_cert: str
    tls_key: str
    nanomdm_upstream: str
    scep_upstream: str
    web_upstream: str
    enrol_path: str
    http_listen: str = ""
    acme_root: str = "/var/www/werne-acme"
    ipv6: bool = False
    written_by: str = "werne deploy write"


@dataclass(frozen=True)
class WrittenFile:
    """One file `write_deployment` wrote, and where it goes on the server."""

    path: Path
    install_to: str
    mode: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "install_to": self.install_to, "mode": oct(self.mode)}


@dataclass(frozen=True)
class Deployment:
    """Everything `werne deploy write` produced."""

    host: str
    out: Path
    files: list[WrittenFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "out": str(self.out), "files": [f.to_dict() for f in self.files]}


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       keep_trailing_newline=True, autoescape=False)  # noqa: S701 - config files, not HTML


def render_nginx_site(site: NginxSite) -> str:
    return _env().get_template(NGINX_TEMPLATE).render(**asdict(site))


def check_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if not _HOST.match(host):
        raise DeployError(f"'{host}' is not a DNS host name (e.g. mdm.example-city.de)")
    return host


def _port(listen: str) -> str:
    return listen.rpartition(":")[2]


def write_deployment(
    config: Config,
    host: str,
    out: Path,
    tls: str = "acme",
    tls_cert: str | None = None,
    tls_key: str | None = None,
    install_dir: str = "/opt/werne",
    etc_dir: str = "/etc/werne",
    state_dir: str = "/var/lib/werne",
    bin_dir: str = "/usr/local/bin",
    service_user: str = "werne",
) -> Deployment:
    """Write the units and the nginx site for `host` into `out` (systemd/ and nginx/).

    tls="acme": the certificate certbot keeps in /etc/letsencrypt/live/<host>/ (http-01 through the
    port-80 server block); tls="city": the city's certificate and key at tls_cert/tls_key.
    """
    host = check_host(host)
    if tls == "acme":
        cert = tls_cert or f"/etc/letsencrypt/live/{host}/fullchain.pem"
        key = tls_key or f"/etc/letsencrypt/live/{host}/privkey.pem"
    elif tls == "city":
        if not tls_cert or not tls_key:
            raise DeployError("--tls city needs --tls-cert and --tls-key (the city's certificate chain and key)")
        cert, key = tls_cert, tls_key
    else:
        raise DeployError(f"--tls must be acme or city, not {tls}")
    web_listen = config.web.listen
    values: dict[str, Any] = {
        "host": host,
        "written_by": f"werne deploy write --host {host}",
        "install_dir": install_dir,
        "etc_dir": etc_dir,
        "state_dir": state_dir,
        "config_file": f"{etc_dir}/werne.toml",
        "service_user": service_user,
        "werne_bin": f"{install_dir}/.venv/bin/werne",
        "nanomdm_bin": f"{bin_dir}/nanomdm",
        "scepserver_bin": f"{bin_dir}/scepserver",
        "kmfddm_bin": f"{bin_dir}/kmfddm",
        "kmfddm_listen": config.ddm.url.split("://", 1)[-1].rstrip("/"),
        "nanomdm_listen": "127.0.0.1:9000",
        "scep_listen": config.scep.listen,
        "scep_depot": f"{state_dir}/scep/depot",
        "scep_ca": f"{state_dir}/scep/depot/ca.pem",
        "scep_valid_days": config.scep.cert_valid_days,
        "webhook_listen": config.mdm.webhook_listen,
        "webhook_url": f"http://{config.mdm.webhook_listen}/webhook",
        "web_port": _port(web_listen),
        "enrol_path": enrol_path(config),
    }
    out = Path(out)
    (out / "systemd").mkdir(parents=True, exist_ok=True)
    (out / "nginx").mkdir(parents=True, exist_ok=True)
    env = _env()
    files = []
    for unit in UNITS:
        path = out / "systemd" / unit
        path.write_text(env.get_template(f"{unit}.j2").render(**values), encoding="utf-8")
        path.chmod(0o644)
        files.append(WrittenFile(path, f"/etc/systemd/system/{unit}", 0o644))
    site = NginxSite(
        host=host,
        https_listen="443",
        http_listen="80",
        ipv6=True,
        tls_cert=cert,
        tls_key=key,
        nanomdm_upstream=values["nanomdm_listen"],
        scep_upstream=values["scep_listen"],
        web_upstream=f"127.0.0.1:{values['web_port']}",
        enrol_path=values["enrol_path"],
        written_by=values["written_by"],
    )
    path = out / "nginx" / "werne.conf"
    path.write_text(render_nginx_site(site), encoding="utf-8")
    path.chmod(0o644)
    files.append(WrittenFile(path, "/etc/nginx/sites-available/werne.conf", 0o644))
    return Deployment(host, out, files)
