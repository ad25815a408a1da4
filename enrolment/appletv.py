"""Enrolling the classroom Apple TVs through Automated Device Enrolment, like the iPads: IT assigns
each school's Apple TVs (appletvs.csv) the school's tvOS DEP profile through NanoDEP; in Setup
Assistant they then ask werne's enrolment endpoint (enrolment.ade) for the same signed enrolment
profile, get their identity from the SCEP server and talk to NanoMDM. There are no requests: the
Apple TVs are in the inventory, which IT keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core import audit
from core.config import Config
from core.db import Database
from core.findings import Findings
from core.inventory import Inventory
from enrolment import dep
from enrolment.requests import ensure_dep_profile
from mdm_client.factory import nanodep_client


@dataclass
class AppleTVAssignment(Findings):
    """Per school: the tvOS DEP profile and Apple's answer per Apple TV serial."""

    profiles: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v == "SUCCESS" for v in self.outcomes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"profiles": self.profiles, "outcomes": self.outcomes, "ok": self.ok}


def assign_appletvs(db: Database, cfg: Config, inventory: Inventory, school: str | None, actor: str,
                    client: dep.NanoDEPClient | None = None, sleep: Callable[[float], None] | None = None
                    ) -> AppleTVAssignment:
    """Assign the Apple TVs (of one school, or all) their school's tvOS DEP profile; audited."""
    tvs = inventory.appletvs_of_school(school)
    client = client or nanodep_client(cfg)
    result = AppleTVAssignment()
    kwargs: dict[str, Any] = {"max_attempts": cfg.dep.max_assign_attempts, "max_wait_s": cfg.dep.max_retry_wait_s}
    if sleep is not None:
        kwargs["sleep"] = sleep
    for sc in sorted({t.school for t in tvs}):
        uuid = ensure_dep_profile(db, client, cfg, inventory, sc, actor, platform="tvOS")
        result.profiles[sc] = uuid
        assigned = dep.assign_with_retries(client, uuid, sorted(t.serial for t in tvs if t.school == sc), **kwargs)
        result.outcomes.update({s: o.status for s, o in assigned.outcomes.items()})
        audit.record(db, "dep.assign_profile", f"school:{sc}",
                     {"profile_uuid": uuid, "kind": "appletv",
                      "outcomes": {s: o.status for s, o in assigned.outcomes.items()}}, actor=actor)
    return result
