"""Compliance checks of the iPad apps side: the Apps and Books location tokens (fleet-wide), the
escrow of each supervised iPad's Activation Lock bypass code, and each iPad's apps against its
group's app list (the `apps` fact, collected by compliance.collect_ipads)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from compliance.checks.registry import Outcome, expiry_outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, lookup


@python_check("apps_token_valid")
def _apps_token_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    tok = lookup(dev.facts, "apps_token")
    name = tok.get("location", "?")
    if tok.get("error"):
        return "fail", f"location {name}: {tok['error']}"
    if not tok.get("expires"):
        return "fail", f"location {name}: the token names no expiry date (expDate)"
    return expiry_outcome(f"location {name} token", datetime.fromisoformat(str(tok["expires"])), ctx.now,
                          ctx.config.apps.token_min_days, "no app licence can be assigned or taken back",
                          "download a new one in Apple School Manager")


@python_check("activation_lock_escrowed")
def _activation_lock_escrowed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    supervised = lookup(dev.facts, "device.is_supervised")
    if supervised is not True:
        return "not_applicable", "not supervised: MDM cannot obtain a bypass code"
    if lookup(dev.facts, "activation_lock.escrowed"):
        return "pass", "bypass code escrowed (encrypted)"
    return "fail", "no Activation Lock bypass code escrowed: `werne ipad activation-lock escrow SERIAL`"


# --- the iPad's apps against its group's app list (facts: ipad.apps.status.app_facts) -------------------


def _apps(dev: DeviceFacts) -> dict[str, Any]:
    apps: dict[str, Any] = lookup(dev.facts, "apps")
    return apps


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
