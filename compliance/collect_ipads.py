"""Collect the iPads' facts: an MDM query sweep (DeviceInformation, SecurityInfo, ProfileList) with a
deadline.

The sweep enqueues the three queries for every enrolled iPad through NanoMDM, records them in the
MDM registry, and waits until every device answered or the deadline (compliance.query_deadline_s)
passed; the webhook receiver stores the answers. Devices silent by then are `unreachable`, with
their last-seen time; the in-contact rule still evaluates them (BSI Mindeststandard MDM.2.8.03).
iPads in the inventory that never enrolled are unreachable and "never seen".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from compliance.apps_checks import ipad_app_facts
from compliance.collect_laptops import Progress, ProgressCallback
from compliance.engine import DeviceFacts
from compliance.errors import CollectionError
from core.config import Config
from core.errors import InputError, WerneError
from core.inventory import Inventory

QUERY_TYPES = ("DeviceInformation", "SecurityInfo", "ProfileList")
DEVICE_QUERIES = ["SerialNumber", "DeviceName", "ModelName", "OSVersion", "BuildVersion", "IsSupervised"]


@dataclass
class SweptIPad:
    """The outcome of the query sweep for one iPad."""

    serial: str
    status: str  # answered | unreachable | error | not_enrolled
    answers: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    last_seen: datetime | None = None


class QuerySweep(Protocol):
    """Sends the queries to every iPad and waits until the deadline (the MDM library does the work)."""

    def __call__(self, deadline_s: float) -> list[SweptIPad]: ...


def mdm_query_sweep(config: Config, db: Any, inventory: Inventory) -> QuerySweep:
    """The real sweep: `ipad.ops.query` (DeviceInformation, SecurityInfo, ProfileList,
    CertificateList through NanoMDM, answers stored by the webhook receiver), then the registry's
    newest facts of every device that answered."""

    from ipad.ops import IPadContext, query

    ctx = IPadContext(config, db, inventory, actor="compliance")
    ctx.client  # noqa: B018 - reads the API key now: a missing one is bad config (exit 2) before any run starts

    def sweep(deadline_s: float) -> list[SweptIPad]:
        try:
            report = query(ctx, deadline_s=deadline_s, with_apps=True)
        except InputError:
            raise  # a missing API key or a bad setting: exit 2, not "could not run"
        except WerneError as e:
            raise CollectionError(f"MDM query sweep: {e}") from None
        devices = ctx.registry.devices_by_serial()
        out = []
        for d in report.devices:
            dev = devices.get(d.serial)
            last_seen = dev.last_seen_at if dev is not None else None
            if d.enrollment_id is None:
                out.append(
                    SweptIPad(d.serial, "not_enrolled", reason="not enrolled in the MDM", last_seen=last_seen)
                )
                continue
            by_type = {o.request_type: o for o in d.outcomes}
            needed = [by_type.get(t) for t in QUERY_TYPES]
            if dev is not None and all(o is not None and o.status == "Acknowledged" for o in needed):
                answers = {t: (dev.facts.get(t) or {}).get("value") for t in QUERY_TYPES}
                apps = by_type.get("ManagedApplicationList")
                if apps is not None and apps.status == "Acknowledged":  # optional: only for the app rules
                    answers["ManagedApplicationList"] = (dev.facts.get("ManagedApplicationList") or {}).get("value")
                out.append(SweptIPad(d.serial, "answered", answers, last_seen=last_seen))
            elif any(o is not None and o.status in ("Error", "CommandFormatError") for o in needed):
                bad = [
                    f"{o.request_type}: {o.status} {o.detail}".strip()
                    for o in needed
                    if o is not None and o.status in ("Error", "CommandFormatError")
                ]
                out.append(SweptIPad(d.serial, "error", reason="; ".join(bad), last_seen=last_seen))
            else:
                out.append(SweptIPad(d.serial, "unreachable", last_seen=last_seen))
        return out

    return sweep


def mdm_ddm_sweep(config: Config, db: Any, inventory: Inventory, ddm_client: Any = None,
                  now: datetime | None = None) -> QuerySweep:
    """The nightly sweep with declarative status: OS version, build and passcode state of the iPads
    that report them through DDM (fresh within ddm.status_max_age_h, read from KMFDDM by
    ipad.ddm_status) come from their status, so they are asked only what DDM does not report
    (ProfileList, Restrictions, CertificateList; ipad.sweep). The others get the full query set.
    KMFDDM unreachable or not set up: every iPad gets the full set (the status is an optimisation
    of the evidence, never a reason to have none)."""
    import logging

    from ipad.ddm_status import read_ddm_status
    from ipad.ops import IPadContext
    from ipad.sweep import ALWAYS, UNLESS_DDM, nightly_query
    from mdm_client.errors import MDMError

    ctx = IPadContext(config, db, inventory, actor="compliance")
    ctx.client  # noqa: B018 - reads the API key now: a missing one is bad config (exit 2) before any run starts

    def sweep(deadline_s: float) -> list[SweptIPad]:
        devices = ctx.registry.devices_by_serial()
        enrolled = {d.enrollment_id: s for s, d in devices.items()
                    if s in inventory.ipads and d.state == "enrolled" and d.enrollment_id}
        status: dict[str, Any] = {}
        ddm_set_up = bool(config.ddm.api_key_file or os.environ.get(config.ddm.api_key_env))
        if config.ddm.status_in_nightly and enrolled and (ddm_set_up or ddm_client is not None):
            try:
                from mdm_client.factory import kmfddm_client

                client = ddm_client or kmfddm_client(config)
                status = read_ddm_status(client, enrolled)
            except (MDMError, InputError) as e:
                logging.getLogger("werne.compliance").warning("declarative status not read: %s", e)
        at = now or datetime.now(UTC)
        max_age = config.ddm.status_max_age_h * 3600
        ddm_serials: set[str] = set()
        for eid, st in status.items():
            dev = devices.get(enrolled[eid])
            static_known = dev is not None and all(k in (dev.facts or {}) for k in UNLESS_DDM)
            fresh = st.reported_at is not None and (at - st.reported_at).total_seconds() <= max_age
            if fresh and static_known and st.has("device.operating-system.version", "passcode.is-present",
                                                 "passcode.is-compliant"):
                ddm_serials.add(enrolled[eid])
        try:
            report = nightly_query(ctx, ddm_serials, deadline_s)
        except InputError:
            raise
        except WerneError as e:
            raise CollectionError(f"MDM query sweep: {e}") from None
        devices = ctx.registry.devices_by_serial()
        out = []
        for d in report.devices:
            dev = devices.get(d.serial)
            last_seen = dev.last_seen_at if dev is not None else None
            if d.enrollment_id is None:
                out.append(SweptIPad(d.serial, "not_enrolled", reason="not enrolled in the MDM", last_seen=last_seen))
                continue
            by_type = {o.request_type: o for o in d.outcomes}
            kinds = ALWAYS if d.serial in ddm_serials else (*UNLESS_DDM, *ALWAYS)
            needed = [by_type.get(t) for t in kinds if t != "Restrictions"]
            failed = [o for o in needed if o is not None and o.status in ("Error", "CommandFormatError")]
            if dev is not None and all(o is not None and o.status == "Acknowledged" for o in needed):
                answers = {t: (dev.facts.get(t) or {}).get("value") for t in (*QUERY_TYPES, "Restrictions")}
                apps = by_type.get("ManagedApplicationList")
                if apps is not None and apps.status == "Acknowledged":  # optional: only for the app rules
                    answers["ManagedApplicationList"] = (dev.facts.get("ManagedApplicationList") or {}).get("value")
                st = status.get(d.enrollment_id)
                if st is not None:
                    answers["DDM"] = st.to_facts()
                    answers["DDMItems"] = dict(st.items)
                out.append(SweptIPad(d.serial, "answered", answers, last_seen=last_seen))
            elif failed:
                bad = [f"{o.request_type}: {o.status} {o.detail}".strip() for o in failed]
                out.append(SweptIPad(d.serial, "error", reason="; ".join(bad), last_seen=last_seen))
            else:
                out.append(SweptIPad(d.serial, "unreachable", last_seen=last_seen))
        return out

    return sweep


def _unwrap(answer: dict[str, Any], key: str) -> Any:
    """Registries store either the whole response or just its main key; accept both."""
    return answer.get(key, answer) if isinstance(answer, dict) else answer


def ipad_facts(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    facts = _query_facts(answers)
    ddm = answers.get("DDM")
    if isinstance(ddm, dict):
        # What the iPad reported through its status channel is newer than any stored query answer.
        facts["ddm"] = ddm
        items = answers.get("DDMItems") or {}
        for fact, item in (("os_version", "device.operating-system.version"),
                           ("build", "device.operating-system.build-version")):
            if item in items:
                facts["device"][fact] = items[item]
        if "passcode.is-present" in items:
            facts["security"]["passcode_present"] = items["passcode.is-present"]
        if "passcode.is-compliant" in items:
            # passcode.is-compliant: compliant with every passcode policy (profiles and declarations)
            facts["security"]["passcode_compliant"] = items["passcode.is-compliant"]
            facts["security"]["passcode_compliant_with_profiles"] = items["passcode.is-compliant"]
    if items.get("device.model.identifier") if isinstance(ddm, dict) else None:
        facts["device"]["product"] = items["device.model.identifier"]
    restrictions = answers.get("Restrictions")
    if isinstance(restrictions, dict):
        facts["restrictions"] = restrictions
    return facts


def _query_facts(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    info = _unwrap(answers["DeviceInformation"], "QueryResponses")
    sec = _unwrap(answers["SecurityInfo"], "SecurityInfo")
    plist = _unwrap(answers["ProfileList"], "ProfileList")
    plist = plist if isinstance(plist, list) else []
    return {
        "device": {
            "os_version": info.get("OSVersion"),
            "build": info.get("BuildVersion"),
            "is_supervised": info.get("IsSupervised"),
            "model": info.get("ModelName"),
            "product": info.get("SoftwareUpdateDeviceID") or info.get("ProductName"),
            "name": info.get("DeviceName"),
            "serial": info.get("SerialNumber"),
        },
        "security": {
            "passcode_present": sec.get("PasscodePresent"),
            "passcode_compliant": sec.get("PasscodeCompliant"),
            "passcode_compliant_with_profiles": sec.get("PasscodeCompliantWithProfiles"),
            "hardware_encryption_caps": sec.get("HardwareEncryptionCaps"),
        },
        "profiles": {
            "identifiers": sorted(
                str(p.get("PayloadIdentifier"))
                for p in plist
                if isinstance(p, dict) and p.get("PayloadIdentifier")
            )
        },
    }


def _catalogue(config: Config, now: datetime) -> Any:
    """Apple's catalogue snapshot when one is there and usable (rule ios-model-supported), else None."""
    from ipad.catalogue import CatalogueError, load_catalogue

    try:
        return load_catalogue(config, now)
    except CatalogueError:
        return None


def _catalogue_facts(catalogue: Any, model: str, now: datetime) -> dict[str, Any]:
    offered = catalogue.versions_for(model, now.date())
    newest = catalogue.offered_versions(now.date())
    # A replacement that takes the newest version Apple offers (the model list names identifiers).
    replace_by = ""
    if not offered and newest:
        models = sorted(m for r in catalogue.offered(now.date()) if r.version == newest[-1]
                        for m in r.devices if m.startswith("iPad"))
        replace_by = models[-1] if models else ""
    return {"model": model, "offered": offered, "known": catalogue.known_model(model), "replace_by": replace_by}


def _escrowed(config: Config, db: Any) -> set[str] | None:
    """Serials with an escrowed Activation Lock bypass code (rule ios-activation-lock-escrowed);
    None where the site does not escrow codes (no activation_lock.key_file or key variable)."""
    from ipad.activation_lock import escrow_configured, escrowed_serials

    if not escrow_configured(config):
        return None
    return escrowed_serials(db) if hasattr(db, "session") else set()


def collect_ipads(
    config: Config,
    inventory: Inventory,
    db: Any,
    progress: ProgressCallback | None = None,
    sweep: QuerySweep | None = None,
    now: datetime | None = None,
) -> list[DeviceFacts]:
    """Facts for every iPad of the inventory; silent or never-enrolled ones are unreachable.
    `now` is the run's clock: an iPad that answered the sweep was seen then."""
    if not inventory.ipads:
        return []
    sweep = sweep or mdm_ddm_sweep(config, db, inventory, now=now)
    deadline = config.compliance.query_deadline_s
    if progress is not None:
        progress(
            Progress("ipads", 0, len(inventory.ipads), message=f"MDM query sweep, deadline {deadline:g}s")
        )
    swept = {s.serial: s for s in sweep(deadline)}
    catalogue = _catalogue(config, now or datetime.now(UTC))
    escrowed = _escrowed(config, db)
    apps_of = ipad_app_facts(config, db, inventory)
    out = []
    now = now or datetime.now(UTC)
    for serial, ipad in sorted(inventory.ipads.items()):
        common: dict[str, Any] = {
            "device": serial,
            "fleet": "ipads",
            "school": ipad.school,
            "group": ipad.group,
            "name": ipad.name or serial,
        }
        s = swept.get(serial) or SweptIPad(serial, "not_enrolled", reason="not enrolled in the MDM")
        last_seen = (
            s.last_seen if s.last_seen is None or s.last_seen.tzinfo else s.last_seen.replace(tzinfo=UTC)
        )
        if s.status == "answered":
            try:
                facts = ipad_facts(s.answers)
            except (AttributeError, TypeError, KeyError) as e:
                out.append(
                    DeviceFacts(
                        **common,
                        reachable=False,
                        failure="error",
                        last_seen=last_seen,
                        reason=f"answers could not be read: {e.__class__.__name__}",
                    )
                )
                continue
            if escrowed is not None:
                facts["activation_lock"] = {"escrowed": serial in escrowed}
            if apps_of is not None and isinstance(s.answers.get("ManagedApplicationList"), dict):
                app = apps_of(serial, ipad.school, ipad.group, s.answers["ManagedApplicationList"])
                if app is not None:
                    facts["apps"] = app
            if catalogue is not None and facts["device"].get("product"):
                facts["catalogue"] = _catalogue_facts(catalogue, facts["device"]["product"], now)
            out.append(DeviceFacts(**common, facts=facts, last_seen=max(last_seen or now, now)))
        elif s.status == "error":
            out.append(
                DeviceFacts(**common, reachable=False, failure="error", last_seen=last_seen, reason=s.reason)
            )
        else:
            seen = last_seen.strftime("%Y-%m-%d %H:%M UTC") if last_seen else "never"
            reason = s.reason or f"no answer within {deadline:g}s"
            out.append(
                DeviceFacts(
                    **common, reachable=False, last_seen=last_seen, reason=f"{reason}; last seen {seen}"
                )
            )
    if progress is not None:
        progress(Progress("ipads", len(out), len(out), message="sweep done"))
    return out
