"""Everything on the iPad side that expires, in one view (`werne mdm expiry`, lines of `werne mdm
check`, one compliance rule each): the APNs push certificate, the SCEP CA, Apple School Manager's
server token in NanoDEP, each Apps and Books location token, the HTTPS front's TLS certificate, the
profile-signing certificate, and the iPads' device identities (counted by month of expiry).

Each item has its expiry, days left and a limit (compliance.*_min_days, apps.token_min_days): it is
a finding when it expires within the limit or cannot be read. Reading one item never stops the
others: a failure is the item's `error`.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from core.config import Config
from core.db import Database
from core.errors import SecretError, WerneError
from core.findings import Findings
from core.secrets import read_secret
from core.text import one_line


@dataclass
class ExpiryItem:
    """One thing that expires: when, how many days are left, and the limit it must stay above."""

    item: str  # push-cert, scep-ca, dep-token, apps-token:<location>, tls, signing-cert, identities
    what: str
    limit_days: int
    expires: dt.datetime | None = None
    detail: str = ""
    error: str = ""
    # identities only: how many enrolled iPads' identities expire in each month (YYYY-MM), and how
    # many are within the limit, expired, or not known.
    by_month: dict[str, int] = field(default_factory=dict)
    within_limit: int = 0
    expired: int = 0
    unknown: int = 0

    def days_left(self, now: dt.datetime | None = None) -> float | None:
        if self.expires is None:
            return None
        return (self.expires - (now or dt.datetime.now(dt.UTC))).total_seconds() / 86400

    @property
    def ok(self) -> bool:
        if self.error or self.within_limit:
            return False
        left = self.days_left()
        # No identity known yet (no iPad enrolled, or none has answered CertificateList) is no finding.
        return left is None if self.item == "identities" and not self.by_month else (
            left is not None and left >= self.limit_days)

    def summary(self) -> str:
        if self.error:
            return self.error
        left = self.days_left()
        text = (f"expires {self.expires:%Y-%m-%d} ({left:.0f} days left, limit {self.limit_days})"
                if self.expires is not None and left is not None else "no expiry known")
        if self.item == "identities":
            text = (f"{sum(self.by_month.values())} known, soonest {text}; {self.within_limit} within the limit "
                    f"({self.expired} expired), {self.unknown} not known")
        return f"{text}{': ' + self.detail if self.detail else ''}"

    def values(self) -> dict[str, float | int]:
        """The numbers for monitoring: days left (when known), the limit (when known: an item that
        could not be read has none), and the identities' counts."""
        left = self.days_left()
        out: dict[str, float | int] = {"limit_days": self.limit_days} if self.limit_days else {}
        if left is not None:
            out["days_left"] = round(left, 1)
        if self.item == "identities":
            out.update(known=sum(self.by_month.values()), within_limit=self.within_limit, expired=self.expired,
                       unknown=self.unknown)
        return out

    def to_dict(self) -> dict[str, Any]:
        left = self.days_left()
        out: dict[str, Any] = {"item": self.item, "what": self.what, "ok": self.ok,
                               "expires": self.expires.isoformat() if self.expires else None,
                               "days_left": None if left is None else round(left, 1), "limit_days": self.limit_days,
                               "detail": self.detail, "error": self.error}
        if self.item == "identities":
            out.update(by_month=dict(sorted(self.by_month.items())), within_limit=self.within_limit,
                       expired=self.expired, unknown=self.unknown)
        return out


@dataclass
class ExpiryReport(Findings):
    """The whole view; a finding when one item is within its limit or could not be read."""

    items: list[ExpiryItem]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "items": [i.to_dict() for i in self.items]}


def tls_not_after(url: str, ca_file: str | None, timeout: float) -> dt.datetime:
    """The expiry of the certificate the HTTPS server at `url` presents, after a verified handshake
    (chain and host name). Raises OSError/ssl.SSLError when it cannot be had."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((host, port), timeout=timeout) as sock, ctx.wrap_socket(sock,
                                                                                         server_hostname=host) as tls:
        cert = tls.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        raise ssl.SSLError(f"{host}:{port}: no certificate expiry in the server's answer")
    return dt.datetime.strptime(not_after, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)


def _push_cert(config: Config, db: Database) -> ExpiryItem:
    from ipad.golive.push_cert_store import current_push_cert

    item = ExpiryItem("push-cert", "APNs push certificate", config.compliance.push_cert_min_days)
    cert = current_push_cert(db)
    if cert is None:
        item.error = "no push certificate installed (werne mdm push-cert install)"
    else:
        item.expires, item.detail = cert.not_after, cert.topic
    return item


def _scep_ca(config: Config, db: Database) -> ExpiryItem:
    from ipad.golive.scep_ca import trusted_cas

    item = ExpiryItem("scep-ca", "SCEP CA (device identities)", config.compliance.scep_ca_min_days)
    cas = trusted_cas(config)
    item.expires = cas[0].not_valid_after_utc
    item.detail = cas[0].subject.rfc4514_string()
    if len(cas) > 1:
        item.detail += f"; still trusted beside it: {', '.join(c.subject.rfc4514_string() for c in cas[1:])}"
    return item


def _dep_token(config: Config, db: Database) -> ExpiryItem:
    from mdm_client.factory import nanodep_client

    item = ExpiryItem("dep-token", f"Apple School Manager server token ({config.dep.name})",
                      config.compliance.dep_token_min_days)
    item.expires = nanodep_client(config).token_expiry()
    if item.expires is None:
        item.error = f"NanoDEP names no expiry for the token of {config.dep.name}"
    return item


def _apps_tokens(config: Config) -> list[ExpiryItem]:
    from mdm_client.appsbooks import token_info

    out = []
    for name, loc in sorted(config.apps.locations.items()):
        item = ExpiryItem(f"apps-token:{name}", f"Apps and Books token {name}", config.apps.token_min_days)
        try:
            info = token_info(read_secret(file=loc.token_file, env=loc.token_env or None,
                                          what=f"Apps and Books token of location {name}"))
            item.expires, item.detail = info.expires, info.org_name
            if info.expires is None:
                item.error = "the token names no expiry date (expDate)"
        except (SecretError, ValueError) as e:
            item.error = str(e)
        out.append(item)
    return out


def _tls(config: Config, db: Database) -> ExpiryItem:
    item = ExpiryItem("tls", f"TLS certificate of {urlsplit(config.mdm.server_url).hostname}",
                      config.compliance.tls_cert_min_days)
    ca = str(config.mdm.tls_ca_file) if config.mdm.tls_ca_file else None
    try:
        item.expires = tls_not_after(config.mdm.server_url, ca, config.mdm.timeout)
    except (OSError, ssl.SSLError) as e:
        item.error = f"{config.mdm.server_url}: {e.__class__.__name__}: {one_line(e, 160)}"
    return item


def _signing_cert(config: Config, db: Database) -> ExpiryItem:
    item = ExpiryItem("signing-cert", "profile-signing certificate", config.compliance.signing_cert_min_days)
    path = config.mdm.signing_cert_file
    if path is None:
        item.error = "mdm.signing_cert_file is not set (profiles must be signed)"
        return item
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError) as e:
        item.error = f"{path}: not a readable PEM certificate ({e.__class__.__name__})"
        return item
    item.expires, item.detail = cert.not_valid_after_utc, cert.subject.rfc4514_string()
    return item


def identity_expiries(config: Config, db: Database) -> dict[str, dt.datetime | None]:
    """serial (or enrollment id) -> when the MDM identity of each enrolled iPad expires (None: not
    known yet), from its newest CertificateList answer (ipad.golive.renewal.mdm_identity)."""
    from ipad.golive.renewal import mdm_identity
    from ipad.golive.scep_ca import trusted_cas
    from ipad.store.registry import Registry

    issuers = {c.subject.rfc4514_string() for c in trusted_cas(config)}
    out: dict[str, dt.datetime | None] = {}
    for dev in Registry(db).list_devices():
        if dev.state == "enrolled":
            ident = mdm_identity(dev, issuers)
            out[dev.serial or dev.enrollment_id] = ident.not_after if ident else None
    return out


def _identities(config: Config, db: Database) -> ExpiryItem:
    item = ExpiryItem("identities", "device identities of the enrolled iPads", config.compliance.identity_cert_min_days)
    now = dt.datetime.now(dt.UTC)
    expiries = identity_expiries(config, db)
    known = [t for t in expiries.values() if t is not None]
    item.unknown = len(expiries) - len(known)
    item.by_month = dict(Counter(f"{t:%Y-%m}" for t in known))
    item.within_limit = sum(1 for t in known if (t - now).total_seconds() < item.limit_days * 86400)
    item.expired = sum(1 for t in known if t <= now)
    item.expires = min(known) if known else None
    if not known:
        item.detail = ("no enrolled iPad has reported its identity yet (CertificateList)" if item.unknown
                       else "no enrolled iPad yet")
    return item


Reader = Callable[[Config, Database], ExpiryItem]


def expiry_items(config: Config, db: Database, *, tls: bool = True) -> list[ExpiryItem]:
    """Every item of the view, in a fixed order; the NanoDEP token only where the site uses Apple
    School Manager, an Apps and Books token per configured location, TLS unless `tls` is False."""
    readers: list[tuple[str, str, Reader]] = [("push-cert", "APNs push certificate", _push_cert),
                                              ("scep-ca", "SCEP CA (device identities)", _scep_ca)]
    if config.dep.enabled:
        readers.append(("dep-token", "Apple School Manager server token", _dep_token))
    items = []
    for name, what, read in readers:
        items.append(_read(config, db, name, what, read))
    items += _apps_tokens(config)
    later: list[tuple[str, str, Reader]] = [("tls", "TLS certificate", _tls)] if tls else []
    later += [("signing-cert", "profile-signing certificate", _signing_cert),
              ("identities", "device identities", _identities)]
    return items + [_read(config, db, name, what, read) for name, what, read in later]


def _read(config: Config, db: Database, name: str, what: str, read: Reader) -> ExpiryItem:
    try:
        return read(config, db)
    except WerneError as e:
        return ExpiryItem(name, what, 0, error=str(e))
