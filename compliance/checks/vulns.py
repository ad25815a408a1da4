"""Known vulnerabilities: the `vulns` facts (compliance.vulns.laptops, added at evaluation from the
laptop's package list and the newest imported security data of its distribution)."""

from __future__ import annotations

from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, age_s, lookup
from compliance.results import short


def _data(dev: DeviceFacts, ctx: EvalContext) -> tuple[dict[str, Any] | None, Outcome | None]:
    """The vulns section, or the outcome when there is nothing to judge."""
    v = lookup(dev.facts, "vulns")
    if v.get("not_applicable"):
        if ctx.config.compliance.vulns_data_missing == "fail":
            return None, ("fail", str(v["not_applicable"]))
        return None, ("not_applicable", f"{v['not_applicable']}; compliance.vulns_data_missing = not_applicable")
    if v.get("error"):
        return None, ("error", str(v["error"]))
    return v, None


def _line(f: dict[str, Any]) -> str:
    fix = f"fixed in {f['fixed']}" if f.get("fixed") else "no fix yet"
    return f"{f['id']} {f['source']} {f['installed']} ({fix}, {f['urgency']})"


@python_check("vulns_fixed_installed")
def _vulns_fixed_installed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    v, outcome = _data(dev, ctx)
    if v is None:
        assert outcome is not None
        return outcome
    cfg = ctx.config.compliance
    data_age = (age_s(v.get("as_of"), ctx.now) or 0) / 86400
    what = f"{v['distro']} data of {str(v['as_of'])[:10]} (snapshot {v['snapshot']})"
    if data_age > cfg.vuln_data_max_age_days:
        return "fail", (f"{what} is {data_age:.0f} days old (limit {cfg.vuln_data_max_age_days}): "
                        "newer advisories unknown")
    ignore = set(params.get("ignore_urgency") or [])
    limit = cfg.vuln_fix_max_age_days
    overdue, recent = [], 0
    for f in v.get("findings") or []:
        if not f.get("fixed") or f.get("urgency") in ignore:
            continue
        since = age_s(f.get("fix_since"), ctx.now)
        if since is None or since / 86400 > limit:
            overdue.append(f)
        else:
            recent += 1
    if overdue:
        return "fail", (f"{len(overdue)} known vulnerabilit{'y' if len(overdue) == 1 else 'ies'} with a fix available "
                        f"for more than {limit} days ({what}): " + short([_line(f) for f in overdue], 240))
    extra = f"; {recent} fixed within the last {limit} days" if recent else ""
    return "pass", f"no fix older than {limit} days missing among {v.get('packages')} packages ({what}){extra}"


@python_check("vulns_unfixed_listed")
def _vulns_unfixed_listed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    v, outcome = _data(dev, ctx)
    if v is None:
        assert outcome is not None
        return outcome
    unfixed = [f for f in v.get("findings") or [] if not f.get("fixed")]
    if not unfixed:
        return "pass", f"no known vulnerability without a fix in {v['release']}"
    return "pass", (f"{len(unfixed)} without a fix in {v['release']} (listed, not failed): "
                    + short([_line(f) for f in unfixed], 240))
