"""Collect the iPads' facts: an MDM query sweep (DeviceInformation, SecurityInfo, ProfileList) with a deadline.

The sweep enqueues the three queries for every enrolled iPad through NanoMDM, records them in the
MDM registry, and waits until every device answered or the deadline (compliance.query_deadline_s)
passed; the webhook receiver stores the answers. Devices silent by then are `unreachable`, with
their last-seen time; the in-contact rule still evaluates them (BSI Mindeststandard MDM.2.8.03).
iPads in the inventory that never enrolled are unreachable and "never seen".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from compliance.collect_laptops import Progress, ProgressCallback
from compliance.engine import DeviceFacts
from compliance.errors import CollectionError
from core.config import Config
from core.errors import WerneError
from core.inventory import Inventory

QUERY_TYPES = ("DeviceInformation", "SecurityInfo", "ProfileList")
DEVICE_QUERIES = ["SerialNumber", "DeviceName", "ModelName", "OSVersion", "BuildVersion", "IsSupervised"]


@dataclass
class EnrolledDevice:
    """What the MDM registry knows about an enrolled iPad before the sweep."""

    enrollment_id: str
    serial: str
    last_seen: datetime | None
    state: str = "enrolled"


@dataclass
class SweepResult:
    """Answers per enrollment id and request type, plus per-device reasons for missing ones."""

    answers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class QuerySweep(Protocol):
    """Sends the queries and waits for answers until the deadline (the MDM library does the work)."""

    def enrolled(self) -> list[EnrolledDevice]: ...

    def sweep(self, ids: list[str], deadline_s: float, progress: Callable[[int, int], None]) -> SweepResult: ...


class NanoMDMSweep:
    """The real sweep: mdm_client's NanoMDM client to enqueue, its registry to read the answers."""

    def __init__(self, config: Config, db: Any, poll_interval: float = 0.5):
        from core.secrets import read_secret
        from mdm_client.client import NanoMDMClient
        from mdm_client.registry import Registry

        self.registry = Registry(db)
        key = read_secret(file=config.mdm.api_key_file, env=config.mdm.api_key_env, what="MDM API key")
        self.client = NanoMDMClient(config.mdm.url, key, timeout=config.mdm.timeout)
        self.poll_interval = poll_interval

    def enrolled(self) -> list[EnrolledDevice]:
        return [EnrolledDevice(d.enrollment_id, d.serial or "", d.last_seen_at, d.state)
                for d in self.registry.devices_by_serial().values()]

    def sweep(self, ids: list[str], deadline_s: float, progress: Callable[[int, int], None]) -> SweepResult:
        from mdm_client import commands

        out = SweepResult()
        if not ids:
            return out
        start = time.monotonic()
        uuids = []
        for cmd in (commands.device_information(DEVICE_QUERIES), commands.security_info(), commands.profile_list()):
            try:
                res = self.client.enqueue(cmd, ids)
            except WerneError as e:
                raise CollectionError(f"MDM query sweep: {e}") from None
            self.registry.record_enqueued(cmd.uuid, cmd.request_type, res.queued, res.failed, actor="compliance",
                                          detail={"purpose": "compliance sweep"})
            for eid, why in res.failed.items():
                out.errors[eid] = why
            uuids.append(cmd.uuid)
        want = {eid for eid in ids if eid not in out.errors}
        while True:
            done: dict[str, dict[str, dict[str, Any]]] = {}
            for c in self.registry.command_statuses(uuids):
                if c.status == "Acknowledged":
                    done.setdefault(c.enrollment_id, {})[c.request_type] = c.result or {}
                elif c.status in ("Error", "CommandFormatError"):
                    msg = "; ".join(str(e.get("USEnglishDescription") or e.get("LocalizedDescription") or e)
                                    for e in (c.error_chain or []))
                    out.errors.setdefault(c.enrollment_id, f"{c.request_type}: {c.status} {msg}".strip())
            complete = {eid for eid, a in done.items() if len(a) == len(QUERY_TYPES)}
            progress(len(complete & want), len(want))
            if want <= complete | set(out.errors) or time.monotonic() - start >= deadline_s:
                out.answers = {eid: a for eid, a in done.items() if eid in complete}
                return out
            time.sleep(self.poll_interval)


def _unwrap(answer: dict[str, Any], key: str) -> Any:
    """Registries store either the whole response or just its main key; accept both."""
    return answer.get(key, answer) if isinstance(answer, dict) else answer


def ipad_facts(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    info = _unwrap(answers["DeviceInformation"], "QueryResponses")
    sec = _unwrap(answers["SecurityInfo"], "SecurityInfo")
    plist = _unwrap(answers["ProfileList"], "ProfileList")
    plist = plist if isinstance(plist, list) else []
    return {
        "device": {"os_version": info.get("OSVersion"), "build": info.get("BuildVersion"),
                   "is_supervised": info.get("IsSupervised"), "model": info.get("ModelName"),
                   "name": info.get("DeviceName"), "serial": info.get("SerialNumber")},
        "security": {"passcode_present": sec.get("PasscodePresent"),
                     "passcode_compliant": sec.get("PasscodeCompliant"),
                     "passcode_compliant_with_profiles": sec.get("PasscodeCompliantWithProfiles"),
                     "hardware_encryption_caps": sec.get("HardwareEncryptionCaps")},
        "profiles": {"identifiers": sorted(str(p.get("PayloadIdentifier")) for p in plist
                                           if isinstance(p, dict) and p.get("PayloadIdentifier"))},
    }


def collect_ipads(config: Config, inventory: Inventory, db: Any, progress: ProgressCallback | None = None,
                  sweep: QuerySweep | None = None, serials: list[str] | None = None) -> list[DeviceFacts]:
    """Facts for every iPad of the inventory; silent or never-enrolled ones are unreachable."""
    wanted = serials if serials is not None else sorted(inventory.ipads)
    if not wanted:
        return []
    sweep = sweep or NanoMDMSweep(config, db)
    enrolled = {d.serial: d for d in sweep.enrolled() if d.serial and d.state == "enrolled"}
    ids = [enrolled[s].enrollment_id for s in wanted if s in enrolled]

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(Progress("ipads", done, total))

    result = sweep.sweep(ids, config.compliance.query_deadline_s, tick)
    out = []
    for serial in wanted:
        ipad = inventory.ipads[serial]
        common = {"device": serial, "fleet": "ipads", "school": ipad.school, "group": ipad.group,
                  "name": ipad.name or serial}
        dev = enrolled.get(serial)
        if dev is None:
            out.append(DeviceFacts(**common, reachable=False, reason="not enrolled in the MDM"))
            continue
        last_seen = dev.last_seen if dev.last_seen is None or dev.last_seen.tzinfo else \
            dev.last_seen.replace(tzinfo=UTC)
        answers = result.answers.get(dev.enrollment_id)
        if answers is not None:
            out.append(DeviceFacts(**common, facts=ipad_facts(answers), last_seen=datetime.now(UTC)))
        elif dev.enrollment_id in result.errors:
            out.append(DeviceFacts(**common, reachable=False, failure="error", last_seen=last_seen,
                                   reason=result.errors[dev.enrollment_id]))
        else:
            seen = last_seen.strftime("%Y-%m-%d %H:%M UTC") if last_seen else "never"
            out.append(DeviceFacts(**common, reachable=False, last_seen=last_seen,
                                   reason=f"no answer within {config.compliance.query_deadline_s:g}s; "
                                          f"last seen {seen}"))
    return out
