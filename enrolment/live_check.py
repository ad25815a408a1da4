"""`werne mdm check`: is a live installation ready for iPads? One result per check, in order:

    tls          the HTTPS front's chain and host name (of mdm.server_url), and days left
    nanomdm-api  NanoMDM answers and takes werne's API key
    push-cert    a push certificate is installed, valid for compliance.push_cert_min_days more days,
                 and its topic is the one the enrolment profile carries
    scep         the SCEP server (scep.url) answers GetCACaps/GetCACert with werne's SCEP CA
    enrolment    the enrolment endpoint (dep.enrol_url) is werne's, and the profile it serves is
                 signed (built and verified with the same code the endpoint runs)
    machineinfo  the endpoint verifies each MachineInfo against a device CA it can read (fails while
                 dep.insecure_skip_machineinfo_verification is on)
    webhook      the receiver NanoMDM posts to (mdm.webhook_listen) answers
    nanodep      NanoDEP's token for dep.name works (Apple's /account through NanoDEP's proxy); left out
                 where [dep] enabled = false (no Apple School Manager)
    kmfddm       KMFDDM (ddm.url) answers and takes werne's key; how many group sets it holds
    then one line per item of the expiry view that has no line above (ipad.golive.expiry): scep-ca,
    dep-token, apps-token:<location>, signing-cert, identities

Every check runs, whatever the others say; a check's failure is a result, not an exception.
Beside its text, a check gives monitoring its numbers (`values`: days_left and limit_days of what
expires, counts), which `--json` and the metrics file (server.metrics) carry.
"""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.x509.oid import NameOID

from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.findings import Findings
from core.metrics import Family, write_textfile
from core.text import one_line
from enrolment.ade import device_ca_file, enrol_path, load_device_cas
from ipad.golive.expiry import expiry_items, tls_not_after
from ipad.golive.push_cert_store import current_push_cert
from ipad.golive.scep_ca import check_scep_server
from ipad.payloads.enrolment_profile import build_enrolment_profile, signed_enrolment_profile
from mdm_client.factory import kmfddm_client, nanodep_client, nanomdm_client
from mdm_client.scep import SCEPClient


@dataclass(frozen=True)
class CheckResult:
    """One line of `werne mdm check`."""

    name: str
    ok: bool
    detail: str
    # For monitoring: the numbers behind `detail` (days_left, limit_days, counts); never text.
    values: dict[str, float | int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "values": dict(self.values)}


def _verify(ca_file: Path | None) -> str | bool:
    return str(ca_file) if ca_file else True


def check_tls(config: Config, ca_file: Path | None, timeout: float) -> CheckResult:
    url = urlsplit(config.mdm.server_url)
    host, port = url.hostname or "", url.port or 443
    if url.scheme != "https":
        return CheckResult("tls", False, f"mdm.server_url {config.mdm.server_url} is not https")
    try:
        not_after = tls_not_after(config.mdm.server_url, str(ca_file) if ca_file else None, timeout)
    except ssl.SSLCertVerificationError as e:
        return CheckResult("tls", False, f"{host}:{port}: {e.verify_message}")
    except (OSError, ssl.SSLError) as e:
        return CheckResult("tls", False, f"{host}:{port}: {e.__class__.__name__}: {e}")
    days = (not_after - dt.datetime.now(dt.UTC)).days
    values: dict[str, float | int] = {"days_left": days, "limit_days": config.compliance.tls_cert_min_days}
    if days < config.compliance.tls_cert_min_days:
        return CheckResult("tls", False, f"{host}: the certificate expires in {days} days "
                                         f"(limit {config.compliance.tls_cert_min_days})", values)
    return CheckResult("tls", True, f"{host}: chain and host name verified, {days} days left", values)


def check_nanomdm(config: Config) -> CheckResult:
    try:
        client = nanomdm_client(config)
        version = client.version()
        client.check_api_key()
    except WerneError as e:
        return CheckResult("nanomdm-api", False, str(e))
    return CheckResult("nanomdm-api", True, f"{config.mdm.url}: NanoMDM {version or '?'}, API key accepted")


def check_push_cert(config: Config, db: Database) -> CheckResult:
    current = current_push_cert(db)
    if current is None:
        return CheckResult("push-cert", False, "no push certificate installed (werne mdm push-cert install)")
    days = (current.not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    values: dict[str, float | int] = {"days_left": round(days, 1), "limit_days": config.compliance.push_cert_min_days}
    try:
        profile = build_enrolment_profile(config, db)
        mdm = next(p for p in profile.content["PayloadContent"] if p["PayloadType"] == "com.apple.mdm")
        profile_topic = mdm["Topic"]
    except WerneError as e:
        return CheckResult("push-cert", False, f"{current.topic}: the enrolment profile cannot be built: {e}", values)
    if profile_topic != current.topic:
        return CheckResult("push-cert", False, f"the profile carries {profile_topic}, installed is {current.topic}",
                           values)
    if days < config.compliance.push_cert_min_days:
        return CheckResult("push-cert", False, f"{current.topic} expires in {days:.0f} days "
                                               f"(renew at {config.compliance.push_cert_min_days} days)", values)
    return CheckResult("push-cert", True, f"{current.topic}, {days:.0f} days left, the enrolment profile's topic",
                       values)


def check_scep(config: Config, ca_file: Path | None) -> CheckResult:
    try:
        client = SCEPClient(config.scep.url, timeout=config.scep.timeout, verify=_verify(ca_file))
        result = check_scep_server(config, client)
    except WerneError as e:
        return CheckResult("scep", False, str(e))
    return CheckResult("scep", True, f"{result.url}: GetCACert answers with {result.ca_subject}")


def check_enrolment(config: Config, db: Database, ca_file: Path | None) -> CheckResult:
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


def check_expiries(config: Config, db: Database) -> list[CheckResult]:
    """The lines of the expiry view (ipad.golive.expiry) that no other line covers: the SCEP CA,
    Apple School Manager's token, the Apps and Books tokens, the signing certificate, the iPads'
    identities (push-cert and tls show their days left themselves)."""
    return [CheckResult(i.item, i.ok, i.summary(), i.values()) for i in expiry_items(config, db, tls=False)
            if i.item != "push-cert"]


def check_machineinfo(config: Config) -> CheckResult:
    if config.dep.insecure_skip_machineinfo_verification:
        return CheckResult("machineinfo", False, "dep.insecure_skip_machineinfo_verification is true: any device "
                                                 "that knows a serial of the inventory gets the enrolment profile "
                                                 "(a lab setting, never production)")
    path = device_ca_file(config)
    try:
        cas = load_device_cas(path)
    except WerneError as e:
        return CheckResult("machineinfo", False, str(e))
    names = ", ".join(sorted({str(a.value) for ca in cas
                              for a in ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}))
    return CheckResult("machineinfo", True, f"MachineInfo must be signed by a device of {names or path.name} ({path})")


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
    try:
        account = nanodep_client(config).account()
    except WerneError as e:
        return CheckResult("nanodep", False, str(e))
    name = account.get("org_name") or account.get("server_name") or config.dep.name
    return CheckResult("nanodep", True, f"DEP token '{config.dep.name}' works ({name})")


def check_kmfddm(config: Config) -> CheckResult:
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
                                       f"{len(werne_sets)} werne sets", {"werne_sets": len(werne_sets)})


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
        lambda: check_machineinfo(config),
        lambda: check_webhook(config),
        *([lambda: check_nanodep(config)] if config.dep.enabled else []),
        lambda: check_kmfddm(config),
    ]
    return [c() for c in checks] + check_expiries(config, db)


def check_families(checks: list[CheckResult], at: dt.datetime | None = None) -> list[Family]:
    """`werne mdm check` as metrics: each check's result, days left and limit of what expires, and
    the iPads' identities by state."""
    ok = Family("werne_mdm_check_ok", "1 when the check of `werne mdm check` passed, else 0")
    left = Family("werne_mdm_expiry_days_left", "Days until the item expires (push certificate, SCEP CA, tokens, TLS, "
                                                "signing certificate, the soonest iPad identity)")
    limit = Family("werne_mdm_expiry_limit_days", "The item's warning limit in days (an alert when below)")
    ids = Family("werne_mdm_identities",
                 "The enrolled iPads' identities by state (known, within_limit, expired, unknown)")
    for c in checks:
        ok.add(int(c.ok), check=c.name)
        if "days_left" in c.values:
            left.add(c.values["days_left"], item=c.name)
        if "limit_days" in c.values:
            limit.add(c.values["limit_days"], item=c.name)
        if c.name == "identities":
            for state in ("known", "within_limit", "expired", "unknown"):
                ids.add(c.values.get(state, 0), state=state)
    stamp = Family("werne_mdm_check_timestamp_seconds", "When `werne mdm check` last ran (Unix time)")
    return [ok, left, limit, ids, stamp.add((at or dt.datetime.now(dt.UTC)).timestamp())]


def write_check_metrics(config: Config, checks: list[CheckResult]) -> str | None:
    """Write `werne_mdm.prom` (core.metrics). Returns why it could not be written, else None: the
    checks' result stands either way."""
    try:
        write_textfile(config, "werne_mdm", check_families(checks))
    except (WerneError, OSError) as e:
        return one_line(str(e))
    return None
