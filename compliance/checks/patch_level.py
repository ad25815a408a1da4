"""The laptops' patch level checks: pending security updates, unattended-upgrade runs, pending
reboots and the running kernel, evaluated on the `patch` facts of werne_facts.

Ages in the facts are seconds measured by the laptop's own clock (a wrong clock on the laptop
cannot make its files look fresh or stale), so evaluating stored facts later gives the same result.
"""

from __future__ import annotations

from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, lookup, need
from compliance.results import short

DAY_S = 86400.0


def _days(age_s: Any) -> float | None:
    return None if age_s is None else float(age_s) / DAY_S


@python_check("security_updates_installed")
def _security_updates_installed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    cfg = ctx.config.compliance
    lists = lookup(dev.facts, "patch.lists")
    pending = lookup(dev.facts, "patch.pending")
    if not lists.get("release_files"):
        evidence = "no APT package lists on the laptop: pending updates cannot be judged"
        if cfg.apt_lists_missing == "not_applicable":
            return "not_applicable", evidence + "; compliance.apt_lists_missing = not_applicable"
        return "fail", evidence
    if not lists.get("security_releases"):
        return "fail", "no security release among the APT sources (" + short(lists.get("releases") or [], 120) + ")"
    if pending.get("error"):
        return "error", "apt-get -s dist-upgrade failed: " + short(pending["error"], 160)
    count = int(pending.get("security_count", 0))
    if count:
        return "fail", f"{count} security update(s) pending: " + short(pending.get("security") or [], 180)
    age = _days(lists.get("age_s"))
    limit = cfg.apt_lists_max_age_days
    if age is None or age > limit:
        when = "never" if age is None else f"{age:.0f} days ago"
        return "fail", f"package lists last refreshed {when} (limit {limit} days): newer updates are unknown"
    return "pass", (
        f"no security update pending in {short(lists['security_releases'], 80)}; lists {age:.1f} days old"
    )


@python_check("unattended_upgrade_recent")
def _unattended_upgrade_recent(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    uu = lookup(dev.facts, "patch.unattended_upgrade")
    limit = ctx.config.compliance.unattended_upgrade_max_age_days
    age = _days(uu.get("age_s"))
    if age is None:
        return "fail", "unattended-upgrade has never completed a run"
    if age > limit:
        return "fail", f"last unattended-upgrade run {age:.0f} days ago (limit {limit})"
    return "pass", f"last unattended-upgrade run {age:.1f} days ago"


@python_check("reboot_not_pending")
def _reboot_not_pending(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    reboot = lookup(dev.facts, "patch.reboot")
    if not need(dev.facts, "patch.reboot.required"):
        return "pass", "no reboot required"
    limit = ctx.config.compliance.reboot_max_pending_days
    age = _days(reboot.get("age_s")) or 0.0
    pkgs = f" by {short(reboot.get('packages'), 100)}" if reboot.get("packages") else ""
    if age > limit:
        return "fail", f"reboot required{pkgs} for {age:.0f} days (limit {limit})"
    return "pass", f"reboot required{pkgs} for {age:.1f} days (within {limit})"


@python_check("kernel_current")
def _kernel_current(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    k = lookup(dev.facts, "patch.kernel")
    if k.get("container"):
        return "not_applicable", (
            f"container ({k['container']}): the running kernel {k.get('running')} is the host's, "
            "and no kernel package of its own boots"
        )
    if not k.get("installed"):
        return "not_applicable", f"no linux-image package installed: kernel {k.get('running')} is not managed by dpkg"
    newest, running = k.get("newest"), k.get("running")
    if running == newest:
        return "pass", f"running the newest installed kernel {running}"
    limit = ctx.config.compliance.reboot_max_pending_days
    age = _days(k.get("newest_age_s"))
    if running in (k.get("installed") or []) and age is not None and age <= limit:
        return "pass", f"kernel {newest} installed {age:.1f} days ago, reboot pending (within {limit} days)"
    since = f", installed {age:.0f} days ago" if age is not None else ""
    return "fail", f"running kernel {running}, newest installed {newest}{since}"
