"""The disk checks beyond "is it encrypted": the escrowed LUKS recovery key, as the provisioning
run's last test unlock found it (the `recovery_key` facts come from the controller's escrow,
provisioning.disk.escrow, added to each laptop's facts at evaluation)."""

from __future__ import annotations

from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, age_s, lookup
from compliance.results import short


@python_check("recovery_key_verified")
def _recovery_key_verified(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    luks = lookup(dev.facts, "luks")
    if not luks.get("present"):
        # lx-disk-encryption judges (and fails) the missing volume; one finding, not two.
        return "not_applicable", "no LUKS volume: no recovery key to escrow (see lx-disk-encryption)"
    rk = lookup(dev.facts, "recovery_key")
    if not rk.get("escrowed"):
        return "fail", "no recovery key escrowed ([recovery_keys] key_file, then `werne laptop provision`)"
    limit = ctx.config.compliance.recovery_key_max_age_days
    if rk.get("check_result") == "failed":
        return "fail", (f"the escrowed recovery key did not open the volume at the last test unlock "
                        f"({rk.get('checked_at')}): " + short(rk.get("check_detail") or "", 200))
    if rk.get("check_result") == "no-luks":
        return "fail", "the last provisioning run found no LUKS volume to test: " + short(rk.get("check_detail"), 120)
    verified = age_s(rk.get("verified_at"), ctx.now)
    if verified is None:
        return "fail", f"recovery key escrowed ({rk.get('state')}) but never verified on the laptop"
    days = verified / 86400
    where = f"{rk.get('device')} keyslot {rk.get('keyslot')}"
    if days > limit:
        return "fail", f"last test unlock of {where} {days:.0f} days ago (limit {limit})"
    return "pass", f"escrowed (key id {rk.get('key_id')}); opened {where} {days:.1f} days ago"
