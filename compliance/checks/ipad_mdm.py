"""The iPads' checks on what the MDM server holds about them: the installed profiles against their
group's set, the last contact, the MDM identity's expiry, and (fleet-wide) the APNs push certificate
NanoMDM wakes them with and the other items of the expiry view (ipad.golive.expiry)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from compliance.checks.registry import Outcome, expiry_outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, age_s, lookup
from compliance.results import short


@python_check("ipad_profiles")
def _ipad_profiles(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    installed = set(lookup(dev.facts, "profiles.identifiers"))
    if ctx.profile_set_for is None:
        return "error", "the MDM profile set is not available"
    required = set(ctx.profile_set_for(dev))
    allowed_extra = {p for p in installed if any(re.fullmatch(x, p) for x in params.get("ignore", []))}
    missing = sorted(required - installed)
    unknown = sorted(installed - required - allowed_extra)
    problems = ([f"missing {short(missing, 100)}"] if missing else []) + (
        [f"unknown {short(unknown, 100)}"] if unknown else []
    )
    if problems:
        return "fail", "; ".join(problems)
    return "pass", f"{len(required)} required profile(s) present, none unknown"


@python_check("ipad_in_contact")
def _ipad_in_contact(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    max_days = ctx.config.compliance.contact_max_days
    if not dev.enrolled:
        return "fail", dev.reason or "not enrolled in the MDM"
    if dev.last_seen is None:
        return "fail", "out of contact: never seen by the MDM server"
    age = age_s(dev.last_seen, ctx.now) or 0.0
    days = age / 86400
    seen = dev.last_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if days > max_days:
        return "fail", f"out of contact: last seen {seen} UTC, {days:.0f} days ago (limit {max_days})"
    return "pass", f"last seen {seen} UTC"


@python_check("push_cert_valid")
def _push_cert_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    cert = lookup(dev.facts, "push_cert")
    not_after = datetime.fromisoformat(str(cert["not_after"]))
    return expiry_outcome(str(cert["topic"]), not_after, ctx.now, ctx.config.compliance.push_cert_min_days,
                          "NanoMDM cannot wake any iPad", "renew it under the same Apple ID")


@python_check("identity_cert_valid")
def _identity_cert_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    identity = lookup(dev.facts, "identity")
    return expiry_outcome("the MDM identity certificate", datetime.fromisoformat(str(identity["not_after"])), ctx.now,
                          ctx.config.compliance.identity_cert_min_days,
                          "NanoMDM refuses its messages: it must be enrolled again",
                          "its renewal did not happen: `werne mdm renew --plan`")


@python_check("expiry_item_valid")
def _expiry_item_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    item = lookup(dev.facts, str(params["requires_fact"]))
    if item.get("error"):
        return "fail", f"{item['what']}: {item['error']}"
    if item["item"] == "identities":
        by_month = ", ".join(f"{m}: {n}" for m, n in sorted(item["by_month"].items())) or "none known yet"
        if item["within_limit"]:
            return "fail", (f"{item['within_limit']} enrolled iPad(s) hold an identity expiring within "
                            f"{item['limit_days']} days ({item['expired']} expired): {params['renew']}; by month: "
                            f"{by_month}")
        return "pass", f"none within {item['limit_days']} days; by month: {by_month}"
    return expiry_outcome(str(item["what"]), datetime.fromisoformat(str(item["expires"])), ctx.now,
                          float(item["limit_days"]), str(params["expired"]), str(params["renew"]))


@python_check("ipad_webfilter_installed")
def _ipad_webfilter_installed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    want = lookup(dev.facts, "webfilter")
    have = lookup(dev.facts, "profiles.uuids").get(want["identifier"])
    if have is None:
        return "fail", f"{want['identifier']} is not installed: the web is not filtered on this iPad"
    if have != want["uuid"]:
        return "fail", (f"{want['identifier']} is installed with other lists than the {want['group']} group's "
                        f"(PayloadUUID {have[:8]}…, expected {want['uuid'][:8]}…)")
    return "pass", f"the {want['group']} group's web filter is installed (automatic filter, allow and deny lists)"
