"""Checks commands, profiles and device answers against Apple's schema (data/apple-mdm-schema.json).

The JSON is derived from github.com/apple/device-management by tools/derive_apple_schema.py (see
there for the node format). Every check returns a list of one-line problems, empty when valid:
unknown keys, missing required keys, wrong types, values outside a range or value list, and keys
Apple does not support on the platform: "iOS" (the iPads, the default) or "tvOS" (the Apple TVs);
pass platform=None to skip that check. School iPads use device enrolment, so keys that iOS sends
only under User Enrollment are not required.
"""

from __future__ import annotations

import functools
import json
import plistlib
from datetime import datetime
from pathlib import Path
from typing import Any

from core.config import REPO_ROOT
from ipad.errors import SchemaError
from ipad.results import REPORT_ENVELOPE

SCHEMA_FILE = REPO_ROOT / "data" / "apple-mdm-schema.json"
WILDCARD = "ANY"
Node = dict[str, Any]
# The platforms werne manages, and the schema flag that says a key or payload is not on one.
PLATFORM_FLAGS = {"iOS": "ios", "tvOS": "tvos"}


def _off(node: Node, platform: str | None) -> bool:
    """True when the schema says `node` (a key, command or payload variant) is not on `platform`."""
    flag = PLATFORM_FLAGS.get(platform or "")
    return flag is not None and node.get(flag) is False


@functools.lru_cache(maxsize=4)
def load_schema(path: Path = SCHEMA_FILE) -> dict[str, Any]:
    """The derived schema; raises SchemaError if it is missing or not in the expected format."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"Apple schema {path} does not exist (run tools/derive_apple_schema.py)") from None
    except (OSError, ValueError) as e:
        raise SchemaError(f"Apple schema {path} is unreadable: {e.__class__.__name__}") from None
    for key in ("commands", "profiles", "profile_top_level", "profile_common", "defs"):
        if key not in data:
            raise SchemaError(f"Apple schema {path}: missing section {key!r}")
    return data


def _plist_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "data"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "dictionary"
    return type(value).__name__


def _type_ok(expected: str, value: Any) -> bool:
    actual = _plist_type(value)
    if expected == "any":
        return True
    if expected == "real":
        return actual in ("real", "integer")
    return actual == expected


class SchemaValidator:
    """Walks a value against schema nodes, collecting `path: problem` lines."""

    def __init__(self, schema: dict[str, Any], platform: str | None):
        self.defs: dict[str, list[Node]] = schema["defs"]
        self.platform = platform
        self.ios_only = platform == "iOS"
        self.errors: list[str] = []

    def _sub(self, node: Node) -> list[Node] | None:
        if "ref" in node:
            return self.defs.get(node["ref"])
        return node.get("sub")

    def value(self, value: Any, node: Node, path: str) -> None:
        if "any_of" in node:
            self.one_of(value, node["any_of"], path)
            return
        expected = node.get("type", "any")
        if not _type_ok(expected, value):
            self.errors.append(f"{path}: expected {expected}, got {_plist_type(value)}")
            return
        values = node.get("values")
        if values is not None and expected not in ("array", "dictionary"):
            if not any(value == v and _plist_type(value) == _plist_type(v) or
                       (expected == "real" and value == v) for v in values):
                shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
                self.errors.append(f"{path}: value {value!r} not allowed (allowed: {shown})")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "min" in node and value < node["min"]:
                self.errors.append(f"{path}: value {value} below minimum {node['min']}")
            if "max" in node and value > node["max"]:
                self.errors.append(f"{path}: value {value} above maximum {node['max']}")
        sub = self._sub(node)
        if expected == "dictionary" and sub:
            self.dictionary(value, sub, path)
        elif expected == "array":
            for i, item in enumerate(value):
                if values is not None and item not in values:
                    self.errors.append(f"{path}[{i}]: value {item!r} not allowed")
                if sub:
                    self.one_of(item, sub, f"{path}[{i}]")
        elif expected == "string" and sub:
            # A string whose subkeys name its allowed values (DeviceInformation's query names).
            names = {n["key"] for n in sub}
            if WILDCARD not in names and value not in names:
                self.errors.append(f"{path}: value {value!r} is not a known name")
            elif any(n["key"] == value and _off(n, self.platform) for n in sub):
                self.errors.append(f"{path}: {value!r} is not supported on {self.platform}")

    def one_of(self, item: Any, alternatives: list[Node], path: str) -> None:
        """The value must match one of the nodes (array elements: Settings has one per Item kind)."""
        if len(alternatives) == 1:
            self.value(item, alternatives[0], path)
            return
        best: list[str] | None = None
        for alt in alternatives:
            trial = SchemaValidator.__new__(SchemaValidator)
            trial.defs, trial.platform, trial.ios_only, trial.errors = self.defs, self.platform, self.ios_only, []
            trial.value(item, alt, path)
            if not trial.errors:
                return
            if best is None or len(trial.errors) < len(best):
                best = trial.errors
        self.errors.extend(best or [])

    def dictionary(self, value: dict[str, Any], keys: list[Node], path: str,
                   ignore: frozenset[str] = frozenset()) -> None:
        by_name = {n["key"]: n for n in keys}
        # Apple names a wildcard key "ANY" or "ANY <what>" (ManagedApplicationList: "ANY app
        # identifier"); the value under a described wildcard is checked against its node.
        wild = next((n for k, n in by_name.items() if _is_wildcard(k)), None)
        prefix = f"{path}." if path else ""
        for name, item in value.items():
            if name in ignore:
                continue
            node = by_name.get(name)
            if node is None:
                if wild is None:
                    self.errors.append(f"{prefix}{name}: unknown key")
                elif wild["key"] != WILDCARD:
                    self.value(item, wild, f"{prefix}{name}")
                continue
            if _off(node, self.platform):
                self.errors.append(f"{prefix}{name}: not supported on {self.platform}")
                continue
            self.value(item, node, f"{prefix}{name}")
        for node in keys:
            if (node.get("req") and not _is_wildcard(node["key"]) and node["key"] not in value
                    and not _off(node, self.platform) and not (self.ios_only and node.get("ue"))):
                self.errors.append(f"{prefix}{node['key']}: missing required key")


def _is_wildcard(key: str) -> bool:
    return key == WILDCARD or key.startswith(WILDCARD + " ")


def _as_dict(raw: bytes | dict[str, Any], what: str) -> tuple[dict[str, Any] | None, list[str]]:
    if isinstance(raw, dict):
        return raw, []
    try:
        data = plistlib.loads(bytes(raw))
    except Exception as e:  # noqa: BLE001 - any parser failure means "not a plist"
        return None, [f"{what}: not a valid plist ({e.__class__.__name__})"]
    if not isinstance(data, dict):
        return None, [f"{what}: the plist is a {_plist_type(data)}, not a dictionary"]
    return data, []


def validate_command(command: bytes | dict[str, Any], platform: str | None = "iOS",
                     schema: dict[str, Any] | None = None) -> list[str]:
    """Problems of a command plist {CommandUUID, Command: {RequestType, ...}}; empty when valid."""
    schema = schema or load_schema()
    data, errors = _as_dict(command, "command")
    if data is None:
        return errors
    for key in data:
        if key not in ("CommandUUID", "Command"):
            errors.append(f"{key}: unknown key")
    if not isinstance(data.get("CommandUUID"), str) or not data.get("CommandUUID"):
        errors.append("CommandUUID: missing or not a string")
    body = data.get("Command")
    if not isinstance(body, dict):
        return [*errors, "Command: missing or not a dictionary"]
    request_type = body.get("RequestType")
    entry = schema["commands"].get(request_type) if isinstance(request_type, str) else None
    if entry is None:
        return [*errors, f"Command.RequestType: unknown request type {request_type!r}"]
    if _off(entry, platform):
        errors.append(f"Command.RequestType: {request_type} is not supported on {platform}")
    v = SchemaValidator(schema, platform)
    v.dictionary(body, entry["request"], "Command", ignore=frozenset({"RequestType"}))
    errors += v.errors
    embedded = body.get("Payload")
    if request_type == "InstallProfile" and isinstance(embedded, bytes) and embedded.lstrip()[:6] in (
            b"<?xml ", b"bplist"):
        # An unsigned profile can be checked too; a CMS-signed one was checked before signing.
        errors += [f"Command.Payload: {e}" for e in validate_profile(embedded, platform, schema)]
    return errors


def validate_checkin(message: bytes | dict[str, Any], platform: str | None = "iOS",
                     schema: dict[str, Any] | None = None) -> list[str]:
    """Problems of a check-in message (Authenticate, TokenUpdate, ...), e.g. from the iPad simulator."""
    schema = schema or load_schema()
    data, errors = _as_dict(message, "check-in message")
    if data is None:
        return errors
    message_type = data.get("MessageType")
    entry = schema.get("checkin", {}).get(message_type) if isinstance(message_type, str) else None
    if entry is None:
        return [f"MessageType: unknown check-in message type {message_type!r}"]
    v = SchemaValidator(schema, platform)
    v.dictionary(data, entry["keys"], "")
    return v.errors


def validate_profile(profile: bytes | dict[str, Any], platform: str | None = "iOS",
                     schema: dict[str, Any] | None = None) -> list[str]:
    """Problems of a .mobileconfig: the top level and every payload; empty when valid."""
    schema = schema or load_schema()
    data, errors = _as_dict(profile, "profile")
    if data is None:
        return errors
    v = SchemaValidator(schema, platform)
    v.dictionary(data, schema["profile_top_level"], "")
    errors += v.errors
    content = data.get("PayloadContent")
    if not isinstance(content, list):
        return errors
    for i, payload in enumerate(content):
        if isinstance(payload, dict):
            errors += validate_payload(payload, f"PayloadContent[{i}]", platform, schema)
    return errors


def validate_payload(payload: dict[str, Any], path: str = "payload", platform: str | None = "iOS",
                     schema: dict[str, Any] | None = None) -> list[str]:
    """Problems of one payload dictionary, checked against every schema file for its PayloadType.

    Several files may define one PayloadType. Some are alternatives (com.apple.extensiblesso: one
    per SSO type), some are parts of one domain (com.apple.MCX: FileVault, energy saver, ...). A
    payload is valid if it matches one file, or the union of the files: every key known to one of
    them and valid against one of its definitions, with the keys that all files using the
    payload's keys require.
    """
    schema = schema or load_schema()
    payload_type = payload.get("PayloadType")
    variants = schema["profiles"].get(payload_type) if isinstance(payload_type, str) else None
    if not variants:
        return [f"{path}.PayloadType: unknown payload type {payload_type!r}"]
    label = f"{path} ({payload_type})"
    common = schema["profile_common"]
    candidates: list[list[str]] = []
    for variant in variants:
        candidates.append(_check_payload(payload, variant["keys"], common, not _off(variant, platform),
                                         label, platform, schema))
        if not candidates[-1]:
            return []
    if len(variants) > 1:
        union = _union_keys(payload, variants, common)
        on = any(not _off(v, platform) for v in variants)
        candidates.append(_check_payload(payload, union, common, on, label, platform, schema))
        if not candidates[-1]:
            return []
    return min(candidates, key=len)


def _check_payload(payload: dict[str, Any], keys: list[Node], common: list[Node], on_platform: bool, label: str,
                   platform: str | None, schema: dict[str, Any]) -> list[str]:
    # Payload files may restate common keys (PayloadIdentifier, ...); theirs take precedence.
    own = {n["key"] for n in keys}
    v = SchemaValidator(schema, platform)
    if platform is not None and not on_platform:
        v.errors.append(f"{label}: payload type is not supported on {platform}")
    v.dictionary(payload, [*keys, *(n for n in common if n["key"] not in own)], label)
    return v.errors


def _union_keys(payload: dict[str, Any], variants: list[dict[str, Any]], common: list[Node]) -> list[Node]:
    common_names = {n["key"] for n in common}
    specific = set(payload) - common_names
    used = [v for v in variants if specific & {n["key"] for n in v["keys"]}] or variants
    required = set.intersection(*({n["key"] for n in v["keys"] if n.get("req")} for v in used))
    merged: dict[str, list[Node]] = {}
    for variant in variants:
        for node in variant["keys"]:
            plain = {k: val for k, val in node.items() if k != "req"}
            alternatives = merged.setdefault(node["key"], [])
            if plain not in alternatives:
                alternatives.append(plain)
    out: list[Node] = []
    for name, alternatives in merged.items():
        node = alternatives[0] if len(alternatives) == 1 else {"key": name, "any_of": alternatives}
        out.append({**node, "req": True} if name in required else node)
    return out


def validate_response(request_type: str, report: dict[str, Any], platform: str | None = "iOS",
                      schema: dict[str, Any] | None = None) -> list[str]:
    """Problems of a device's answer to `request_type` (its response keys); envelope keys are skipped."""
    schema = schema or load_schema()
    entry = schema["commands"].get(request_type)
    if entry is None:
        return [f"unknown request type {request_type!r}"]
    v = SchemaValidator(schema, platform)
    v.dictionary(report, entry["response"], "", ignore=REPORT_ENVELOPE)
    # A report with Status Error or NotNow carries no response keys; required-ness applies to answers.
    if report.get("Status") != "Acknowledged":
        v.errors = [e for e in v.errors if not e.endswith("missing required key")]
    return v.errors


def response_keys(request_type: str, schema: dict[str, Any] | None = None) -> list[Node]:
    """Apple's response key nodes for a command (key, type, req, sub ...), for the iPad simulator."""
    schema = schema or load_schema()
    entry = schema["commands"].get(request_type)
    if entry is None:
        raise SchemaError(f"unknown request type {request_type!r}")
    keys: list[Node] = entry["response"]
    return keys


def resolve(node: Node, schema: dict[str, Any] | None = None) -> list[Node] | None:
    """The subkeys of a node, following a recursive reference ("ref") into the defs."""
    schema = schema or load_schema()
    sub: list[Node] | None = schema["defs"][node["ref"]] if "ref" in node else node.get("sub")
    return sub
