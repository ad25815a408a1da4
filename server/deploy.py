"""The MDM server's files, from the config: systemd units for NanoMDM (PostgreSQL), NanoDEP,
KMFDDM, the SCEP server, the webhook receiver, the web page and the nightly run, and the nginx site
that is their one HTTPS front, in its two states (bootstrap: port 80 only, until a certificate is
there; then HTTPS). One set of templates (deploy/templates, jinja2 with StrictUndefined) serves
`werne server install` (which copies what this module renders), `werne deploy write` (for people
who copy the files by hand) and the lab (lab.proxy renders the same nginx site on loopback).

Every path, port and account comes from the config (`server_layout`): nothing here names
/var/lib/werne or a port of its own. Secrets never appear in these files: the units read them from
environment files (mode 0600) or from the key files werne.toml names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import asdict, dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, meta

from core.config import MAX_NANOMDM_REPLICAS, REPO_ROOT, Config
from core.errors import OutputError
from core.files import make_output_dir, write_output
from core.text import line_safe
from enrolment.ade import MAX_BODY as ENROL_MAX_BODY
from enrolment.ade import enrol_path
from ipad.golive.scep_ca import trust_bundle_file
from server.errors import ServerInputError
from server.tls import TLSFiles, check_tls_files

TEMPLATES = REPO_ROOT / "deploy" / "templates"
NGINX_TEMPLATE = "nginx-werne.conf.j2"
NGINX_SITE = "werne.conf"
NGINX_BOOTSTRAP_SITE = "werne-bootstrap.conf"
# The units every server has; NanoDEP's joins them when [dep] enabled (Apple School Manager).
CORE_UNITS = ("werne-webhook.service", "scepserver.service", "kmfddm.service", "nanomdm.service",
              "werne-web.service")
NANODEP_UNIT = "nanodep.service"
# The nightly run's shard worker ([compliance] shards > 1, compliance.shards): one per server.
WORKER_UNIT = "werne-compliance-worker.service"
# The Debian packages every server needs (certbot joins them for ACME); the lab's package source
# offers them to a lab server (lab.image.server_debs).
SERVER_PACKAGES = ("postgresql", "nginx", "python3-venv", "openssl")
# With server.tls = "acme": the ACME client (Debian's certbot, with its certbot.timer for renewals).
ACME_PACKAGES = ("certbot",)
# Written for every server, started only on purpose: the nightly renewal of the iPads' identities,
# the nightly run and the nightly backup (their timers are enabled by the install; the backup's once
# [backup] names its password), the home-office watcher (only where laptops work from home,
# docs/operations.md) and the alert for a failed unit (their OnFailure=).
SCHEDULED_UNITS = ("werne-renew.service", "werne-renew.timer", "werne-compliance.service", "werne-compliance.timer",
                   "werne-watch.service", "werne-backup.service", "werne-backup.timer", "werne-alert@.service")
TIMERS = ("werne-renew.timer", "werne-compliance.timer")
NANOMDM_UNIT = "nanomdm.service"
# The settings the deployment implies, for <state_dir>/endpoints.toml (core.config merges them under
# werne.toml): web.trusted_proxies is nginx's own address.
ENDPOINTS_TEMPLATE = "endpoints.toml.j2"
ENDPOINTS_FILE = "endpoints.toml"
# Every value a template interpolates is one token of nginx's and systemd's syntax: nothing that
# ends a directive (';', '{', '}'), starts a comment, a variable or a specifier ('#', '$', '%'),
# quotes, escapes or separates arguments (whitespace, quotes, backslash), or ends a line. Checked
# for every value at the one place templates are rendered (`render_template`), behind the doors
# (the config's validators, `check_path`, `server_layout`).
_TOKEN = re.compile(r"^[A-Za-z0-9._:/@+=,\[\]-]*$")
# An absolute path of plain names (no '..'), for every folder and file the [server] section names.
_ABS_PATH = re.compile(r"^(/[A-Za-z0-9._@+-]+)+/?$|^/$")
# The URL path of the enrolment endpoint (an nginx `location =`).
_URL_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
# A DNS name: labels of letters, digits and hyphens, at least one dot (nginx's server_name, TLS SAN).
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# NanoMDM posts each device report to the webhook as JSON with the body base64-encoded (4/3 of
# its size) next to a few fields of its own: a report nginx lets through must fit the webhook's
# limit once encoded, or NanoMDM takes it and the receiver drops it.
_WEBHOOK_ENVELOPE = 16 * 1024
# SCEP's PKIOperation carries one CSR in a CMS envelope: a few KB.
SCEP_MAX_BODY = 64 * 1024


class DeployError(ServerInputError):
    """The deployment cannot be written as asked (bad host name, missing TLS files, a mismatch)."""


class Comment(str):
    """Text for a comment line of a generated file (`# Written by ...`): one printable ASCII line."""


class Words(str):
    """A value systemd reads to the end of its line (OnCalendar=): tokens and single spaces."""


def check_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if not _HOST.match(host):
        raise DeployError(f"{line_safe(repr(host[:80]))} is not a DNS host name (e.g. mdm.example-city.de)")
    return host


def check_path(value: Path | str, setting: str) -> Path:
    """An absolute path of plain names for a generated file; DeployError naming the setting otherwise."""
    text = str(value)
    if not _ABS_PATH.match(text) or "/../" in f"{text}/" or "/./" in f"{text}/":
        raise DeployError(f"{setting}: {line_safe(repr(text[:80]))} is not an absolute path of plain names "
                          "(letters, digits, '.', '_', '@', '+', '-', '/'; no spaces, quotes, '..', '$' or ';')")
    return Path(text)


def _checked(name: str, value: Any) -> Any:
    """`value` if a template may write it (see _TOKEN); DeployError naming it otherwise."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, list | tuple):
        return [_checked(name, item) for item in value]
    text = str(value)
    if isinstance(value, Comment):
        ok = text.isprintable() and text.isascii()
    elif isinstance(value, Words):
        ok = all(word and _TOKEN.match(word.replace("*", "").replace("~", "")) for word in text.split(" "))
    else:
        ok = bool(_TOKEN.match(text))
    if not ok:
        raise DeployError(f"{name}: refusing to write {line_safe(repr(text[:80]))} into a unit, the nginx site or "
                          "an environment file: it is not one plain token (letters, digits and . _ : / @ + = , [ ] -)")
    return value


def check_token(value: str, name: str) -> str:
    """`value` if it may go into a generated file as one token; DeployError naming `name` otherwise."""
    return str(_checked(name, value))


def _loopback(url_or_listen: str, what: str) -> str:
    """host:port of a service werne reaches on this server (from its URL or listen setting)."""
    text = url_or_listen if "://" in url_or_listen else f"http://{url_or_listen}"
    parts = urlsplit(text)
    if not parts.hostname or not parts.port:
        raise DeployError(f"{what} {url_or_listen!r} names no host and port")
    return f"{parts.hostname}:{parts.port}"


def mdm_max_body(config: Config) -> int:
    """The largest device report nginx passes to NanoMDM: what still fits the webhook once encoded."""
    return max(64 * 1024, (config.mdm.webhook_max_body - _WEBHOOK_ENVELOPE) * 3 // 4)


@dataclass(frozen=True)
class ServerLayout:
    """Where everything of the MDM server lives and listens, from the config: the one source for
    the units, the nginx site and the install playbook's variables."""

    host: str
    user: str
    install_dir: Path
    config_dir: Path
    state_dir: Path
    bin_dir: Path
    # Where werne and KMFDDM reach NanoMDM's API (mdm.url): NanoMDM itself, or with several
    # replicas nginx's loopback front over all of them.
    nanomdm_listen: str
    nanodep_listen: str
    kmfddm_listen: str
    scep_listen: str
    web_listen: str
    webhook_listen: str
    https_port: int
    tls: str
    tls_cert: Path
    tls_key: Path
    acme_root: Path
    acme_email: str
    acme_directory_url: str
    acme_ca_file: Path | None
    hsts_max_age: int
    nanodep: bool
    nanomdm_database: str
    scep_valid_days: int
    scep_trust_bundle: Path
    enrol_path: str
    mdm_max_body: int
    web_max_body: int
    backup_dir: Path
    backup_on_calendar: str
    # Each NanoMDM process's own listen address, replica 1 first (one: the same as nanomdm_listen).
    nanomdm_replicas: tuple[str, ...] = ()
    # Requests nginx passes to one replica at once (0: no limit, one NanoMDM as before).
    nanomdm_max_conns: int = 0
    # The variable werne reads NanoMDM's DSN from (mdm.storage_dsn_env).
    nanomdm_dsn_env: str = "NANOMDM_STORAGE_DSN"

    @property
    def nanomdm_dsn(self) -> str:
        """NanoMDM's DSN on the server: the service account's role, peer authentication, no password."""
        return f"host=/run/postgresql user={self.user} dbname={self.nanomdm_database} sslmode=disable"

    @property
    def api_front(self) -> bool:
        """Whether nginx fronts NanoMDM's API on loopback (several replicas)."""
        return len(self.nanomdm_replicas) > 1

    @property
    def nanomdm_units(self) -> tuple[str, ...]:
        """NanoMDM's units, replica 1 first: nanomdm.service stays replica 1's name, so every unit
        that orders itself after nanomdm.service still does, and one replica is today's layout."""
        return tuple(nanomdm_unit(i) for i in range(1, len(self.nanomdm_replicas) + 1))

    # The nightly run in shards ([compliance] shards > 1): a worker unit beside the services.
    compliance_worker: bool = False
    # [metrics] textfile_dir outside the state dir (the folder the site's node_exporter reads): the
    # install makes it werne's and the nightly unit may write it. None: below the state dir, or no metrics.
    metrics_dir: Path | None = None

    @property
    def venv(self) -> Path:
        return self.install_dir / "venv"

    @property
    def werne_bin(self) -> Path:
        return self.venv / "bin" / "werne"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "werne.toml"

    @property
    def scep_depot(self) -> Path:
        return self.state_dir / "scep" / "depot"

    def env_file(self, service: str) -> Path:
        """The environment file (root, mode 0600) that holds one service's secrets."""
        return self.config_dir / f"{service}.env"

    @property
    def units(self) -> tuple[str, ...]:
        """The long-running services, in start order (the NanoMDM replicas one after another)."""
        i = CORE_UNITS.index(NANOMDM_UNIT)
        return (*CORE_UNITS[:i], *self.nanomdm_units, *CORE_UNITS[i + 1:], *((NANODEP_UNIT,) if self.nanodep else ()),
                *((WORKER_UNIT,) if self.compliance_worker else ()))

    @property
    def unused_units(self) -> tuple[str, ...]:
        """Units a smaller config leaves out: NanoDEP's without [dep], replicas beyond [mdm] replicas,
        the compliance worker without [compliance] shards."""
        extra = tuple(nanomdm_unit(i) for i in range(len(self.nanomdm_replicas) + 1, MAX_NANOMDM_REPLICAS + 1))
        return (*(() if self.nanodep else (NANODEP_UNIT,)), *extra, *(() if self.compliance_worker else (WORKER_UNIT,)))

    def unit_values(self, unit: str, values: dict[str, Any]) -> dict[str, Any]:
        """The template values for one unit: a NanoMDM replica's own listen address and number."""
        if unit not in self.nanomdm_units:
            return values
        i = self.nanomdm_units.index(unit)
        return {**values, "replica": i + 1, "nanomdm_listen": self.nanomdm_replicas[i]}

    def template_name(self, unit: str) -> str:
        return f"{NANOMDM_UNIT}.j2" if unit in self.nanomdm_units else f"{unit}.j2"

    @property
    def all_units(self) -> tuple[str, ...]:
        return (*self.units, *SCHEDULED_UNITS)

    def template_values(self, written_by: str) -> dict[str, Any]:
        values: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        web_host, _, web_port = self.web_listen.rpartition(":")
        values.update({
            "written_by": Comment(written_by),
            "backup_on_calendar": Words(self.backup_on_calendar),
            "venv": str(self.venv),
            "werne_bin": str(self.werne_bin),
            "config_file": str(self.config_file),
            "scep_depot": str(self.scep_depot),
            "webhook_url": f"http://{self.webhook_listen}/webhook",
            "web_host": web_host,
            "web_port": web_port,
            "nanomdm_replicas": list(self.nanomdm_replicas),
            "nanomdm_api_front": self.nanomdm_listen,
            "nanomdm_dsn": Words(self.nanomdm_dsn),
            "replica": 1,
        })
        for service in ("nanomdm", "nanodep", "kmfddm", "scep"):
            values[f"{service}_env"] = str(self.env_file(service))
        for tool in ("nanomdm", "depserver", "kmfddm", "scepserver"):
            values[f"{tool}_bin"] = str(self.bin_dir / tool)
        return values


def nanomdm_unit(replica: int) -> str:
    """Replica 1 is nanomdm.service (today's unit); the others nanomdm-replicaN.service."""
    return NANOMDM_UNIT if replica == 1 else f"nanomdm-replica{replica}.service"


def nanomdm_replicas(config: Config) -> tuple[str, ...]:
    """Each NanoMDM process's listen address: mdm.url itself for one, else mdm.url's host at
    replica_base_port, +1, ... (mdm.url then is nginx's API front)."""
    api = _loopback(config.mdm.url, "mdm.url")
    m = config.mdm
    if m.replicas == 1:
        return (api,)
    host = api.rpartition(":")[0]
    return tuple(f"{host}:{m.replica_base_port + i}" for i in range(m.replicas))


def _check_ports(listens: dict[str, str]) -> None:
    """Two services on one address would fight for it: the second never starts."""
    seen: dict[str, str] = {}
    for what, listen in listens.items():
        if listen in seen:
            raise DeployError(f"{what} and {seen[listen]} both listen on {listen}: give one another port")
        seen[listen] = what


def _public_hosts(config: Config) -> dict[str, str]:
    urls = {"mdm.server_url": config.mdm.server_url, "scep.url": config.scep.url}
    if config.dep.enrol_url:
        urls["dep.enrol_url"] = config.dep.enrol_url
    if config.mdm.checkin_url:
        urls["mdm.checkin_url"] = config.mdm.checkin_url
    return {name: (urlsplit(url).hostname or "") for name, url in urls.items()}


def server_layout(config: Config, host: str | None = None) -> ServerLayout:
    """The server's layout from the config. `host`, when given, must be mdm.server_url's host:
    the enrolment profile sends the iPads there, so a site for another name would never see them."""
    server_url = urlsplit(config.mdm.server_url)
    if server_url.scheme != "https" or not server_url.hostname:
        raise DeployError(f"mdm.server_url {config.mdm.server_url} must be https://HOST/... (the iPads' MDM URL)")
    public = check_host(server_url.hostname)
    if host is not None and check_host(host) != public:
        raise DeployError(f"--host {check_host(host)} differs from mdm.server_url's host {public}: the enrolment "
                          "profile sends the iPads there (set mdm.server_url, or leave --host out)")
    for name, other in _public_hosts(config).items():
        if other.lower() != public:
            raise DeployError(f"{name} names {other or 'no host'}, not {public}: nginx serves one host name")
    s = config.server
    for setting, path in (("server.install_dir", s.install_dir), ("server.config_dir", s.config_dir),
                          ("server.bin_dir", s.bin_dir), ("site.state_dir", config.state_dir),
                          ("server.acme_root", s.acme_root), ("server.tls_cert_file", s.tls_cert_file),
                          ("server.tls_key_file", s.tls_key_file), ("backup.dir", config.backup.dir),
                          ("metrics.textfile_dir", config.metrics.textfile_dir)):
        if path is not None:
            check_path(path, setting)
    if s.tls == "city":
        if s.tls_cert_file is None or s.tls_key_file is None:
            raise DeployError("server.tls = \"city\" needs server.tls_cert_file and server.tls_key_file "
                              "(the city's certificate chain and key, on the server)")
        cert, key = s.tls_cert_file, s.tls_key_file
    else:
        if s.acme_directory_url and not s.acme_directory_url.startswith("https://"):
            raise DeployError(f"server.acme_directory_url {s.acme_directory_url} is not https: the ACME "
                              "account key and the certificate order must not travel in the clear")
        cert = s.tls_cert_file or Path(f"/etc/letsencrypt/live/{public}/fullchain.pem")
        key = s.tls_key_file or Path(f"/etc/letsencrypt/live/{public}/privkey.pem")
    replicas = nanomdm_replicas(config)
    settings = {"mdm.url": config.mdm.url, "dep.url": config.dep.url, "ddm.url": config.ddm.url,
                "scep.listen": config.scep.listen, "web.listen": config.web.listen,
                "mdm.webhook_listen": config.mdm.webhook_listen}
    listens = {name: _loopback(value, name) for name, value in settings.items()}
    _check_ports({**{k: v for k, v in listens.items() if k != "dep.url" or config.dep.enabled},
                  **({f"NanoMDM replica {i}": r for i, r in enumerate(replicas, 1)} if len(replicas) > 1 else {})})
    return ServerLayout(
        host=public, user=s.user, install_dir=s.install_dir, config_dir=s.config_dir,
        state_dir=config.state_dir, bin_dir=s.bin_dir,
        nanomdm_listen=listens["mdm.url"], nanodep_listen=listens["dep.url"], kmfddm_listen=listens["ddm.url"],
        scep_listen=listens["scep.listen"], web_listen=listens["web.listen"],
        webhook_listen=listens["mdm.webhook_listen"],
        https_port=server_url.port or 443, tls=s.tls, tls_cert=cert, tls_key=key,
        acme_root=s.acme_root, acme_email=s.acme_email, acme_directory_url=s.acme_directory_url,
        acme_ca_file=s.acme_ca_file, hsts_max_age=s.hsts_max_age,
        nanodep=config.dep.enabled, nanomdm_database=s.nanomdm_database,
        scep_valid_days=config.scep.cert_valid_days, scep_trust_bundle=trust_bundle_file(config),
        enrol_path=_enrol_path(config),
        mdm_max_body=mdm_max_body(config), web_max_body=config.web.max_upload_bytes,
        backup_dir=config.backup.dir, backup_on_calendar=config.backup.on_calendar, nanomdm_replicas=replicas,
        nanomdm_max_conns=config.mdm.replica_max_conns, nanomdm_dsn_env=config.mdm.storage_dsn_env,
        compliance_worker=config.compliance.shards > 1, metrics_dir=_metrics_dir(config),
    )


def _metrics_dir(config: Config) -> Path | None:
    folder = config.metrics.textfile_dir
    if not config.metrics.enabled or folder is None or folder.is_relative_to(config.state_dir):
        return None
    return folder


def _enrol_path(config: Config) -> str:
    path = enrol_path(config)
    if not _URL_PATH.match(path):
        raise DeployError(f"dep.enrol_url: its path {line_safe(repr(path[:80]))} (or the DEP profile's url's) is not "
                          "a plain URL path (letters, digits, '.', '_', '~', '-', '/')")
    return path


def nginx_addresses(layout: ServerLayout) -> list[str]:
    """The address(es) nginx connects to the web page from, as networks: the one proxy the web
    page may believe (web.trusted_proxies). nginx runs on this host and reaches web.listen over a
    local route, whose source address is the listen address itself, or loopback for a wildcard."""
    host = layout.web_listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return ["127.0.0.1/32", "::1/128"]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise DeployError(f"web.listen {layout.web_listen}: name an address (e.g. 127.0.0.1:8080), so that the "
                          "web page can tell nginx, its one trusted proxy, by its address") from None
    if address.is_unspecified or address.is_loopback:
        address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    return [str(ipaddress.ip_network(address))]


def check_trusted_proxies(config: Config, layout: ServerLayout) -> list[str]:
    """nginx's address(es), for web.trusted_proxies; DeployError when the config names others (then
    forwarded headers from something else than nginx would be believed, or nginx's would not be)."""
    wanted = nginx_addresses(layout)
    named = config.web.trusted_proxies
    if named and sorted(named) != sorted(wanted):
        raise DeployError(f"web.trusted_proxies: {line_safe(', '.join(named)[:120])} is not nginx's address "
                          f"({', '.join(wanted)}); leave the setting out, the deployment sets it")
    return wanted


@dataclass(frozen=True)
class NginxSite:
    """What the nginx site template needs; production and lab differ only in these values.

    tls_ready=False renders the bootstrap site: port 80 only (the ACME challenge and a redirect),
    which nginx accepts before any certificate exists.
    """

    host: str
    https_listen: str
    tls_cert: str
    tls_key: str
    # NanoMDM: one address, or several replicas (nginx then fronts their API on api_listen).
    nanomdm_upstream: str | tuple[str, ...]
    scep_upstream: str
    web_upstream: str
    enrol_path: str
    http_listen: str = ""
    acme_root: str = "/var/www/werne-acme"
    ipv6: bool = False
    written_by: str = "werne deploy write"
    tls_ready: bool = True
    hsts_max_age: int = 31536000
    mdm_max_body: int = 768 * 1024
    enrol_max_body: int = ENROL_MAX_BODY
    scep_max_body: int = SCEP_MAX_BODY
    web_max_body: int = 2 * 1024 * 1024
    # With several NanoMDM replicas: the loopback address (mdm.url) where nginx serves their API,
    # and how many requests each replica gets at once (0: no limit).
    api_listen: str = ""
    nanomdm_max_conns: int = 0


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
    """Everything `write_deployment` produced."""

    host: str
    out: Path
    files: list[WrittenFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "out": str(self.out), "files": [f.to_dict() for f in self.files]}


@cache
def _env() -> Environment:
    # One per process: Jinja keeps each compiled template and compiles it again when its file changes.
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       keep_trailing_newline=True, autoescape=False)  # noqa: S701 - config files, not HTML


@lru_cache(maxsize=64)
def _variables(source: str) -> frozenset[str]:
    """The variables a template's source uses (its includes use only their own booleans)."""
    return frozenset(meta.find_undeclared_variables(_env().parse(source)))


def render_template(name: str, values: dict[str, Any]) -> str:
    """Render one deploy template, each value it uses checked first (the last guard behind the doors)."""
    env = _env()
    assert env.loader is not None
    used = _variables(env.loader.get_source(env, name)[0])
    return env.get_template(name).render(**{k: _checked(k, v) if k in used else v for k, v in values.items()})


def render_nginx_site(site: NginxSite) -> str:
    upstream = site.nanomdm_upstream
    upstreams = [upstream] if isinstance(upstream, str) else list(upstream)
    return render_template(NGINX_TEMPLATE, {**asdict(site), "written_by": Comment(site.written_by),
                                            "nanomdm_upstream": upstreams})


def production_site(layout: ServerLayout, tls_ready: bool, written_by: str) -> NginxSite:
    """The server's nginx site: HTTPS on the public port, port 80 for ACME and the redirect."""
    return NginxSite(
        host=layout.host, https_listen=str(layout.https_port), http_listen="80", ipv6=True,
        tls_cert=str(layout.tls_cert), tls_key=str(layout.tls_key),
        nanomdm_upstream=layout.nanomdm_replicas, scep_upstream=layout.scep_listen,
        web_upstream=layout.web_listen, enrol_path=layout.enrol_path, acme_root=str(layout.acme_root),
        written_by=written_by, tls_ready=tls_ready, hsts_max_age=layout.hsts_max_age,
        mdm_max_body=layout.mdm_max_body, web_max_body=layout.web_max_body,
        api_listen=layout.nanomdm_listen if layout.api_front else "", nanomdm_max_conns=layout.nanomdm_max_conns,
    )




def check_tls_here(layout: ServerLayout, required: bool = False) -> None:
    """Check the HTTPS certificate and key (server.tls) when they are on this machine; `required`
    (an install on this machine with the city's files): they must be. Before certbot has made them
    (acme) or on a machine that is not the server, the install checks them on the server."""
    present = layout.tls_cert.exists() or layout.tls_key.exists()
    if present or (required and layout.tls == "city"):
        check_tls_files(layout.tls_cert, layout.tls_key)


def check_server_tls(config: Config) -> TLSFiles:
    """The certificate and key the config's nginx site serves, checked on this machine (the server)."""
    layout = server_layout(config)
    return check_tls_files(layout.tls_cert, layout.tls_key)


def write_deployment(config: Config, out: Path, host: str | None = None) -> Deployment:
    """Write the units (systemd/) and both states of the nginx site (nginx/) into `out`.

    nginx/werne.conf is the HTTPS site (with port 80 for ACME and the redirect);
    nginx/werne-bootstrap.conf is port 80 alone, for a server that has no certificate yet.
    """
    layout = server_layout(config, host)
    proxies = check_trusted_proxies(config, layout)
    check_tls_here(layout)
    written_by = f"werne deploy write ({layout.host})"
    values = layout.template_values(written_by)
    out = Path(out)
    # Everything rendered (and so every value checked) first; then written through core.files (one
    # OutputError line for a read-only place, a missing folder the user named, or a full disk).
    rendered = [(out / "systemd" / unit, render_template(layout.template_name(unit), layout.unit_values(unit, values)),
                 f"/etc/systemd/system/{unit}") for unit in layout.all_units]
    rendered += [(out / "nginx" / name, render_nginx_site(production_site(layout, ready, written_by)),
                  f"/etc/nginx/sites-available/{name}") for name, ready in ((NGINX_SITE, True),
                                                                           (NGINX_BOOTSTRAP_SITE, False))]
    rendered.append((out / "werne" / ENDPOINTS_FILE,
                     render_template(ENDPOINTS_TEMPLATE, {**values, "trusted_proxies": proxies}),
                     str(layout.state_dir / ENDPOINTS_FILE)))
    folders = [out, out / "systemd", out / "nginx", out / "werne"]
    made = [d for d in folders if not d.exists()]
    files: list[WrittenFile] = []
    try:
        for d in folders:
            make_output_dir(d)
        for path, text, install_to in rendered:
            write_output(path, text.encode("utf-8"), mode=0o644)
            files.append(WrittenFile(path, install_to, 0o644))
    except OutputError:
        # A full disk half-way: take back what this call made, so no half deployment is left.
        for f in files:
            f.path.unlink(missing_ok=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return Deployment(layout.host, out, files)
