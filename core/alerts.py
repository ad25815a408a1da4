"""Alerts to IT staff: a mail (SMTP from the config's [alerts]) and, optionally, a generic JSON
webhook (Matrix, Teams, a ticket system's inbound hook). A channel that is down is logged and
named in the result, never raised: an alert must not change the outcome of what it reports on.

The nightly unit's `OnFailure=` starts `werne-alert@<unit>.service`, which runs `werne alert
unit-failed <unit>`; systemd hands that unit the failed one's result in MONITOR_* variables
(systemd.exec(5), since v251).

`raise_alert` is the one call for something a process notices itself (an account under a
password-guessing attack, a new critical finding): it records the alert in the audit trail
(hash-chained, so it cannot be dropped quietly), writes one warning to the log and, when channels
are given and configured, delivers it through `send_alert` as well.
"""

from __future__ import annotations

import logging
import os
import smtplib
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import requests

from core import audit
from core.config import AlertsConfig
from core.db import Database
from core.errors import InputError, SecretError
from core.secrets import read_secret
from core.text import one_line

log = logging.getLogger("werne.alerts")


class AlertConfigError(InputError):
    """No alert channel is configured, or one is configured wrongly."""


@dataclass(frozen=True)
class Alert:
    """One message to IT staff."""

    kind: str  # "run-failed", "test"
    subject: str
    text: str
    host: str = field(default_factory=socket.getfqdn)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "text": self.text, "host": self.host,
                "at": self.at.isoformat(timespec="seconds")}


@dataclass(frozen=True)
class Delivery:
    """How one channel fared."""

    channel: str  # "mail" or "webhook"
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class AlertResult:
    """What `send_alert` did: one delivery per configured channel."""

    alert: Alert
    deliveries: tuple[Delivery, ...]

    @property
    def delivered(self) -> bool:
        return any(d.ok for d in self.deliveries)

    def to_dict(self) -> dict[str, Any]:
        return {"alert": self.alert.to_dict(), "delivered": self.delivered,
                "deliveries": [d.to_dict() for d in self.deliveries]}


def _mail(cfg: AlertsConfig, alert: Alert) -> Delivery:
    msg = EmailMessage()
    msg["From"], msg["To"] = cfg.mail_from, ", ".join(cfg.mail_to)
    msg["Subject"] = f"[werne {alert.host}] {alert.subject}"
    msg.set_content(f"{alert.text}\n\nhost: {alert.host}\ntime: {alert.at.isoformat(timespec='seconds')}\n")
    where = f"{cfg.smtp_host}:{cfg.smtp_port}"
    try:
        password = (read_secret(file=cfg.smtp_password_file, env=cfg.smtp_password_env, what="SMTP password")
                    if cfg.smtp_user else None)
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
            if cfg.smtp_starttls:
                smtp.starttls()
            if password is not None:
                smtp.login(cfg.smtp_user, password.reveal())
            smtp.send_message(msg)
    except SecretError as e:
        return Delivery("mail", False, str(e))
    except (OSError, smtplib.SMTPException) as e:
        reason = one_line(str(e) or e.__class__.__name__)
        log.warning("alert mail through %s not sent: %s", where, reason)
        return Delivery("mail", False, f"{where}: {reason}")
    return Delivery("mail", True, f"{where} to {', '.join(cfg.mail_to)}")


def _webhook(cfg: AlertsConfig, alert: Alert) -> Delivery:
    try:
        url = read_secret(file=cfg.webhook_url_file, env=cfg.webhook_url_env, what="alert webhook URL").reveal()
    except SecretError as e:
        return Delivery("webhook", False, str(e))
    # The URL often carries a token (Teams, Matrix hooks): messages name its host only.
    host = urlsplit(url).hostname or "?"
    body = {**alert.to_dict(), "text": f"{alert.subject}\n{alert.text}"}
    try:
        r = requests.post(url, json=body, timeout=cfg.timeout_s)
    except requests.RequestException as e:
        log.warning("alert webhook to %s not sent: %s", host, e.__class__.__name__)
        return Delivery("webhook", False, f"{host}: {e.__class__.__name__}")
    if r.status_code >= 300:
        log.warning("alert webhook to %s answered %s", host, r.status_code)
        return Delivery("webhook", False, f"{host}: HTTP {r.status_code}")
    return Delivery("webhook", True, f"{host}: HTTP {r.status_code}")


def channels(cfg: AlertsConfig) -> list[str]:
    """The channels the config sets up: mail needs smtp_host and mail_to; the webhook its URL."""
    found = []
    if cfg.smtp_host and cfg.mail_to:
        found.append("mail")
    if cfg.webhook_url_file is not None or os.environ.get(cfg.webhook_url_env):
        found.append("webhook")
    return found


def send_alert(cfg: AlertsConfig, alert: Alert) -> AlertResult:
    """Send `alert` through every configured channel; a channel that fails is logged, not raised."""
    names = channels(cfg)
    if not names:
        raise AlertConfigError("no alert channel configured: set [alerts] smtp_host and mail_to, "
                               "or webhook_url_file")
    send = {"mail": _mail, "webhook": _webhook}
    return AlertResult(alert, tuple(send[name](cfg, alert) for name in names))


def unit_failure_alert(unit: str, env: Mapping[str, str]) -> Alert:
    """The alert for a unit that failed: what systemd says about it (MONITOR_* of OnFailure=)."""
    result = env.get("MONITOR_SERVICE_RESULT", "")
    code, status = env.get("MONITOR_EXIT_CODE", ""), env.get("MONITOR_EXIT_STATUS", "")
    meaning = {"2": "bad input or configuration", "3": "could not run", "130": "interrupted",
               "143": "terminated", "129": "hung up"}.get(status, "")
    how = {"timeout": "was stopped after its time limit", "signal": f"was killed by {status or 'a signal'}",
           "core-dump": "crashed", "watchdog": "stopped answering its watchdog",
           "exit-code": f"exited with {status}" + (f" ({meaning})" if meaning else "")}.get(result, "failed")
    text = (f"{unit} {how}. Its own one-line error is in the journal: journalctl -u {unit} -n 20\n"
            f"systemd: result={result or '?'} code={code or '?'} status={status or '?'}")
    if unit.startswith("werne-compliance"):
        text += ("\nThe night's compliance run is missing or incomplete; the next run marks an interrupted "
                 "one as such. Run it by hand: systemctl start werne-compliance.service")
    return Alert("run-failed", f"{unit} failed", text)


def raise_alert(db: Database, kind: str, target: str, message: str, detail: dict[str, Any] | None = None,
                *, channels_cfg: AlertsConfig | None = None) -> AlertResult | None:
    """Record the alert `kind` about `target` (audit action `alert.<kind>`), log `message` and, when
    `channels_cfg` sets up a channel, send it there too (a channel that is down is logged, not raised).
    Returns the delivery, or None when nothing was sent."""
    audit.record(db, f"alert.{kind}", target, {"message": message, **(detail or {})}, actor="werne")
    log.warning("ALERT %s: %s", kind, message)
    if channels_cfg is None or not channels(channels_cfg):
        return None
    return send_alert(channels_cfg, Alert(kind, f"{kind.replace('_', ' ')}: {one_line(target)}", message))
