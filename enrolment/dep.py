"""The DEP use cases: the city's DEP enrolment profile, assigning it to serials, and the status check.

The calls go through the NanoDEP client (mdm_client.nanodep, made by mdm_client.factory).
Per-serial outcomes of an assignment are SUCCESS, NOT_ACCESSIBLE, FAILED or THROTTLED; THROTTLED
serials are retried after Apple's `retry_after_seconds`, bounded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import REPO_ROOT, Config
from core.inventory import School
from core.yamlio import YAMLInputError, load_file
from enrolment.errors import DEPProfileError, DEPUnavailable
from mdm_client.factory import nanodep_client
from mdm_client.nanodep import NanoDEPClient

# NanoDEPClient is part of this module's interface (tests and enrolment.requests use dep.NanoDEPClient).
__all__ = ["NanoDEPClient", "assign_with_retries", "dep_status", "load_profile_template"]

DEFAULT_PROFILE_FILE = Path(__file__).resolve().parent / "dep_profile.yaml"
# The Apple TVs' DEP profile (tvOS Setup Assistant panes); same endpoint, same school fields.
TVOS_PROFILE_FILE = Path(__file__).resolve().parent / "dep_profile_tvos.yaml"
SKIP_KEYS_FILE = REPO_ROOT / "data" / "dep-skip-keys.json"
DEP_STATUSES = ("SUCCESS", "NOT_ACCESSIBLE", "FAILED", "THROTTLED")

# Keys of Apple's profile JSON (godep ProfileJson) that the data file may set.
PROFILE_KEYS = {
    "profile_name": str,
    "url": str,
    "is_supervised": bool,
    "is_mandatory": bool,
    "is_mdm_removable": bool,
    "is_multi_user": bool,
    "await_device_configured": bool,
    "auto_advance_setup": bool,
    "allow_pairing": bool,
    "skip_setup_items": list,
    "department": str,
    "support_phone_number": str,
    "support_email_address": str,
    "language": str,
    "region": str,
    "org_magic": str,
    "anchor_certs": list,
    "supervising_host_certs": list,
    "configuration_web_url": str,
}
REQUIRED_PROFILE_KEYS = ("profile_name", "url", "is_mdm_removable")


def ios_skip_keys(platform: str = "iOS") -> set[str]:
    """Skip keys that iOS/iPadOS (or tvOS) knows, from the derived Apple schema."""
    try:
        data = json.loads(SKIP_KEYS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DEPProfileError(f"{SKIP_KEYS_FILE}: cannot read the derived skip keys: {e.__class__.__name__}") from None
    return {k for k, v in data["keys"].items() if v.get(platform, {}).get("introduced", "n/a") != "n/a"}


def load_profile_template(path: Path | None = None, platform: str = "iOS") -> dict[str, Any]:
    """Read and validate the DEP profile data file; raises DEPProfileError with the first problem."""
    path = path or DEFAULT_PROFILE_FILE
    try:
        data = load_file(path)
    except YAMLInputError as e:
        raise DEPProfileError(str(e)) from None
    if not isinstance(data, dict):
        raise DEPProfileError(f"{path}: must be a mapping of profile keys")
    for key, value in data.items():
        if key not in PROFILE_KEYS:
            raise DEPProfileError(f"{path}: unknown profile key '{key}'")
        if not isinstance(value, PROFILE_KEYS[key]):
            raise DEPProfileError(f"{path}: {key}: must be a {PROFILE_KEYS[key].__name__}")
    for key in REQUIRED_PROFILE_KEYS:
        if key not in data:
            raise DEPProfileError(f"{path}: missing required key '{key}'")
    if data.get("is_mdm_removable") is False and data.get("is_supervised") is not True:
        raise DEPProfileError(f"{path}: is_mdm_removable can only be false when is_supervised is true")
    known = ios_skip_keys(platform)
    unknown = [k for k in data.get("skip_setup_items", []) if k not in known]
    if unknown:
        what = "tvOS" if platform == "tvOS" else "iPadOS"
        raise DEPProfileError(
            f"{path}: skip_setup_items: unknown skip key(s) for {what}: {', '.join(map(str, unknown))}"
        )
    return data


def build_profile(template: dict[str, Any], school: School, enrol_url: str = "") -> dict[str, Any]:
    """The profile JSON for one school: the template plus its department and support contact."""
    body = dict(template)
    if enrol_url:
        body["url"] = enrol_url
    body["department"] = school.department or school.name
    if school.support_phone:
        body["support_phone_number"] = school.support_phone
    if school.support_email:
        body["support_email_address"] = school.support_email
    return body


def profile_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class SerialOutcome:
    """The DEP answer for one serial after bounded retries."""

    serial: str
    status: str
    retry_after_seconds: int | None = None

    @property
    def reason(self) -> str | None:
        return {
            "SUCCESS": None,
            "NOT_ACCESSIBLE": "NOT_ACCESSIBLE: this serial is not assigned to the city's MDM server in "
            "Apple School Manager",
            "FAILED": "FAILED: Apple could not assign the enrolment profile",
            "THROTTLED": f"THROTTLED: Apple asks to retry after {self.retry_after_seconds or '?'} s; "
            "approve again later",
        }.get(self.status, f"unexpected DEP status {self.status}")


@dataclass
class AssignResult:
    """Per-serial outcomes of assigning a profile, and how many calls that took."""

    profile_uuid: str
    outcomes: dict[str, SerialOutcome] = field(default_factory=dict)
    calls: int = 0


def assign_with_retries(
    client: NanoDEPClient,
    profile_uuid: str,
    serials: list[str],
    max_attempts: int = 3,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> AssignResult:
    """Assign serials; retry only THROTTLED ones after `retry_after_seconds` (capped at max_wait_s),
    at most `max_attempts` calls. Serials still THROTTLED at the end stay THROTTLED."""
    result = AssignResult(profile_uuid)
    todo = list(serials)
    for attempt in range(max_attempts):
        try:
            answer = client.assign_profile(profile_uuid, todo)
        except DEPUnavailable:
            if attempt == 0:
                raise  # nothing was assigned: the caller stores nothing
            # Earlier calls did assign serials at Apple: keep their outcomes; the still
            # THROTTLED ones stay THROTTLED and the next approval retries them.
            break
        result.calls += 1
        devices = answer.get("devices") or {}
        retry_after = answer.get("retry_after_seconds")
        retry_after = (
            int(retry_after) if isinstance(retry_after, int | float | str) and str(retry_after).isdigit() else None
        )
        throttled = []
        for s in todo:
            status = str(devices.get(s, "FAILED"))
            if status not in DEP_STATUSES:
                status = "FAILED"
            result.outcomes[s] = SerialOutcome(s, status, retry_after if status == "THROTTLED" else None)
            if status == "THROTTLED":
                throttled.append(s)
        if not throttled or attempt == max_attempts - 1:
            break
        wait = retry_after if retry_after is not None else 1
        if wait > max_wait_s:
            break  # Apple asks for longer than we may block; leave them THROTTLED for a later run
        sleep(float(wait))
        todo = throttled
    return result


@dataclass
class DEPStatus:
    """What `werne enrol dep-status` shows: NanoDEP's version and the DEP account behind the name."""

    nanodep_url: str
    dep_name: str
    nanodep_version: str
    server_name: str
    org_name: str
    admin_id: str


def dep_status(cfg: Config, client: NanoDEPClient | None = None) -> DEPStatus:
    """Check that NanoDEP answers and that its DEP name reaches Apple (tokens valid, terms signed)."""
    client = client or nanodep_client(cfg)
    version = client.version()
    account = client.account()
    return DEPStatus(
        client.url,
        client.name,
        version,
        str(account.get("server_name", "")),
        str(account.get("org_name", "")),
        str(account.get("admin_id") or account.get("facilitator_id") or ""),
    )
