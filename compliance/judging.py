"""Judging a night's devices: the devices the collectors found in the order the run stores them,
the baselines evaluated on them and the waivers applied. Shared by the single-process run
(compliance.run) and the sharded one (compliance.shards), so both store the same results in the
same order."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, wait
from datetime import datetime

from compliance.collect_fleet import apps_token_facts, ipad_expiry_facts, ipad_fleet_facts
from compliance.engine import evaluate
from compliance.facts import DeviceFacts, EvalContext
from compliance.results import RuleResult
from compliance.rules import BaselineSet
from compliance.waivers import WaiverSet
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.inventory import Inventory
from core.timing import StepTimes


def group_profile_identifiers(config: Config, db: Database | None = None,
                              inventory: Inventory | None = None) -> Callable[[DeviceFacts], set[str]]:
    """device -> the profile identifiers it must have: its group's (ipad.profiles, cached per group),
    its school's own Apple TV profiles, and for an iPad in a class the Education configuration (and
    a running lesson's profile)."""
    extra = _device_extras(config, db, inventory)

    @functools.lru_cache(maxsize=16)
    def for_group(group: str) -> frozenset[str]:
        # Here, not at the top: a laptops-only run never loads the iPad side (importing
        # ipad.payloads.profiles reads profiles/groups.yaml).
        from ipad.payloads import profiles

        try:
            return frozenset(p.identifier for p in profiles.profile_set_for(group, config))
        except WerneError:
            # Building a profile can need a secret (the Wi-Fi password) that a checking host may
            # lack; the identifiers do not depend on it.
            a = profiles.load_group_assignment(config)
            return frozenset(f"{a.identifier_prefix}.{n}" for n in a.groups.get(group, []))

    def lookup(dev: DeviceFacts) -> set[str]:
        return set(for_group(dev.group or "")) | extra(dev)

    return lookup


def _device_extras(config: Config, db: Database | None, inventory: Inventory | None
                   ) -> Callable[[DeviceFacts], set[str]]:
    """device -> identifiers beyond its group's set (schools' Apple TV profiles, classes, lessons)."""
    if db is None or inventory is None:
        return lambda dev: set()
    # Here, not at the top: a laptops-only run never loads the iPad side.
    from ipad.classroom.classes import list_classes
    from ipad.classroom.context import classes_by_serial
    from ipad.classroom.education import PROFILE_NAME as CLASSROOM
    from ipad.classroom.lessons import PROFILE_NAME as LESSON
    from ipad.classroom.lessons import active_lessons_by_serial
    from ipad.payloads import profiles

    prefix = profiles.load_group_assignment(config).identifier_prefix
    in_class = set(classes_by_serial(list_classes(db)))
    in_lesson = set(active_lessons_by_serial(db))

    def extra(dev: DeviceFacts) -> set[str]:
        out: set[str] = set()
        if dev.fleet == "appletvs" and dev.school in inventory.schools:
            out |= {f"{prefix}.{n}" for n in inventory.schools[dev.school].appletv_profiles}
        if dev.device in in_class:
            out.add(f"{prefix}.{CLASSROOM}")
        if dev.device in in_lesson:
            out.add(f"{prefix}.{LESSON}")
        return out

    return extra


def fleet_devices(db: Database, config: Config, fleets: tuple[str, ...],
                  jobs: dict[str, Future[list[DeviceFacts]]], times: StepTimes) -> list[DeviceFacts]:
    """Every device the collectors (`jobs`, one per fleet) found, in fleet order, with the iPads'
    fleet-wide entries (push certificate, tokens, expiries) last. This order is the order of the
    stored results, which a sharded run (compliance.shards) assembles to the same."""
    devices: list[DeviceFacts] = []
    try:
        for fleet in fleets:
            if fleet in jobs:
                devices += jobs[fleet].result()
    except Exception:
        wait(list(jobs.values()))  # as a pool would: no collector still runs once the run has failed
        raise
    if "ipads" in fleets:
        with times.step("fleet_facts"):
            devices += ipad_fleet_facts(db) + apps_token_facts(config) + ipad_expiry_facts(config, db)
    return devices


def judge(config: Config, db: Database, inventory: Inventory, baselines: BaselineSet, waivers: WaiverSet,
          fleets: tuple[str, ...], devices: list[DeviceFacts], at: datetime, times: StepTimes) -> list[RuleResult]:
    """The baselines evaluated on the devices, fleet by fleet, with the waivers applied."""
    with times.step("evaluation"):
        ctx = EvalContext(config=config, now=at, profile_set_for=group_profile_identifiers(config, db, inventory))
        results: list[RuleResult] = []
        for fleet in fleets:
            results += evaluate(baselines.for_fleet(fleet), [d for d in devices if d.fleet == fleet], ctx)
    with times.step("waivers"):
        return waivers.apply(results, {d.device: d for d in devices}, at)
