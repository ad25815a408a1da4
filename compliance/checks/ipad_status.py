"""Compliance checks of the iPads from what they report themselves: the declarative status
(software update, declarations; ipad.ddm.status), the effective restrictions (the Restrictions
command, judged setting by setting against the BSI iNDIGO indigo_base values of NIST mSCP), and
whether Apple still offers the model any update (Apple's catalogue, ipad.ddm.os_catalogue).

ipad.profiles (the mSCP data and the restrictions profile) is imported inside the functions that
read it: importing it reads profiles/groups.yaml, and a laptops-only run needs none of the iPad side.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, MissingFact, lookup, need


@python_check("ipad_update_installed")
def _ipad_update_installed(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    ddm = lookup(dev.facts, "ddm")
    # The fact judged: the install state the iPad reported (none, downloading, ..., failed); an iPad
    # that reported no software-update status at all is no evidence, never a pass.
    state = need(dev.facts, "ddm.install_state")
    os_text = " ".join(str(x) for x in (ddm.get("os_version"), ddm.get("os_extra_version")) if x)
    if ddm.get("failure_count"):
        target = ddm.get("pending_version") or "the enforced version"
        return "fail", (f"update to {target} failed {ddm['failure_count']}x: "
                        f"{ddm.get('failure_reason') or 'no reason given'} (install state {state})")
    if ddm.get("pending_version"):
        return "pass", f"update to {ddm['pending_version']} pending ({state})"
    return "pass", f"iPadOS {os_text or '?'} ({ddm.get('build') or '?'}), no update pending ({state})"


@python_check("ipad_declarations_valid")
def _ipad_declarations_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    # The fact judged: the declarations' status. An iPad with none reported is no evidence (werne
    # always sends it the status subscriptions), never "0 declarations valid".
    decls = need(dev.facts, "ddm.declarations")
    if not decls:
        raise MissingFact("ddm.declarations (none reported)")
    bad = [f"{d.get('identifier')}: {d.get('valid')}" + (f" ({d['reasons']})" if d.get("reasons") else "")
           for d in decls if d.get("valid") not in ("valid", None)]
    if bad:
        return "fail", "; ".join(bad)
    return "pass", f"{len(decls)} declaration(s) valid"


@cache
def _mscp_settings() -> dict[str, tuple[str, Any]]:
    """mSCP rule id -> (restriction key, indigo_base value) for com.apple.applicationaccess."""
    from ipad.payloads.profiles import MSCP_FILE, load_mscp, mscp_payload_keys

    # mscp_payload_keys first: it raises ProfileError when the mSCP data is missing or unreadable.
    values = mscp_payload_keys("indigo_base", "com.apple.applicationaccess")
    data = load_mscp(MSCP_FILE)
    out: dict[str, tuple[str, Any]] = {}
    for rule_id, rule in data["rules"].items():
        for mc in rule.get("mobileconfig") or []:
            if mc.get("PayloadType") == "com.apple.applicationaccess":
                for key in mc.get("keys") or {}:
                    if key in values:
                        out[rule_id] = (key, values[key])
    return out


@cache
def _excluded() -> dict[str, str]:
    """The mSCP rules profiles/restrictions.yaml leaves out on purpose, with its reason."""
    from ipad.payloads.profiles import load_profile_spec

    spec = load_profile_spec("restrictions")
    out: dict[str, str] = {}
    for p in spec.payloads:
        if p.mscp is not None:
            out.update(p.mscp.exclude)
    return out


@python_check("ipad_restrictions")
def _ipad_restrictions(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    """Each mSCP rule of params.mscp against the device's effective value of its restriction key."""
    effective = lookup(dev.facts, "restrictions")
    settings, excluded = _mscp_settings(), _excluded()
    wrong, judged, waived = [], 0, []
    for rule_id in params["mscp"]:
        if rule_id in excluded:
            waived.append(rule_id)
            continue
        key, want = settings[rule_id]
        judged += 1
        have = effective.get(key)
        if have != want:
            wrong.append(f"{rule_id} ({key}={'unset' if have is None else have}, want {want})")
    if wrong:
        return "fail", "; ".join(wrong)[:400]
    if not judged:
        return "not_applicable", f"every setting left out by profiles/restrictions.yaml: {', '.join(waived)}"
    note = f"; left out by profiles/restrictions.yaml: {', '.join(waived)}" if waived else ""
    return "pass", f"{judged} setting(s) as indigo_base on the device{note}"


@python_check("ipad_model_supported")
def _ipad_model_supported(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    cat = lookup(dev.facts, "catalogue")
    model = cat.get("model") or "?"
    if not cat.get("offered"):
        return "fail", (f"Apple offers no iPadOS version for {model} any more: replace by a model Apple "
                        f"still updates{' (e.g. ' + cat['replace_by'] + ')' if cat.get('replace_by') else ''}")
    return "pass", f"{model}: Apple offers iPadOS {cat['offered'][-1]}"
