"""Evaluate baseline rules against collected facts: declarative comparisons and named Python checks.

Facts are a nested dict per device (see collect_laptops / collect_ipads). A declarative check names
a fact by dotted path (keys that themselves contain dots, such as sysctl names, are matched
greedily), an operator and an expected value; `expected: {config: "vpn.key_max_age_days"}` takes
the value from the site config. A missing fact is an `error`, never a silent pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from compliance.rules import FactCheck, Rule
from provisioning.vpn.status import handshake_flag, key_too_old

Status = Literal["pass", "fail", "error", "not_applicable", "unreachable", "waived"]
STATUSES: tuple[str, ...] = ("pass", "fail", "error", "not_applicable", "unreachable", "waived")
# What counts as a finding (exit code 1, "failing" in reports and diffs).
FINDING_STATUSES = frozenset({"fail", "error", "unreachable"})
EVIDENCE_MAX = 240


@dataclass
class DeviceFacts:
    """What collection found for one device: its facts, or why it could not be asked."""

    device: str
    fleet: str  # laptops | ipads
    facts: dict[str, Any] = field(default_factory=dict)
    reachable: bool = True
    reason: str = ""
    # The status every rule gets when the device could not be asked: unreachable, or error when
    # it answered but the collector failed on it.
    failure: str = "unreachable"
    school: str | None = None
    group: str | None = None
    name: str = ""
    last_seen: datetime | None = None
    # "fleet": not a device but the fleet's shared facts (compliance.collect_fleet); only rules of
    # scope "fleet" are evaluated on it, and only on it.
    scope: str = "device"
    # A laptop judged on stored evidence (it was off during the run): when that was collected,
    # the words the report shows ("evidence from 14:05 yesterday"), and the stored row.
    evidence_at: datetime | None = None
    evidence_label: str = ""
    evidence_ref: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.fleet == "laptops":
            # Only laptops have evidence with an age; the iPads' snapshot keeps its old shape.
            extra = {"evidence_at": self.evidence_at.isoformat() if self.evidence_at else None,
                     "evidence": self.evidence_label, "evidence_ref": self.evidence_ref}
        return {
            "fleet": self.fleet,
            "school": self.school,
            "group": self.group,
            "name": self.name or self.device,
            "reachable": self.reachable,
            "reason": self.reason,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            **extra,
        }


@dataclass
class RuleResult:
    """The outcome of one rule on one device, with short evidence."""

    device: str
    rule_id: str
    status: str
    evidence: str = ""
    waiver: str | None = None


@dataclass
class EvalContext:
    """What checks may consult besides the facts: the site config, the clock, the MDM profile sets."""

    config: Any
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # device -> the set of profile identifiers its group must have (ipad.profiles.profile_set_for)
    profile_set_for: Callable[[DeviceFacts], set[str]] | None = None


class MissingFact(LookupError):
    """A fact the rule needs was not collected."""


_MISSING = object()


def lookup(facts: Any, path: str) -> Any:
    """The value at a dotted path; keys containing dots (sysctl names) are matched longest first."""
    node = facts
    rest = path
    while rest:
        if not isinstance(node, dict):
            raise MissingFact(path)
        parts = rest.split(".")
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in node:
                node = node[key]
                rest = ".".join(parts[n:])
                break
        else:
            # A collector that failed for a whole section says why in its "error" key.
            why = node.get("error") or node.get("reason") if isinstance(node, dict) else None
            raise MissingFact(f"{path} ({why})" if why else path)
    return node


def resolve_expected(expected: Any, ctx: EvalContext) -> Any:
    if isinstance(expected, dict) and set(expected) == {"config"}:
        node: Any = ctx.config
        for part in str(expected["config"]).split("."):
            node = getattr(node, part)
        return node
    return expected


def _version(v: Any) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(v))[:4]) or (0,)


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    return float(str(v).strip())


def _norm(v: Any) -> Any:
    """Compare config words case-insensitively (sshd -T prints lower case, files may not)."""
    return v.strip().lower() if isinstance(v, str) else v


def compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "exists":
        return actual is not None
    if op == "absent":
        return actual is None
    if op == "true":
        return actual is True
    if op == "false":
        return actual is False
    if op == "empty":
        return not actual
    if op == "nonempty":
        return bool(actual)
    if op == "eq":
        return _norm(actual) == _norm(expected) or (
            not isinstance(actual, bool | list | dict) and str(_norm(actual)) == str(_norm(expected))
        )
    if op == "ne":
        return not compare(actual, "eq", expected)
    if op == "in":
        return any(compare(actual, "eq", e) for e in expected)
    if op == "not_in":
        return not compare(actual, "in", expected)
    if op in ("ge", "gt", "le", "lt"):
        a, e = _num(actual), _num(expected)
        return {"ge": a >= e, "gt": a > e, "le": a <= e, "lt": a < e}[op]
    if op == "version_ge":
        return _version(actual) >= _version(expected)
    if op == "version_lt":
        return _version(actual) < _version(expected)
    items = actual if isinstance(actual, list | tuple | set) else [actual]
    norm = {str(_norm(i)) for i in items}
    if op == "contains":
        return str(_norm(expected)) in norm
    if op == "not_contains":
        return str(_norm(expected)) not in norm
    if op == "subset":
        return norm <= {str(_norm(e)) for e in expected}
    if op == "superset":
        return norm >= {str(_norm(e)) for e in expected}
    if op == "matches":
        return re.fullmatch(str(expected), str(actual)) is not None
    raise ValueError(f"unknown operator {op}")


def short(value: Any, limit: int = 80) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluate_fact_check(facts: dict[str, Any], fc: FactCheck, ctx: EvalContext) -> tuple[bool, str]:
    """(passed, evidence) for one comparison; raises MissingFact."""
    expected = resolve_expected(fc.expected, ctx)
    try:
        actual = lookup(facts, fc.fact)
    except MissingFact:
        if fc.op == "absent":
            return True, f"{fc.fact} absent"
        raise
    ok = compare(actual, fc.op, expected)
    exp = "" if fc.expected is None else f" (want {fc.op} {short(expected, 60)})"
    return ok, f"{fc.fact}={short(actual)}" + ("" if ok else exp)


# --- named Python checks --------------------------------------------------------------------

Outcome = tuple[str, str]  # (status, evidence)
PythonCheck = Callable[[DeviceFacts, dict[str, Any], EvalContext], Outcome]
PYTHON_CHECKS: dict[str, PythonCheck] = {}


def python_check(name: str) -> Callable[[PythonCheck], PythonCheck]:
    def register(fn: PythonCheck) -> PythonCheck:
        PYTHON_CHECKS[name] = fn
        return fn

    return register


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


def _age_s(value: Any, now: datetime) -> float | None:
    if value in (None, 0, "0", ""):
        return None
    if isinstance(value, int | float):
        ts = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, datetime):
        ts = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        ts = datetime.fromisoformat(str(value))
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return (now - ts).total_seconds()


def _vpn(dev: DeviceFacts) -> dict[str, Any] | Outcome:
    vpn = dev.facts.get("vpn")
    if vpn is None:
        raise MissingFact("vpn")
    if not vpn.get("evidence"):
        return "error", "no VPN evidence from the gateway: " + short(vpn.get("reason", "gateway not asked"))
    if not vpn.get("peer"):
        return "fail", "no WireGuard peer for this laptop on the gateway"
    return vpn


@python_check("vpn_handshake_fresh")
def _vpn_handshake_fresh(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    vpn = _vpn(dev)
    if isinstance(vpn, tuple):
        return vpn
    limit = ctx.config.vpn.handshake_max_age_s
    age = vpn.get("handshake_age_s")
    if age is None:
        age = _age_s(vpn.get("latest_handshake"), ctx.now)
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
        age = _age_s(vpn.get("key_created"), ctx.now)
        if age is None:
            return "error", "the key's creation time is not recorded"
        days = age / 86400
    if key_too_old(days, limit_days):
        return "fail", f"key is {days:.0f} days old (limit {limit_days})"
    return "pass", f"key is {days:.0f} days old"


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
    if dev.last_seen is None:
        return "fail", "out of contact: never seen by the MDM server"
    age = _age_s(dev.last_seen, ctx.now) or 0.0
    days = age / 86400
    seen = dev.last_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if days > max_days:
        return "fail", f"out of contact: last seen {seen} UTC, {days:.0f} days ago (limit {max_days})"
    return "pass", f"last seen {seen} UTC"


@python_check("push_cert_valid")
def _push_cert_valid(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    cert = lookup(dev.facts, "push_cert")
    min_days = ctx.config.compliance.push_cert_min_days
    not_after = datetime.fromisoformat(str(cert["not_after"]))
    days = (not_after - ctx.now).total_seconds() / 86400
    when = f"{cert['topic']} expires {not_after.astimezone(UTC):%Y-%m-%d}"
    if days <= 0:
        return "fail", f"{when}: expired, NanoMDM cannot wake any iPad"
    if days < min_days:
        return "fail", f"{when}, in {days:.0f} days (limit {min_days}): renew it under the same Apple ID"
    return "pass", f"{when}, in {days:.0f} days"


# --- evaluation ----------------------------------------------------------------------------


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EVIDENCE_MAX else text[: EVIDENCE_MAX - 1] + "…"


def evaluate_rule(rule: Rule, dev: DeviceFacts, ctx: EvalContext) -> RuleResult:
    """One rule on one device. Never raises for bad or missing facts: that is an `error` result."""
    if not dev.reachable and not rule.when_unreachable:
        return RuleResult(dev.device, rule.id, dev.failure, _clip(dev.reason or "did not answer"))
    try:
        if rule.check.python:
            status, evidence = PYTHON_CHECKS[rule.check.python](dev, dict(rule.check.params), ctx)
        else:
            status, notes = "pass", []
            for fc in rule.check.comparisons():
                ok, ev = evaluate_fact_check(dev.facts, fc, ctx)
                if not ok:
                    status, notes = "fail", [ev]
                    break
                notes.append(ev)
            evidence = "; ".join(notes)
    except MissingFact as e:
        status, evidence = "error", f"fact {e.args[0]} not collected"
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        status, evidence = "error", f"{e.__class__.__name__}: {e}"
    return RuleResult(dev.device, rule.id, status, _clip(evidence))


def _applies(rule: Rule, dev: DeviceFacts) -> bool:
    """Rules of a scope apply to the devices of that scope; a rule with a `requires_fact` param only
    to those whose facts carry that key (a fleet fact such as the push certificate or one Apps and
    Books token; a per-device fact collected only where the site uses the feature, e.g. escrow)."""
    if rule.scope != dev.scope:
        return False
    fact = rule.check.params.get("requires_fact")
    return fact is None or fact in dev.facts


def evaluate(rules: list[Rule], devices: list[DeviceFacts], ctx: EvalContext) -> list[RuleResult]:
    return [evaluate_rule(r, d, ctx) for d in devices for r in rules if _applies(r, d)]


# The patch level, apps, iPad setting and evidence checks live in their own modules and register
# themselves here.
from compliance import apps_checks, evidence, ipad_checks, patch_level  # noqa: E402, F401
