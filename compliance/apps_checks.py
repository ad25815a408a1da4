"""Compliance checks of the iPad apps side: the Apps and Books location tokens (fleet-wide) and the
escrow of each supervised iPad's Activation Lock bypass code.

Registered into compliance.engine's PYTHON_CHECKS (the engine imports this module at its end).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from compliance.engine import DeviceFacts, EvalContext, Outcome, lookup, python_check


@python_check("apps_token_valid")
def _apps_token_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    tok = lookup(dev.facts, "apps_token")
    name = tok.get("location", "?")
    if tok.get("error"):
        return "fail", f"location {name}: {tok['error']}"
    if not tok.get("expires"):
        return "fail", f"location {name}: the token names no expiry date (expDate)"
    expires = datetime.fromisoformat(str(tok["expires"]))
    days = (expires - ctx.now).total_seconds() / 86400
    min_days = ctx.config.apps.token_min_days
    when = f"location {name} token expires {expires.astimezone(UTC):%Y-%m-%d}"
    if days <= 0:
        return "fail", f"{when}: expired, no app licence can be assigned or taken back"
    if days < min_days:
        return "fail", f"{when}, in {days:.0f} days (limit {min_days}): download a new one in Apple School Manager"
    return "pass", f"{when}, in {days:.0f} days"


@python_check("activation_lock_escrowed")
def _activation_lock_escrowed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    supervised = lookup(dev.facts, "device.is_supervised")
    if supervised is not True:
        return "not_applicable", "not supervised: MDM cannot obtain a bypass code"
    if lookup(dev.facts, "activation_lock.escrowed"):
        return "pass", "bypass code escrowed (encrypted)"
    return "fail", "no Activation Lock bypass code escrowed: `werne ipad activation-lock escrow SERIAL`"
