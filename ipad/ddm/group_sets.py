"""`werne ipad declarations apply`: the group sets in KMFDDM and each enrolled iPad in its group's set.

Per school and group of the inventory, the set `werne-<school>-<group>` holds the group's
declarations (declarations/groups.yaml) and an activation naming them all; each enrolled iPad is
mapped into its group's set and out of werne's other group sets (a moved iPad changes set; the
update sets `werne-<school>-update-<version>` are left alone). Everything is built and checked before
anything is sent; the mapping is behind the blast radius; every run leaves an audit record.
`map_enrolment` is the same for one iPad, for enrolment.arrival.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from core import audit
from core.config import Config
from core.findings import Findings
from ipad.dispatch import IPadContext, check_blast_radius, select_targets, target_text
from ipad.errors import IPadError
from ipad.payloads.declarations import (
    Declaration,
    DeclarationGroups,
    build_activation,
    group_sets,
    load_declaration_groups,
    set_name,
)
from mdm_client.errors import MDMError
from mdm_client.factory import kmfddm_client
from mdm_client.kmfddm import KMFDDMClient


@dataclass
class GroupSetsReport(Findings):
    """What `werne ipad declarations apply` did: sets written, iPads mapped (serial -> what happened)."""

    sets: dict[str, list[str]] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    not_enrolled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_enrolled

    def to_dict(self) -> dict[str, Any]:
        return {"sets": self.sets, "mapped": self.mapped, "not_enrolled": self.not_enrolled}


def ddm_configured(config: Config) -> bool:
    """The site uses declarative management: a KMFDDM API key is configured (file or variable)."""
    return bool(config.ddm.api_key_file or os.environ.get(config.ddm.api_key_env))


def _put_set(client: KMFDDMClient, name: str, decls: list[Declaration], prefix: DeclarationGroups) -> list[str]:
    activation = build_activation(prefix, name, decls)
    for d in [*decls, activation]:
        client.put_declaration(d.to_dict(), notify=False)
        client.add_to_set(name, d.identifier, notify=False)
    return [d.identifier for d in [*decls, activation]]


def put_group_sets(client: KMFDDMClient, schools_groups: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Write the sets of these (school, group) pairs into KMFDDM, without mapping any device."""
    groups = load_declaration_groups()
    return {name: _put_set(client, name, decls, groups) for name, decls in group_sets(schools_groups).items()}


def map_enrolment(client: KMFDDMClient, enrollment_id: str, school: str, group: str) -> bool:
    """Put one enrolment into its group's set (and out of werne's other group sets); the set must
    exist (apply_group_sets). True when the mapping changed; KMFDDM then notifies the device."""
    groups = load_declaration_groups()
    want = set_name(groups, school, group)
    update_infix = "-update-"
    for old in client.enrollment_sets(enrollment_id):
        if old.startswith(groups.set_prefix + "-") and update_infix not in old and old != want:
            client.unmap_enrollment(enrollment_id, old)
    return client.map_enrollment(enrollment_id, want)


def join_group_set(config: Config, enrollment_id: str, school: str, group: str,
                   ddm: KMFDDMClient | None = None) -> str | None:
    """For an iPad that has just enrolled: write its group's set (idempotent: unchanged declarations
    are not rewritten) and map the enrolment into it. None when declarative management is not set
    up (no KMFDDM key configured); the set's name otherwise. KMFDDM errors are raised (mdm_client's KMFDDMError)."""
    if ddm is None:
        if not ddm_configured(config):
            return None
        ddm = kmfddm_client(config)
    put_group_sets(ddm, [(school, group)])
    map_enrolment(ddm, enrollment_id, school, group)
    return set_name(load_declaration_groups(), school, group)


def apply_group_sets(ctx: IPadContext, school: str | None = None, max_devices: int | None = None,
                     ddm: KMFDDMClient | None = None) -> GroupSetsReport:
    """`werne ipad declarations apply`: write the group sets and map every enrolled iPad (module docstring)."""
    targets = [t for t in select_targets(ctx, school) if t.group]
    pairs = sorted({(t.school or "", t.group or "") for t in targets})
    sets = group_sets(pairs)  # builds and checks every declaration before anything is sent
    groups = load_declaration_groups()
    enrolled = [t for t in targets if t.enrollment_id]
    check_blast_radius(ctx, len(enrolled), max_devices, "declarations apply")
    report = GroupSetsReport(not_enrolled=[t.serial for t in targets if not t.enrollment_id])
    detail: dict[str, Any] = {"devices": [t.serial for t in targets], "sets": sorted(sets)}
    try:
        client = ddm or kmfddm_client(ctx.config)
        for name, decls in sets.items():
            report.sets[name] = _put_set(client, name, decls, groups)
        for t in enrolled:
            assert t.enrollment_id is not None
            changed = map_enrolment(client, t.enrollment_id, t.school or "", t.group or "")
            report.mapped[t.serial] = f"in {set_name(groups, t.school or '', t.group or '')}" + (
                "" if changed else " (already)")
    except (IPadError, MDMError) as e:
        audit.record(ctx.db, "ipad.declarations.apply", target_text(targets),
                     {**detail, "mapped": report.mapped, "result": f"error: {e}"}, actor=ctx.actor)
        raise
    audit.record(ctx.db, "ipad.declarations.apply", target_text(targets),
                 {**detail, "mapped": report.mapped, "not_enrolled": report.not_enrolled}, actor=ctx.actor)
    return report

