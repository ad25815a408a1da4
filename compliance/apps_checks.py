"""Compliance checks of the iPad apps side: the Apps and Books location tokens (fleet-wide) and the
escrow of each supervised iPad's Activation Lock bypass code.

Registered into compliance.engine's PYTHON_CHECKS (the engine imports this module at its end).
"""

from __future__ import annotations

from collections.abc import Callable
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


# --- the iPad's apps against its group's app list (facts: ipad.app_status.app_facts) -------------------


def _apps(dev: DeviceFacts) -> dict[str, Any]:
    return lookup(dev.facts, "apps")


def _named(apps: dict[str, Any], bundles: list[str]) -> str:
    names = [f"{apps['required'].get(b, b)}" for b in bundles]
    return ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")


@python_check("ipad_apps_required")
def _ipad_apps_required(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    apps = _apps(dev)
    missing = sorted(b for b in apps["required"] if b not in apps["managed"] and b not in apps["install_errors"])
    if missing:
        return "fail", f"missing {_named(apps, missing)}: `werne apps apply --school {dev.school or 'S'}`"
    return "pass", f"{len(apps['required'])} required app(s) on the iPad"


@python_check("ipad_apps_managed")
def _ipad_apps_managed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    apps = _apps(dev)
    bad = sorted((b, st) for b, st in apps["managed"].items()
                 if b in apps["required"] and st != "Managed" and b not in apps["install_errors"])
    if bad:
        return "fail", "not managed: " + "; ".join(f"{apps['required'][b]} ({st})" for b, st in bad[:10])
    return "pass", "every required app present is managed"


@python_check("ipad_apps_install_failed")
def _ipad_apps_install_failed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    apps = _apps(dev)
    errors = apps["install_errors"]
    if errors:
        return "fail", "install failed: " + "; ".join(
            f"{apps['required'].get(b, b)}: {why}" for b, why in sorted(errors.items())[:5])
    return "pass", "no failed app install"


@python_check("ipad_apps_not_allowed")
def _ipad_apps_not_allowed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    apps = _apps(dev)
    allowed = set(apps["allowed"])
    extra = sorted(b for b in apps["managed"] if b not in allowed)
    if extra:
        return "fail", f"not in the app list of group {dev.group or '?'}: {', '.join(extra[:10])}"
    return "pass", f"only apps of group {dev.group or '?'}"


def ipad_app_facts(config: Any, db: Any, inventory: Any
                   ) -> Callable[[str, str, str, dict[str, Any]], dict[str, Any] | None] | None:
    """For the iPad collector: (serial, school, group, ManagedApplicationList answer) -> the `apps`
    fact, or None for a school without an Apps and Books location. None where the site manages no
    apps (no apps.locations). A broken app list raises AppsError (exit 2), like a broken baseline."""
    if not config.apps.locations:
        return None
    from ipad.app_status import app_facts, install_errors_by_serial
    from ipad.apps import load_apps

    catalogue = load_apps(config)
    errors = install_errors_by_serial(db) if hasattr(db, "session") else {}

    def facts(serial: str, school: str, group: str, managed: dict[str, Any]) -> dict[str, Any] | None:
        sc = inventory.schools.get(school)
        if sc is None or not sc.apps_location:
            return None
        return app_facts(catalogue, group, managed, errors.get(serial))

    return facts
