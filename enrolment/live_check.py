"""`werne mdm check`: is a live installation ready for iPads? One result per check, in order:

    tls          the HTTPS front's chain and host name (of mdm.server_url), and days left
    nanomdm-api  NanoMDM answers and takes werne's API key
    push-cert    a push certificate is installed, valid for compliance.push_cert_min_days more days,
                 and its topic is the one the enrolment profile carries
    scep         the SCEP server (scep.url) answers GetCACaps/GetCACert with werne's SCEP CA
    enrolment    the enrolment endpoint (dep.enrol_url) is werne's, and the profile it serves is
                 signed (built and verified with the same code the endpoint runs)
    webhook      the receiver NanoMDM posts to (mdm.webhook_listen) answers
    nanodep      NanoDEP's token for dep.name works (Apple's /account through NanoDEP's proxy)
    kmfddm       KMFDDM (ddm.url) answers and takes werne's key; how many group sets it holds

Every check runs, whatever the others say; a check's failure is a result, not an exception.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.findings import Findings


@dataclass(frozen=True)
class CheckResult:
    """One line of `werne mdm check`."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _verify(ca_file: Path | None) -> str | bool:
    return str(ca_file) if ca_file else True


def check_tls(config: Config, ca_file: Path | None, timeout: float) -> CheckResult:
    url = urlsplit(config.mdm.server_url)
    host, port = url.hostname or "", url.port or 443
    if url.scheme != "https":
        return CheckResult("tls", False, f"mdm.server_url {config.mdm.server_url} is not https")
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=host) as tls:
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as e:
        return CheckResult("tls", False, f"{host}:{port}: {e.verify_message}")
    except (OSError, ssl.SSLError) as e:
        return CheckResult("tls", False, f"{host}:{port}: {e.__class__.__name__}: {e}")
    not_after = dt.datetime.strptime(cert["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)
    days = (not_after - dt.datetime.now(dt.UTC)).days
    if days < 14:
        return CheckResult("tls", False, f"{host}: the certificate expires in {days} days")
    return CheckResult("tls", True, f"{host}: chain and host name verified, {days} days left")


def check_nanomdm(config: Config) -> CheckResult:
    from mdm_client.factory import nanomdm_client

    try:
        client = nanomdm_client(config)
        version = client.version()
        client.check_api_key()
    except WerneError as e:
        return CheckResult("nanomdm-api", False, str(e))
    return CheckResult("nanomdm-api", True, f"{config.mdm.url}: NanoMDM {version or '?'}, API key accepted")


def check_push_cert(config: Config, db: Database) -> CheckResult:
    from ipad.enrolment_profile import build_enrolment_profile
    from ipad.pushcert_store import current_push_cert

    current = current_push_cert(db)
    if current is None:
        return CheckResult("push-cert", False, "no push certificate installed (werne mdm push-cert install)")
    days = (current.not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    try:
        profile = build_enrolment_profile(config, db)
        mdm = next(p for p in profile.content["PayloadContent"] if p["PayloadType"] == "com.apple.mdm")
        profile_topic = mdm["Topic"]
    except WerneError as e:
        return CheckResult("push-cert", False, f"{current.topic}: the enrolment profile cannot be built: {e}")
    if profile_topic != current.topic:
        return CheckResult("push-cert", False, f"the profile carries {profile_topic}, installed is {current.topic}")
    if days < config.compliance.push_cert_min_days:
        return CheckResult("push-cert", False, f"{current.topic} expires in {days:.0f} days "
                                               f"(renew at {config.compliance.push_cert_min_days} days)")
    return CheckResult("push-cert", True, f"{current.topic}, {days:.0f} days left, the enrolment profile's topic")


def check_scep(config: Config, ca_file: Path | None) -> CheckResult:
    from ipad.scep_ca import check_scep_server
    from mdm_client.scep import SCEPClient

    try:
        client = SCEPClient(config.scep.url, timeout=config.scep.timeout, verify=_verify(ca_file))
        result = check_scep_server(config, client)
    except WerneError as e:
        return CheckResult("scep", False, str(e))
    return CheckResult("scep", True, f"{result.url}: GetCACert answers with {result.ca_subject}")


def check_enrolment(config: Config, db: Database, ca_file: Path | None) -> CheckResult:
    from enrolment.ade import enrol_path
    from ipad.enrolment_profile import signed_enrolment_profile

    url = config.dep.enrol_url or ""
    if not url:
        return CheckResult("enrolment", False, "dep.enrol_url is not set (the DEP profile's url)")
    # Without an Apple-signed MachineInfo werne cannot ask for a profile as a device does; an empty
    # body must come back as werne's 400, which proves the route reaches the endpoint.
    try:
        resp = requests.post(url, data=b"", timeout=config.mdm.timeout, verify=_verify(ca_file))
    except requests.RequestException as e:
        return CheckResult("enrolment", False, f"POST {url}: {e.__class__.__name__}")
    if resp.status_code != 400 or resp.content != b"bad request\n":
        return CheckResult("enrolment", False, f"POST {url}: {resp.status_code}, not werne's enrolment endpoint "
                                               f"(path {enrol_path(config)})")
    try:
        signed = signed_enrolment_profile(config, db)
    except WerneError as e:
        return CheckResult("enrolment", False, f"{url}: no profile to serve: {e}")
    if not _cms_verifies(signed, config.mdm.signing_cert_file):
        return CheckResult("enrolment", False, f"{url}: the served profile's signature does not verify")
    return CheckResult("enrolment", True, f"{url}: answers, serves a signed profile ({len(signed)} bytes)")


def _cms_verifies(signed: bytes, signer: Path | None) -> bool:
    if signer is None:
        return False
    argv = ["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-noverify", "-certfile", str(signer)]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = subprocess.run(argv, input=signed, capture_output=True, timeout=10, check=False, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return r.returncode == 0


def check_webhook(config: Config) -> CheckResult:
    url = f"http://{config.mdm.webhook_listen}/healthz"
    try:
        resp = requests.get(url, timeout=config.mdm.timeout)
    except requests.RequestException as e:
        reason = "connection refused" if "refused" in str(e).lower() else e.__class__.__name__
        return CheckResult("webhook", False, f"{url}: {reason}; NanoMDM's results cannot arrive")
    if resp.status_code != 200:
        return CheckResult("webhook", False, f"{url}: {resp.status_code}")
    return CheckResult("webhook", True, f"the receiver at {config.mdm.webhook_listen} answers")


def check_nanodep(config: Config) -> CheckResult:
    from mdm_client.factory import nanodep_client

    try:
        account = nanodep_client(config).account()
    except WerneError as e:
        return CheckResult("nanodep", False, str(e))
    name = account.get("org_name") or account.get("server_name") or config.dep.name
    return CheckResult("nanodep", True, f"DEP token '{config.dep.name}' works ({name})")


def check_kmfddm(config: Config) -> CheckResult:
    from mdm_client.factory import kmfddm_client

    try:
        client = kmfddm_client(config)
        version = client.version()
        sets = client.sets()
    except WerneError as e:
        return CheckResult("kmfddm", False, str(e))
    werne_sets = [s for s in sets if s.startswith("werne-")]
    if not werne_sets:
        return CheckResult("kmfddm", False, f"{config.ddm.url}: KMFDDM {version or '?'} answers, but holds no "
                                            "werne set yet (werne ipad declarations apply)")
    return CheckResult("kmfddm", True, f"{config.ddm.url}: KMFDDM {version or '?'}, API key accepted, "
                                       f"{len(werne_sets)} werne sets")


@dataclass
class CheckReport(Findings):
    """Every line of `werne mdm check`; a failing check is a finding."""

    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run_checks(
    config: Config, db: Database, tls_ca_file: Path | None = None, timeout: float = 5.0
) -> list[CheckResult]:
    """Every check, in the order of the module docstring; tls_ca_file defaults to mdm.tls_ca_file."""
    tls_ca_file = tls_ca_file or config.mdm.tls_ca_file
    checks: list[Callable[[], CheckResult]] = [
        lambda: check_tls(config, tls_ca_file, timeout),
        lambda: check_nanomdm(config),
        lambda: check_push_cert(config, db),
        lambda: check_scep(config, tls_ca_file),
        lambda: check_enrolment(config, db, tls_ca_file),
        lambda: check_webhook(config),
        lambda: check_nanodep(config),
        lambda: check_kmfddm(config),
    ]
    return [c() for c in checks]
