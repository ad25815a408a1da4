"""`werne alert`: tell IT staff (mail, optional webhook) that a unit failed, or test the channels."""

from __future__ import annotations

import os
import sys

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option


@click.group()
def alert() -> None:
    """Alerts to IT staff by mail ([alerts] SMTP) and an optional JSON webhook.

    Example:

        werne alert test
    """


def _deliver(app: AppContext, make: str, as_json: bool, unit: str = "") -> None:
    from core.alerts import Alert, send_alert, unit_failure_alert

    a = (unit_failure_alert(unit, os.environ) if make == "unit" else
         Alert("test", "test alert", "werne alert test: if you read this, alerts reach you."))
    result = send_alert(app.config.alerts, a)
    if as_json:
        render.json_out(result.to_dict())
    else:
        for d in result.deliveries:
            render.line(f"{render.ok_mark(d.ok)} {d.channel}: {d.detail}")
    if not result.delivered:
        sys.exit(3)


@alert.command("unit-failed")
@click.argument("unit")
@json_option()
@pass_app
def alert_unit_failed(app: AppContext, unit: str, as_json: bool) -> None:
    """Send the alert for a failed unit (run by werne-alert@UNIT.service, the nightly unit's
    OnFailure=; systemd's MONITOR_* variables say how it failed). Exit 0 when at least one channel
    took it, 3 when none did (each failure is logged), 2 when no channel is configured.

    Example:

        werne alert unit-failed werne-compliance.service
    """
    _deliver(app, "unit", as_json, unit)


@alert.command("test")
@json_option()
@pass_app
def alert_test(app: AppContext, as_json: bool) -> None:
    """Send a test alert through every configured channel (exit as for unit-failed).

    Example:

        sudo -u werne werne alert test
    """
    _deliver(app, "test", as_json)
