"""The laptops' hardening checks: SSH algorithms, the nftables input policy, sysctl settings, disk
encryption and the screen lock, on the facts of werne_facts."""

from __future__ import annotations

from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, lookup
from compliance.results import short


@python_check("ssh_modern_crypto")
def _ssh_modern_crypto(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    weak: list[str] = []
    for key in ("ciphers", "macs", "kexalgorithms"):
        allowed = {a.lower() for a in params[key]}
        offered = lookup(dev.facts, f"sshd.{key}")
        offered = offered if isinstance(offered, list) else str(offered).split(",")
        weak += [f"{key}:{a}" for a in offered if a.lower() not in allowed]
    if weak:
        return "fail", "weak algorithms offered: " + short(weak, 180)
    return "pass", "ciphers, MACs and key exchange all in the allowed set"


@python_check("nft_inbound_default_deny")
def _nft_inbound_default_deny(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    nft = lookup(dev.facts, "nft")
    if not nft.get("available"):
        return "fail", "nftables not available: " + short(nft.get("reason", "nft missing"))
    chains = nft.get("input_chains") or []
    if not chains:
        return "fail", "no base chain on the input hook: inbound traffic is not filtered"
    open_chains = [f"{c['family']} {c['table']} {c['chain']}" for c in chains if c.get("policy") != "drop"]
    if open_chains:
        return "fail", "input policy is not drop in: " + short(open_chains, 160)
    return "pass", f"{len(chains)} input chain(s), policy drop"


@python_check("sysctl_hardening")
def _sysctl_hardening(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    sysctl = lookup(dev.facts, "sysctl")
    wrong = []
    for key, want in params["expected"].items():
        have = sysctl.get(key)
        if have is None or str(have).strip() != str(want):
            wrong.append(f"{key}={have if have is not None else 'unset'} (want {want})")
    if wrong:
        return "fail", short(wrong, 200)
    return "pass", f"{len(params['expected'])} hardening settings set in sysctl files"


@python_check("luks_present")
def _luks_present(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    luks = lookup(dev.facts, "luks")
    if luks.get("present"):
        return "pass", "LUKS: " + short(luks.get("devices") or luks.get("crypttab") or ["present"])
    mode = ctx.config.compliance.luks_missing
    where = f" ({dev.facts.get('virt')})" if dev.facts.get("virt") not in (None, "none") else ""
    if mode == "not_applicable":
        return "not_applicable", f"no LUKS volume{where}; compliance.luks_missing = not_applicable"
    return "fail", f"no LUKS volume and no crypttab entry{where}"


@python_check("screen_lock")
def _screen_lock(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    sl = lookup(dev.facts, "screen_lock")
    max_idle = int(params["max_idle_s"])
    problems = []
    idle = sl.get("idle_delay_s")
    if idle is None or int(idle) == 0 or int(idle) > max_idle:
        problems.append(f"idle-delay={idle if idle is not None else 'unset'} (want 1..{max_idle})")
    if sl.get("lock_enabled") is not True:
        problems.append(f"lock-enabled={sl.get('lock_enabled')}")
    if params.get("locked") and not sl.get("locked"):
        problems.append("settings not locked against the user")
    tmout = sl.get("tmout_s")
    if tmout is None or int(tmout) == 0 or int(tmout) > max_idle:
        problems.append(f"shell TMOUT={tmout if tmout is not None else 'unset'} (want 1..{max_idle})")
    if problems:
        return "fail", short(problems, 200)
    return "pass", f"lock after {idle}s idle, shell TMOUT {tmout}s"
