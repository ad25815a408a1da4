"""The classroom Apple TVs' checks beyond plain facts: AirPlay asks for a passcode on every connection."""

from __future__ import annotations

from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, lookup


@python_check("appletv_airplay_passcode")
def _appletv_airplay_passcode(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    want = lookup(dev.facts, "airplay_security")
    installed = lookup(dev.facts, "profiles.uuids")
    if want.get("security_type") != "PASSCODE_ALWAYS":
        return "fail", (f"werne's {want['identifier']} sets SecurityType {want.get('security_type')}, "
                        "not PASSCODE_ALWAYS (profiles/tv-airplay-security.yaml)")
    have = installed.get(want["identifier"])
    if have is None:
        return "fail", f"{want['identifier']} is not installed: AirPlay takes connections without a passcode"
    if have != want["uuid"]:
        return "fail", f"{want['identifier']} is installed with other content (PayloadUUID {have[:8]}…, " \
                       f"werne's is {want['uuid'][:8]}…)"
    return "pass", "AirPlay security PASSCODE_ALWAYS installed (werne's profile, by its PayloadUUID)"
