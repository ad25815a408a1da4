"""Declarations (declarative device management) built from the data files in declarations/, like profiles.

A data file names one declaration: its Type and its Payload keys, taken from literal `keys`, from
the mSCP rules of a baseline (`mscp`: the passcode policy, mapped from the profile keys of
com.apple.mobiledevice.passwordpolicy to the declaration's), or from `status_items` (a status
subscription). declarations/groups.yaml maps each iPad group to its declarations; each school's
group is one KMFDDM set (`werne-<school>-<group>`). Every built declaration is checked against
Apple's declarative schema (ipad.payloads.declaration_schema); bad data is one DeclarationError line.

The ServerToken is a digest of the content, so equal inputs give equal JSON (KMFDDM replaces it
with its own on PUT; the device only compares tokens).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.config import REPO_ROOT
from core.inventory import SCHOOL_ID_MAX
from ipad.errors import DeclarationError, ProfileError
from ipad.payloads.data_files import load_model, load_named_spec
from ipad.payloads.declaration_schema import validate_declaration
from ipad.payloads.profiles import MSCPSource, mscp_payload_keys

DECLARATIONS_DIR = REPO_ROOT / "declarations"
GROUPS_FILE_NAME = "groups.yaml"
ENFORCEMENT = "softwareupdate-enforcement"

# Apple's limit on a declaration's Identifier, in octets.
IDENTIFIER_MAX = 64
# An iPadOS version werne enforces: Apple's major.minor[.patch], each part at most two digits.
OS_VERSION_RE = re.compile(r"^[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,2})?$")
OS_VERSION_MAX = len("00.00.00")
# The enforcement declaration is <prefix>.update.<school>.<version>. Its longest form (the longest
# school id the inventory takes, the longest version) must fit IDENTIFIER_MAX: what is left is the
# budget of groups.yaml's identifier_prefix, which the groups file is checked against. This ties the
# inventory's limit (core.inventory.SCHOOL_ID_MAX) and Apple's together.
UPDATE_ID_NAME = "update"
PREFIX_MAX = IDENTIFIER_MAX - len(f".{UPDATE_ID_NAME}.") - SCHOOL_ID_MAX - len(".") - OS_VERSION_MAX
# The passcode profile's keys (com.apple.mobiledevice.passwordpolicy, as mSCP names them) and the
# passcode.settings declaration key that means the same; a value is mapped as it is, except
# allowSimple, whose meaning is inverted (no simple passcode = a complex one).
PASSWORDPOLICY_TO_DECLARATION = {
    "forcePIN": "RequirePasscode",
    "requireAlphanumeric": "RequireAlphanumericPasscode",
    "allowSimple": "RequireComplexPasscode",
    "minLength": "MinimumLength",
    "minComplexChars": "MinimumComplexCharacters",
    "maxFailedAttempts": "MaximumFailedAttempts",
    "maxGracePeriod": "MaximumGracePeriodInMinutes",
    "maxInactivity": "MaximumInactivityInMinutes",
    "maxPINAgeInDays": "MaximumPasscodeAgeInDays",
    "pinHistory": "PasscodeReuseLimit",
}
PASSWORDPOLICY = "com.apple.mobiledevice.passwordpolicy"
PASSCODE_SETTINGS = "com.apple.configuration.passcode.settings"




# --- the data file format -------------------------------------------------------------------------

class DeclarationSpec(BaseModel):
    """A declaration data file (declarations/<name>.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    keys: dict[str, Any] = Field(default_factory=dict)
    mscp: MSCPSource | None = None
    status_items: list[str] = Field(default_factory=list)


class DeclarationGroups(BaseModel):
    """declarations/groups.yaml: identifier and set prefixes, group -> declaration names."""

    model_config = ConfigDict(extra="forbid")

    identifier_prefix: str = Field(pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", max_length=PREFIX_MAX)
    set_prefix: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,15}$")
    groups: dict[str, list[str]]


@dataclass(frozen=True)
class Declaration:
    """A built declaration: what KMFDDM stores and the device fetches."""

    name: str
    type: str
    identifier: str
    server_token: str
    payload: dict[str, Any] = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"Type": self.type, "Identifier": self.identifier, "ServerToken": self.server_token,
                "Payload": self.payload}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"


# --- loading ----------------------------------------------------------------------------------

def load_declaration_spec(name: str, directory: Path = DECLARATIONS_DIR) -> DeclarationSpec:
    """Read and validate declarations/<name>.yaml."""
    return load_named_spec(directory, "declaration", name, DeclarationSpec, DeclarationError)


def available_declarations(directory: Path = DECLARATIONS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml") if p.name != GROUPS_FILE_NAME)


def load_declaration_groups(directory: Path = DECLARATIONS_DIR) -> DeclarationGroups:
    """The group -> declarations map of declarations/groups.yaml; every name must be a data file."""
    path = directory / GROUPS_FILE_NAME
    groups = load_model(path, "declaration groups", DeclarationGroups, DeclarationError)
    known = set(available_declarations(directory))
    for group, names in groups.groups.items():
        for n in names:
            if n not in known:
                raise DeclarationError(f"declaration groups: {path}: group {group!r} names unknown declaration {n!r}")
    return groups


# --- building -----------------------------------------------------------------------------------

def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _mscp_passcode(spec: DeclarationSpec) -> dict[str, Any]:
    if spec.type != PASSCODE_SETTINGS:
        raise DeclarationError(f"declaration {spec.name}: mscp values need type {PASSCODE_SETTINGS}")
    assert spec.mscp is not None
    try:
        keys = mscp_payload_keys(spec.mscp.baseline, PASSWORDPOLICY, spec.mscp.exclude)
    except ProfileError as e:
        raise DeclarationError(f"declaration {spec.name}: {e}") from None
    out: dict[str, Any] = {}
    for key, value in keys.items():
        target = PASSWORDPOLICY_TO_DECLARATION.get(key)
        if target is None:
            # A new baseline rule must not go missing silently: map it here or exclude it.
            raise DeclarationError(f"declaration {spec.name}: mSCP key {key!r} has no passcode.settings "
                                   "equivalent in PASSWORDPOLICY_TO_DECLARATION")
        out[target] = (not value) if key == "allowSimple" else value
    return out


def build_declaration(spec: DeclarationSpec, identifier_prefix: str,
                      extra_keys: dict[str, Any] | None = None, suffix: str = "", id_name: str = "") -> Declaration:
    """Build and check one declaration; raises DeclarationError with the first problem.

    Its identifier is <prefix>.<id_name or the spec's name>[.<suffix>], at most IDENTIFIER_MAX octets."""
    payload: dict[str, Any] = {}
    if spec.mscp is not None:
        payload.update(_mscp_passcode(spec))
    if spec.status_items:
        payload["StatusItems"] = [{"Name": n} for n in spec.status_items]
    payload.update(spec.keys)
    payload.update(extra_keys or {})
    if not payload:
        raise DeclarationError(f"declaration {spec.name}: no payload keys")
    identifier = f"{identifier_prefix}.{id_name or spec.name}" + (f".{suffix}" if suffix else "")
    if len(identifier.encode()) > IDENTIFIER_MAX:
        raise DeclarationError(f"declaration {spec.name}: identifier {identifier} is longer than Apple's "
                               f"{IDENTIFIER_MAX} octets")
    token = _digest({"Type": spec.type, "Identifier": identifier, "Payload": payload})[:16]
    decl = Declaration(spec.name, spec.type, identifier, token, payload)
    problems = validate_declaration(decl.to_dict())
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DeclarationError(f"declaration {spec.name}: {problems[0]}{more}")
    return decl


def set_name(groups: DeclarationGroups, school: str, group: str) -> str:
    """The KMFDDM set of one school's group, e.g. werne-gs-demo-pupil."""
    return f"{groups.set_prefix}-{school}-{group}"


def declarations_for_group(group: str, directory: Path = DECLARATIONS_DIR) -> list[Declaration]:
    """The declarations an iPad of `group` gets."""
    groups = load_declaration_groups(directory)
    if group not in groups.groups:
        known = ", ".join(sorted(groups.groups))
        raise DeclarationError(f"unknown iPad group {group!r} (known: {known})")
    return [build_declaration(load_declaration_spec(n, directory), groups.identifier_prefix)
            for n in groups.groups[group]]


def group_sets(schools_groups: list[tuple[str, str]],
               directory: Path = DECLARATIONS_DIR) -> dict[str, list[Declaration]]:
    """KMFDDM set name -> its declarations, for each (school, group) given."""
    groups = load_declaration_groups(directory)
    built: dict[str, list[Declaration]] = {}
    out: dict[str, list[Declaration]] = {}
    for school, group in sorted(set(schools_groups)):
        if group not in built:
            built[group] = declarations_for_group(group, directory)
        out[set_name(groups, school, group)] = built[group]
    return out


# --- software update enforcement ----------------------------------------------------------------

def update_set_name(groups: DeclarationGroups, school: str, version: str) -> str:
    """The KMFDDM set of one school's iPads that are to run `version`, e.g. werne-gs-demo-update-18.3."""
    return f"{groups.set_prefix}-{school}-update-{version}"


def build_update_declaration(school: str, version: str, local_deadline: datetime,
                             directory: Path = DECLARATIONS_DIR) -> Declaration:
    """The enforcement declaration for one school and target version; the deadline is local time at
    the school (Apple's TargetLocalDateTime has no offset: the device reads it in its own zone).

    TargetBuildVersion is left out on purpose: Apple ships one version as different builds for
    different models, so one build would be wrong for part of a school.
    """
    if not OS_VERSION_RE.match(version):
        raise DeclarationError(f"iPadOS version {version!r} is not major.minor[.patch]")
    groups = load_declaration_groups(directory)
    spec = load_declaration_spec(ENFORCEMENT, directory)
    keys = {"TargetOSVersion": version,
            "TargetLocalDateTime": local_deadline.replace(tzinfo=None, microsecond=0).isoformat()}
    return build_declaration(spec, groups.identifier_prefix, keys, suffix=f"{school}.{version}", id_name=UPDATE_ID_NAME)


# --- activations ----------------------------------------------------------------------------------

ACTIVATION = "com.apple.activation.simple"


def build_activation(groups: DeclarationGroups, set_name_: str, configurations: list[Declaration]) -> Declaration:
    """The activation of one KMFDDM set: a device activates only the configurations an activation
    names (StandardConfigurations), so every set carries one that names all of its configurations.

    Its identifier is derived from the set's name (a digest when that would pass Apple's 64 octets).
    """
    identifier = f"{groups.identifier_prefix}.activation.{set_name_}"
    if len(identifier.encode()) > IDENTIFIER_MAX:
        identifier = f"{groups.identifier_prefix}.activation.{_digest(set_name_)[:24]}"
    payload = {"StandardConfigurations": sorted(d.identifier for d in configurations)}
    token = _digest({"Type": ACTIVATION, "Identifier": identifier, "Payload": payload})[:16]
    decl = Declaration("activation", ACTIVATION, identifier, token, payload)
    problems = validate_declaration(decl.to_dict())
    if problems:
        raise DeclarationError(f"activation of {set_name_}: {problems[0]}")
    return decl
