"""Collect the iPads' facts: an MDM query sweep (DeviceInformation, SecurityInfo, ProfileList) with a
deadline.

The sweep enqueues the three queries for every enrolled iPad through NanoMDM, records them in the
MDM registry, and waits until every device answered or the deadline (compliance.query_deadline_s)
passed; the webhook receiver stores the answers. Devices silent by then are `unreachable`, with
their last-seen time; the in-contact rule still evaluates them (BSI Mindeststandard MDM.2.8.03).
iPads in the inventory that never enrolled are unreachable and "never seen".

The iPad side (ipad.*, mdm_client.*) is imported inside the functions that use it: a laptops-only
run never loads the MDM stack, and importing ipad.profiles reads profiles/groups.yaml.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from compliance.collect_laptops import Progress, ProgressCallback
from compliance.errors import CollectionError
from compliance.facts import DeviceFacts
from core.config import Config
from core.errors import InputError, WerneError
from core.inventory import Inventory
from core.timing import StepTimes, timed

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


def stored_answers(dev: Any) -> dict[str, Any]:
    """The MDM registry's stored answers of one device by request type, each `{"value": answer, ...}`.
    ipad.store sets them on the device rows it lists, as `.facts` (not a column of the row); this is
    the one place compliance reads them."""
    answers: dict[str, Any] = dev.facts or {}
    return answers


def _swept_ipad(report: Any, dev: Any, needed: tuple[str, ...], answered: tuple[str, ...]) -> SweptIPad:
    """One iPad's sweep outcome from its command report (ipad.dispatch.DeviceReport) and its registry row:
    answered when every `needed` query was acknowledged (with the stored answers of `answered`, and
    the app list where the iPad gave it), error when one failed, else unreachable."""
    last_seen = dev.last_seen_at if dev is not None else None
    if report.enrollment_id is None:
        return SweptIPad(report.serial, "not_enrolled", reason="not enrolled in the MDM", last_seen=last_seen)
    by_type = {o.request_type: o for o in report.outcomes}
    outcomes = [by_type.get(t) for t in needed]
    failed = [o for o in outcomes if o is not None and o.status in ("Error", "CommandFormatError")]
    if dev is not None and all(o is not None and o.status == "Acknowledged" for o in outcomes):
        stored = stored_answers(dev)
        answers = {t: (stored.get(t) or {}).get("value") for t in answered}
        apps = by_type.get("ManagedApplicationList")
        if apps is not None and apps.status == "Acknowledged":  # optional: only for the app rules
            answers["ManagedApplicationList"] = (stored.get("ManagedApplicationList") or {}).get("value")
        if "CertificateList" in stored:  # optional: only for the identity rule
            answers["CertificateList"] = stored["CertificateList"].get("value")
        return SweptIPad(report.serial, "answered", answers, last_seen=last_seen)
    if failed:
        bad = [f"{o.request_type}: {o.status} {o.detail}".strip() for o in failed]
        return SweptIPad(report.serial, "error", reason="; ".join(bad), last_seen=last_seen)
    return SweptIPad(report.serial, "unreachable", last_seen=last_seen)


def mdm_query_sweep(config: Config, db: Any, inventory: Inventory) -> QuerySweep:
    """The real sweep: `ipad.actions.queries.query` (DeviceInformation, SecurityInfo, ProfileList,
    CertificateList through NanoMDM, answers stored by the webhook receiver), then the registry's
    newest facts of every device that answered."""

    from ipad.actions.queries import query
    from ipad.dispatch import IPadContext

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
        return [_swept_ipad(d, devices.get(d.serial), QUERY_TYPES, QUERY_TYPES) for d in report.devices]

    return sweep


def _read_ddm_status(config: Config, db: Any, ddm_client: Any, enrolled: dict[str, str],
                     times: StepTimes | None = None) -> dict[str, Any]:
    """enrollment id -> its declarative status from KMFDDM; empty where the nightly does not read it
    (not set up, switched off) or KMFDDM could not be read (then every iPad gets the full query set).
    Only the reports since the last night's read are read (ipad.ddm.status_store keeps what it merged)."""
    from ipad.ddm.status import read_ddm_status
    from ipad.ddm.status_store import load_known, save_known
    from mdm_client.errors import MDMError
    from mdm_client.factory import kmfddm_client

    ddm_set_up = bool(config.ddm.api_key_file or os.environ.get(config.ddm.api_key_env))
    if not (config.ddm.status_in_nightly and enrolled and (ddm_set_up or ddm_client is not None)):
        return {}
    keeps = hasattr(db, "session")  # a real state database (tests pass stand-ins without one)
    try:
        known = load_known(db, enrolled) if keeps else {}
        status: dict[str, Any] = read_ddm_status(ddm_client or kmfddm_client(config), enrolled, times=times,
                                                 known=known)
    except (MDMError, InputError) as e:
        logging.getLogger("werne.compliance").warning("declarative status not read: %s", e)
        return {}
    if keeps:
        save_known(db, status)
    return status


def _ddm_serials(status: dict[str, Any], devices: dict[str, Any], enrolled: dict[str, str],
                 at: datetime, max_age_s: float, static_queries: tuple[str, ...]) -> set[str]:
    """The iPads whose declarative status is fresh and complete, and whose answers to the queries DDM
    does not replace (`static_queries`) are stored: they are asked only the other queries."""
    out: set[str] = set()
    for eid, st in status.items():
        dev = devices.get(enrolled[eid])
        static_known = dev is not None and all(k in stored_answers(dev) for k in static_queries)
        fresh = st.reported_at is not None and (at - st.reported_at).total_seconds() <= max_age_s
        if fresh and static_known and st.has("device.operating-system.version", "passcode.is-present",
                                             "passcode.is-compliant"):
            out.add(enrolled[eid])
    return out


def mdm_ddm_sweep(config: Config, db: Any, inventory: Inventory, ddm_client: Any = None,
                  now: datetime | None = None, times: StepTimes | None = None) -> QuerySweep:
    """The nightly sweep with declarative status: OS version, build and passcode state of the iPads
    that report them through DDM (fresh within ddm.status_max_age_h, read from KMFDDM by
    ipad.ddm.status) come from their status, so they are asked only what DDM does not report
    (ProfileList, Restrictions, CertificateList; ipad.actions.queries). The others get the full query set.
    KMFDDM unreachable or not set up: every iPad gets the full set (the status is an optimisation
    of the evidence, never a reason to have none)."""
    from ipad.actions.queries import ALWAYS, UNLESS_DDM, nightly_query
    from ipad.dispatch import IPadContext

    ctx = IPadContext(config, db, inventory, actor="compliance")
    ctx.client  # noqa: B018 - reads the API key now: a missing one is bad config (exit 2) before any run starts

    def sweep(deadline_s: float) -> list[SweptIPad]:
        with timed(times, "mdm.registry"):
            devices = ctx.registry.devices_by_serial()
        enrolled = {d.enrollment_id: s for s, d in devices.items()
                    if s in inventory.ipads and d.state == "enrolled" and d.enrollment_id}
        status = _read_ddm_status(config, db, ddm_client, enrolled, times)
        ddm_serials = _ddm_serials(status, devices, enrolled, now or datetime.now(UTC),
                                   config.ddm.status_max_age_h * 3600, UNLESS_DDM)
        try:
            # ManagedApplicationList feeds only the app rules, which need apps.locations
            # (ipad_app_facts): a site that manages no apps is not asked for it.
            report = nightly_query(ctx, ddm_serials, deadline_s, times, by_serial=devices,
                                   with_apps=bool(config.apps.locations))
        except InputError:
            raise
        except WerneError as e:
            raise CollectionError(f"MDM query sweep: {e}") from None
        with timed(times, "mdm.registry"):
            devices = ctx.registry.devices_by_serial()
        out = []
        for d in report.devices:
            kinds = ALWAYS if d.serial in ddm_serials else (*UNLESS_DDM, *ALWAYS)
            needed = tuple(t for t in kinds if t != "Restrictions")
            swept = _swept_ipad(d, devices.get(d.serial), needed, (*QUERY_TYPES, "Restrictions"))
            st = status.get(d.enrollment_id) if d.enrollment_id else None
            if swept.status == "answered" and st is not None:
                swept.answers["DDM"] = st.to_facts()
                swept.answers["DDMItems"] = dict(st.items)
            out.append(swept)
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
                           ("build", "device.operating-system.build-version"),
                           ("os_extra_version", "device.operating-system.supplemental.extra-version")):
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
            ),
            "uuids": {str(p["PayloadIdentifier"]): str(p.get("PayloadUUID"))
                      for p in plist if isinstance(p, dict) and p.get("PayloadIdentifier")},
        },
    }


WEBFILTER_PROFILE = "webfilter"


def webfilter_expectations(config: Config) -> dict[str, dict[str, str]]:
    """group -> the web filter profile werne builds for it (identifier, PayloadUUID), for the groups
    whose profile set has the filter (rule ios-webfilter-installed). The filter needs no secret."""
    from ipad.payloads import profiles

    assignment = profiles.load_group_assignment(config)
    spec = profiles.load_profile_spec(WEBFILTER_PROFILE)
    out = {}
    for group, names in assignment.groups.items():
        if WEBFILTER_PROFILE in names:
            p = profiles.build_profile(spec, config, assignment.organization, assignment.identifier_prefix,
                                       profiles.DeviceContext("", group))
            out[group] = {"identifier": p.identifier, "uuid": p.uuid, "group": group}
    return out


def _catalogue(config: Config, now: datetime) -> Any:
    """Apple's catalogue snapshot when one is there and usable (rule ios-model-supported), else None."""
    from ipad.ddm.os_catalogue import load_catalogue
    from ipad.errors import CatalogueError

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


def _scep_issuers(config: Config) -> set[str] | None:
    """The subjects of werne's SCEP CAs (the MDM identity is the one they issued); None where this
    host has no SCEP CA (then an iPad's soonest identity stands for it)."""
    from ipad.errors import SCEPSetupError
    from ipad.golive.scep_ca import trusted_cas

    try:
        return {c.subject.rfc4514_string() for c in trusted_cas(config)}
    except SCEPSetupError:
        return None


def _identity_fact(cert_list: Any, issuers: set[str] | None) -> dict[str, Any] | None:
    """The `identity` fact (rule ios-identity-cert-valid): the MDM identity's expiry and issuer."""
    from ipad.store.facts import pick_identity

    best = pick_identity(cert_list, issuers)
    if best is None and issuers is not None:
        best = pick_identity(cert_list, None)  # an identity from no CA werne knows: judged all the same
    if best is None:
        return None
    return {"not_after": best["not_after"], "issuer": best.get("issuer", ""), "subject": best.get("subject", "")}


def _escrowed(config: Config, db: Any) -> set[str] | None:
    """Serials with an escrowed Activation Lock bypass code (rule ios-activation-lock-escrowed);
    None where the site does not escrow codes (no activation_lock.key_file or key variable)."""
    from ipad.actions.activation_lock import escrow_configured, escrowed_serials

    if not escrow_configured(config):
        return None
    return escrowed_serials(db) if hasattr(db, "session") else set()


def ipad_app_facts(config: Any, db: Any, inventory: Any
                   ) -> Callable[[str, str, str, dict[str, Any]], dict[str, Any] | None] | None:
    """For the iPad collector: (serial, school, group, ManagedApplicationList answer) -> the `apps`
    fact, or None for a school without an Apps and Books location. None where the site manages no
    apps (no apps.locations). A broken app list raises AppsError (exit 2), like a broken baseline."""
    if not config.apps.locations:
        return None
    from ipad.apps.catalogue import load_apps
    from ipad.apps.status import app_facts, install_errors_by_serial

    catalogue = load_apps(config)
    errors = install_errors_by_serial(db) if hasattr(db, "session") else {}

    def facts(serial: str, school: str, group: str, managed: dict[str, Any]) -> dict[str, Any] | None:
        sc = inventory.schools.get(school)
        if sc is None or not sc.apps_location:
            return None
        return app_facts(catalogue, group, managed, errors.get(serial))

    return facts


def collect_ipads(
    config: Config,
    inventory: Inventory,
    db: Any,
    progress: ProgressCallback | None = None,
    sweep: QuerySweep | None = None,
    now: datetime | None = None,
    times: StepTimes | None = None,
) -> list[DeviceFacts]:
    """Facts for every iPad of the inventory; silent or never-enrolled ones are unreachable.
    `now` is the run's clock: an iPad that answered the sweep was seen then. `times` gets the
    step that builds the facts (the sweep records its own steps)."""
    if not inventory.ipads:
        return []
    sweep = sweep or mdm_ddm_sweep(config, db, inventory, now=now, times=times)
    deadline = config.compliance.query_deadline_s
    if progress is not None:
        progress(
            Progress("ipads", 0, len(inventory.ipads), message=f"MDM query sweep, deadline {deadline:g}s")
        )
    swept = {s.serial: s for s in sweep(deadline)}
    with timed(times, "ipads.facts"):
        out = _ipad_device_facts(config, inventory, db, swept, deadline, now or datetime.now(UTC))
    if progress is not None:
        progress(Progress("ipads", len(out), len(out), message="sweep done"))
    return out


def _ipad_device_facts(config: Config, inventory: Inventory, db: Any, swept: dict[str, SweptIPad],
                       deadline: float, now: datetime) -> list[DeviceFacts]:
    """Each inventory iPad's DeviceFacts from its sweep outcome."""
    catalogue = _catalogue(config, now)
    escrowed = _escrowed(config, db)
    apps_of = ipad_app_facts(config, db, inventory)
    issuers = _scep_issuers(config)
    webfilter = webfilter_expectations(config)
    out = []
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
            if ipad.group in webfilter:
                facts["webfilter"] = webfilter[ipad.group]
            if apps_of is not None and isinstance(s.answers.get("ManagedApplicationList"), dict):
                app = apps_of(serial, ipad.school, ipad.group, s.answers["ManagedApplicationList"])
                if app is not None:
                    facts["apps"] = app
            if catalogue is not None and facts["device"].get("product"):
                facts["catalogue"] = _catalogue_facts(catalogue, facts["device"]["product"], now)
            identity = _identity_fact(s.answers.get("CertificateList"), issuers)
            if identity is not None:
                facts["identity"] = identity
            out.append(DeviceFacts(**common, facts=facts, last_seen=max(last_seen or now, now)))
        elif s.status == "error":
            out.append(
                DeviceFacts(**common, reachable=False, failure="error", last_seen=last_seen, reason=s.reason)
            )
        else:
            seen = f"last seen {last_seen:%Y-%m-%d %H:%M} UTC" if last_seen else "never seen"
            reason = s.reason or f"no answer within {deadline:g}s"
            out.append(
                DeviceFacts(
                    **common, reachable=False, last_seen=last_seen, reason=f"{reason}; {seen}",
                    enrolled=s.status != "not_enrolled",
                )
            )
    return out
