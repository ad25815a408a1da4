"""Waivers: accepted exceptions to a rule for some devices, with a justification and an expiry date.

The file (YAML, `compliance.waivers_file`) holds a list under `waivers:`; each has `rule`, `devices`
(a selector: a device id or glob, `school:ID`, `group:pupil|teacher|shared`, `fleet:laptops|ipads`,
or a list of these), `justification` (required), `approved_by` and `expires` (a date; the waiver
holds through that day, UTC). A waived fail is reported as `waived`, counted apart from pass. After
its expiry the fail comes back, naming the waiver. Only `fail` results are waived: a check that
could not run (error, unreachable) is never hidden.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compliance.errors import WaiverError
from compliance.facts import DeviceFacts
from compliance.results import RuleResult, clip_evidence
from core.files import read_regular_file
from core.yamlio import YAMLInputError, compose, construct, scalar_key

SELECTOR_KINDS = ("school", "group", "fleet")


class Waiver(BaseModel):
    """One accepted exception."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    rule: str
    devices: list[str] = Field(min_length=1)
    justification: str = Field(min_length=10)
    approved_by: str = Field(min_length=2)
    expires: date

    @field_validator("devices", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("devices")
    @classmethod
    def _selectors(cls, v: list[str]) -> list[str]:
        for s in v:
            kind, sep, _ = s.partition(":")
            if sep and kind not in SELECTOR_KINDS:
                raise ValueError(
                    f"unknown selector '{s}' (use a device id or glob, or {', '.join(SELECTOR_KINDS)}:...)"
                )
        return v

    @property
    def name(self) -> str:
        return self.id or f"{self.rule}@{','.join(self.devices)}"

    def selects(self, dev: DeviceFacts) -> bool:
        for s in self.devices:
            kind, sep, value = s.partition(":")
            if not sep:
                if fnmatch.fnmatchcase(dev.device, s) or (dev.name and fnmatch.fnmatchcase(dev.name, s)):
                    return True
            elif (
                (kind == "school" and dev.school == value)
                or (kind == "group" and dev.group == value)
                or (kind == "fleet" and dev.fleet == value)
            ):
                return True
        return False

    def active_on(self, day: date) -> bool:
        return day <= self.expires


class WaiverSet:
    """The loaded waivers, and the digest of the file they came from (empty file: no waivers)."""

    def __init__(self, waivers: list[Waiver], digest: str, source: str = ""):
        self.waivers = waivers
        self.digest = digest
        self.source = source

    def apply(
        self, results: list[RuleResult], devices: dict[str, DeviceFacts], now: datetime
    ) -> list[RuleResult]:
        out = []
        today = now.date()
        by_rule: dict[str, list[Waiver]] = {}
        for w in self.waivers:
            by_rule.setdefault(w.rule, []).append(w)
        for r in results:
            candidates = by_rule.get(r.rule_id)
            if r.status != "fail" or not candidates:
                out.append(r)
                continue
            matching = [w for w in candidates if w.selects(devices[r.device])]
            if not matching:
                out.append(r)
                continue
            active = [w for w in matching if w.active_on(today)]
            w = max(active or matching, key=lambda w: w.expires)
            if active:
                status, note = "waived", f"waived by {w.name} until {w.expires} (approved by {w.approved_by})"
            else:
                status, note = r.status, f"waiver {w.name} expired on {w.expires}"
            out.append(replace(r, status=status, waiver=w.name, evidence=clip_evidence(f"{note}: {r.evidence}")))
        return out


EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def load_waivers(path: Path | None, known_rules: set[str]) -> WaiverSet:
    """Load and validate the waivers file; no file configured means no waivers."""
    if path is None:
        return WaiverSet([], EMPTY_DIGEST)
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        raise WaiverError(f"waivers file {path} does not exist") from None
    except OSError as e:
        raise WaiverError(f"waivers file {path}: cannot read: {e.strerror}") from None
    try:
        root = compose(raw.decode("utf-8-sig"), path)
    except UnicodeDecodeError:
        raise WaiverError(f"{path}: not UTF-8 text") from None
    except YAMLInputError as e:
        raise WaiverError(str(e)) from None
    if root is None:
        return WaiverSet([], hashlib.sha256(raw).hexdigest(), str(path))
    top = {scalar_key(k): v for k, v in root.value} if isinstance(root, yaml.MappingNode) else {}
    node = top.get("waivers")
    if not isinstance(node, yaml.SequenceNode):
        raise WaiverError(f"{path}: expected a top-level 'waivers:' list")
    waivers: list[Waiver] = []
    names: dict[str, int] = {}
    for item in node.value:
        line = item.start_mark.line + 1
        try:
            data = construct(item, path)
        except YAMLInputError as e:
            raise WaiverError(str(e)) from None
        try:
            w = Waiver.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "is required"
            raise WaiverError(f"{path}:{line}: waiver: {loc} {msg}".rstrip()) from None
        if w.rule not in known_rules:
            raise WaiverError(f"{path}:{line}: waiver {w.name}: unknown rule '{w.rule}'")
        if w.name in names:
            raise WaiverError(f"{path}:{line}: duplicate waiver '{w.name}' (first at line {names[w.name]})")
        names[w.name] = line
        waivers.append(w)
    return WaiverSet(waivers, hashlib.sha256(raw).hexdigest(), str(path))
