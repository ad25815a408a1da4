"""The laptops' VPN checks: the gateway's evidence of a fresh handshake and a young key (judged by
provisioning.vpn.status, the one place for both), and a full tunnel in the laptop's WireGuard config."""

from __future__ import annotations

import ipaddress
from typing import Any

from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext, MissingFact, age_s, lookup
from compliance.results import short
from provisioning.vpn.status import handshake_flag, key_too_old


def _vpn(dev: DeviceFacts) -> dict[str, Any] | Outcome:
    """The gateway's evidence of this laptop's peer, or the outcome when there is none."""
    vpn = dev.facts.get("vpn")
    if vpn is None:
        raise MissingFact("vpn")
    if not vpn.get("evidence"):
        return "error", "no VPN evidence from the gateway: " + short(vpn.get("reason", "gateway not asked"))
    if not vpn.get("peer"):
        return "fail", "no WireGuard peer for this laptop on the gateway"
    evidence: dict[str, Any] = vpn
    return evidence


@python_check("vpn_handshake_fresh")
def _vpn_handshake_fresh(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    vpn = _vpn(dev)
    if isinstance(vpn, tuple):
        return vpn
    limit = ctx.config.vpn.handshake_max_age_s
    age = vpn.get("handshake_age_s")
    if age is None:
        age = age_s(vpn.get("latest_handshake"), ctx.now)
    flag = handshake_flag(age, limit)
    if flag == "no_handshake" or age is None:  # the same case; `age is None` is for the type checker
        return "fail", "no handshake ever seen by the gateway"
    if flag == "stale_handshake":
        return "fail", f"last handshake {int(age)}s ago (limit {limit}s)"
    return "pass", f"last handshake {int(age)}s ago"


@python_check("vpn_full_tunnel")
def _vpn_full_tunnel(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    wg = lookup(dev.facts, "wg")
    if not wg.get("config_present"):
        return "fail", "no WireGuard config on the laptop"
    nets = []
    for a in wg.get("allowed_ips") or []:
        try:
            nets.append(ipaddress.ip_network(a, strict=False))
        except ValueError:
            continue
    full_v4 = any(n.version == 4 and n.prefixlen == 0 for n in nets)
    if not full_v4:
        return "fail", "split tunnel: AllowedIPs=" + short(wg.get("allowed_ips") or ["none"])
    return "pass", "AllowedIPs=" + short(wg.get("allowed_ips"))


@python_check("vpn_key_age")
def _vpn_key_age(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    vpn = _vpn(dev)
    if isinstance(vpn, tuple):
        return vpn
    limit_days = ctx.config.vpn.key_max_age_days
    days = vpn.get("key_age_days")
    if days is None:
        age = age_s(vpn.get("key_created"), ctx.now)
        if age is None:
            return "error", "the key's creation time is not recorded"
        days = age / 86400
    if key_too_old(days, limit_days):
        return "fail", f"key is {days:.0f} days old (limit {limit_days})"
    return "pass", f"key is {days:.0f} days old"
