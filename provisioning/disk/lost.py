"""`werne laptop lock|erase|unlock`: what werne does to a lost, stolen or found laptop.

An order names laptops, passes the blast-radius gate (provisioning.blast_radius, or --max-hosts N
for exactly that many) and, for lock and erase, a typed confirmation; it is audited with who ordered
it. Each laptop is identified by its pinned host key at that moment (`identity`, the fingerprints
pinned for its address). A laptop reached now gets the action at once; one that is off is queued
(provisioning.home.pending, outcome "queued") and `werne laptop watch` applies it FIRST when its
tunnel comes up, before any other pending item. Either way the action runs only on a laptop that
shows one of the identity's keys: another laptop that takes its address later never gets it.

lock: no logins except the city's admin key, sessions ended, the VPN left up. erase: the LUKS
keyslots destroyed (crypto-erase), then power off; with --revoke-vpn the VPN peer is revoked once
the erase ran (revoking first would cut the only way to reach a laptop that is off). unlock: the
lock undone. The work on the laptop is playbooks/lost.yml (module werne_lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core import audit
from core.config import Config
from core.db import Database
from core.findings import Findings
from core.inventory import Inventory
from provisioning import ansible
from provisioning.disk import escrow as disk_escrow
from provisioning.errors import LostLaptopError
from provisioning.home import pending
from provisioning.home.models import KIND_ERASE, KIND_LOCK, KIND_UNLOCK, LOST_KINDS
from provisioning.known_hosts import PinnedHostKeys, fingerprint
from provisioning.preflight import check_many, known_hosts_path, select_targets

STATE = {KIND_LOCK: "locked", KIND_ERASE: "erased", KIND_UNLOCK: "unlocked"}
TASK = "Apply the lost-laptop action"
# In a pending erase's reason: revoke the VPN peer once the erase has run.
REVOKE_MARK = "[then revoke the VPN peer]"
CONFIRMED = (KIND_LOCK, KIND_ERASE)


@dataclass
class LostOutcome:
    """What happened to one laptop: done (applied now), queued (off: the watcher applies it),
    failed or refused (with why)."""

    host: str
    outcome: str
    detail: str = ""
    pending_item: int | None = None


@dataclass
class LostReport(Findings):
    """One order's result, per laptop."""

    action: str
    hosts: list[LostOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.outcome in ("done", "queued") for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "ok": self.ok,
                "hosts": [{"host": h.host, "outcome": h.outcome, "detail": h.detail, "pending_item": h.pending_item}
                          for h in self.hosts]}


def identities(config: Config, inventory: Inventory, hosts: list[str]) -> dict[str, str | None]:
    """The fingerprints pinned for each laptop's address now (comma-separated), or None: its identity."""
    pinned = PinnedHostKeys(known_hosts_path(config))
    out: dict[str, str | None] = {}
    for t in select_targets(config, inventory, hosts, False):
        keys = pinned.lookup(t.host_id)
        out[t.name] = ",".join(sorted(fingerprint(k) for k in keys.values())) or None
    return out


def check_gate(config: Config, action: str, hosts: list[str], typed: str | None, yes: bool,
               max_hosts: int | None) -> None:
    """The blast-radius gate and, for lock and erase, the typed confirmation. Raises LostLaptopError."""
    n, limit = len(hosts), config.provisioning.blast_radius
    if max_hosts is not None and n > max_hosts:
        raise LostLaptopError(f"{action} would touch {n} laptops, more than --max-hosts {max_hosts}; nothing was done")
    if n > limit and max_hosts is None:
        raise LostLaptopError(f"{action} would touch {n} laptops, more than provisioning.blast_radius {limit}; "
                              f"add --max-hosts {n} to confirm; nothing was done")
    if action not in CONFIRMED:
        return
    if yes:
        if max_hosts != n:
            raise LostLaptopError(f"{action} --yes needs --max-hosts {n} (the number of laptops); nothing was done")
        return
    if sorted((typed or "").replace(",", " ").split()) != sorted(hosts):
        raise LostLaptopError(f"the laptop names typed did not match; nothing was done ({action})")


# apply(config, inventory, action, {host: identity}) -> {host: (outcome, detail)}; a seam for tests
ApplyFn = Callable[[Config, Database, Inventory, str, dict[str, str | None]], dict[str, tuple[str, str]]]


def apply_now(config: Config, db: Database, inventory: Inventory, action: str,
              wanted: dict[str, str | None]) -> dict[str, tuple[str, str]]:
    """Apply `action` to the laptops that show their identity's key now: {host: (outcome, detail)}
    with outcome done | unreachable | refused | failed. Nothing runs on a laptop whose key differs."""
    targets = select_targets(config, inventory, list(wanted), False)
    checks = check_many(targets, config, PinnedHostKeys(known_hosts_path(config)), None)
    out: dict[str, tuple[str, str]] = {}
    run_on = []
    for c, _ in checks:
        ident = wanted.get(c.host)
        if c.checks.get("reachable") == "failed":
            out[c.host] = ("unreachable", c.reason or "unreachable")
        elif not ident or c.host_key_fingerprint not in ident.split(","):
            out[c.host] = ("refused", f"the laptop at {c.address} shows host key {c.host_key_fingerprint}, not the "
                                      f"one pinned when the {action} was ordered ({ident or 'none'}): not applied")
        elif c.checks.get("host_key") == "failed":
            out[c.host] = ("refused", f"{c.reason} (at {c.address})")
        else:
            run_on.append(c.host)
    if not run_on:
        return out
    extravars: dict[str, Any] = {"werne_lost_state": STATE[action], "werne_admin_user": config.ssh.user}
    if action == KIND_ERASE:
        # After the erase, the escrowed recovery key must not open the volume any more: the module tests it.
        extravars.update(disk_escrow.provision_extravars(config, db, run_on, {}, check_mode=True))
    result = ansible.run_playbook(
        config, "lost.yml", inventory=inventory.hosts_file, hosts=run_on,
        private_data_dir=config.state_dir / "artifacts" / "lost", known_hosts=known_hosts_path(config),
        forks=config.provisioning.forks, timeout_s=config.provisioning.timeout_s, extravars=extravars,
        rotate_artifacts=20)
    for h in run_on:
        r = result.outcomes.get(h)
        if r is None or r.outcome == "unreachable":
            out[h] = ("unreachable", (r.reason if r else None) or "unreachable")
        elif r.outcome == "failed":
            out[h] = ("failed", r.reason or "failed")
        else:
            out[h] = ("done", f"{STATE[action]}")
    return out


def order(config: Config, db: Database, inventory: Inventory, action: str, hosts: list[str], *,
          typed: str | None = None, yes: bool = False, max_hosts: int | None = None, revoke_vpn: bool = False,
          reason: str = "", actor: str | None = None, apply: ApplyFn = apply_now) -> LostReport:
    """Order `action` (lock | erase | unlock) for laptops: gated, audited, applied now where the
    laptop is reached, else queued for `werne laptop watch`. Raises LostLaptopError (exit 2) before
    anything is done: unknown laptop, no pinned host key, gate or confirmation not passed."""
    if action not in LOST_KINDS:
        raise LostLaptopError(f"unknown action {action!r}")
    if revoke_vpn and action != KIND_ERASE:
        raise LostLaptopError("--revoke-vpn goes with erase only (a locked laptop keeps its VPN to stay reachable)")
    hosts = list(dict.fromkeys(hosts))
    actor = actor or audit.current_actor()
    select_targets(config, inventory, hosts, False)  # unknown laptops: exit 2
    try:
        check_gate(config, action, hosts, typed, yes, max_hosts)
    except LostLaptopError as e:
        audit.record(db, f"laptop.{action}", ",".join(hosts), {"result": f"refused: {e}"}, actor=actor)
        raise
    idents = identities(config, inventory, hosts)
    unknown = [h for h, i in idents.items() if not i]
    if unknown:
        raise LostLaptopError(f"no host key pinned for {', '.join(unknown)}: werne could not tell it from another "
                              "laptop at its address (`werne laptop preflight --accept-new` when it was enrolled)")
    audit.record(db, f"laptop.{action}", ",".join(hosts),
                 {"result": "ordered", "identities": idents, "reason": reason, "revoke_vpn": revoke_vpn}, actor=actor)
    outcomes = apply(config, db, inventory, action, idents)
    report = LostReport(action)
    for h in hosts:
        outcome, detail = outcomes.get(h, ("unreachable", "no result"))
        if outcome == "unreachable":
            why = f"{reason}; " if reason else ""
            item, _ = pending.enqueue(db, h, action, actor, f"{why}ordered while off ({detail})"
                                      + (f" {REVOKE_MARK}" if revoke_vpn else ""), identity=idents[h])
            report.hosts.append(LostOutcome(h, "queued", f"off or away ({detail}): queued as pending item {item.id}; "
                                            "`werne laptop watch` applies it first when the laptop comes online",
                                            item.id))
            continue
        if outcome == "done" and revoke_vpn:
            detail += "; " + revoke_peer(config, db, inventory, h, reason or f"{action} ordered", actor)
        report.hosts.append(LostOutcome(h, outcome, detail))
    audit.record(db, f"laptop.{action}.result", ",".join(hosts),
                 {"outcomes": {o.host: o.outcome for o in report.hosts}}, actor=actor)
    return report


def revoke_peer(config: Config, db: Database, inventory: Inventory, host: str, reason: str, actor: str) -> str:
    """Revoke the laptop's VPN peer after an erase; one line saying what happened."""
    from core.errors import WerneError
    from provisioning.vpn.ops import revoke  # the VPN side, only for an erase with --revoke-vpn

    try:
        r = revoke(config, db, inventory, host, f"erased: {reason}", actor=actor)
    except WerneError as e:
        return f"VPN peer NOT revoked: {e}"
    return f"VPN peer {r.outcome}" + (f" ({r.reason})" if r.reason else "")


def apply_pending(config: Config, db: Database, inventory: Inventory, items: list[pending.PendingItem],
                  apply: ApplyFn = apply_now) -> dict[int, tuple[str, str]]:
    """The watcher's part: apply pending lost-laptop items (erase before lock before unlock), each
    only to the laptop that shows its identity. {item id: (outcome, detail)}."""
    out: dict[int, tuple[str, str]] = {}
    for kind in LOST_KINDS:
        mine = [i for i in items if i.kind == kind]
        if not mine:
            continue
        res = apply(config, db, inventory, kind, {i.host: i.identity for i in mine})
        for i in mine:
            outcome, detail = res.get(i.host, ("unreachable", "no result"))
            if outcome == "done" and REVOKE_MARK in i.reason:
                detail += "; " + revoke_peer(config, db, inventory, i.host, f"pending item {i.id}",
                                             "werne laptop watch")
            out[i.id] = (outcome, detail)
    return out
