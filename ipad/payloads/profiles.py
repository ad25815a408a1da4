"""Configuration profiles (.mobileconfig) built from the data files in profiles/, one per profile.

A profile file names its payloads; each payload takes its keys from literal `keys`, from the NIST
mSCP rules of a baseline (`mscp`, values from data/mscp-ios-indigo.json), from the IKEv2 model
(`ikev2`, ipad.payloads.ikev2.IKEv2Profile) and from secrets (`secrets`, e.g. the Wi-Fi password read from
the file named by mdm.wifi_secret_file). UUIDs are uuid5 of the identifier and the content, so the
same inputs always give the same bytes and a changed profile gets a new PayloadUUID.
profiles/groups.yaml (or the inventory's ipad-profiles.yml) maps each iPad group to its profiles.
"""

from __future__ import annotations

import functools
import hashlib
import json
import plistlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.config import REPO_ROOT, Config
from core.errors import SecretError
from core.secrets import Secret, read_secret, warn_if_others_can_read
from core.validation import first_error
from ipad.errors import ProfileError
from ipad.payloads.data_files import load_model, load_named_spec
from ipad.payloads.ikev2 import IKEv2Profile

PROFILES_DIR = REPO_ROOT / "profiles"
MSCP_FILE = REPO_ROOT / "data" / "mscp-ios-indigo.json"
GROUPS_FILE_NAME = "groups.yaml"
INVENTORY_GROUPS_FILE_NAME = "ipad-profiles.yml"
# A web filter list entry: an http(s) URL (Apple matches by prefix).
URL_RE = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?(/[^\s]*)?$")
# A fixed namespace for werne's profile UUIDs (uuid5 of the URL namespace and the project name).
PROFILE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://werne.invalid/mdm/profiles")


# --- the data file format -------------------------------------------------------------------------

class MSCPSource(BaseModel):
    """Take a payload's keys from the rules of an mSCP baseline."""

    model_config = ConfigDict(extra="forbid")

    baseline: str
    # rule id -> why this rule is not applied (a reason is required, so departures are documented)
    exclude: dict[str, str] = Field(default_factory=dict)


class WebFilterLists(BaseModel):
    """One group's web filter: sites always allowed, and sites always denied beside Apple's filter."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list, max_length=500)
    deny: list[str] = Field(default_factory=list, max_length=500)

    @field_validator("allow", "deny")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        bad = [u for u in v if not URL_RE.match(u)]
        if bad:
            raise ValueError(f"not an http(s) URL: {bad[0][:80]!r}")
        return v


class PayloadSpec(BaseModel):
    """One payload of a profile data file."""

    model_config = ConfigDict(extra="forbid")

    type: str
    display_name: str | None = None
    keys: dict[str, Any] = Field(default_factory=dict)
    mscp: MSCPSource | None = None
    ikev2: dict[str, Any] | None = None
    # payload key -> secret name; "wifi" is read from the file named by mdm.wifi_secret_file
    secrets: dict[str, str] = Field(default_factory=dict)
    # com.apple.airplay: an AllowList of the Apple TVs the device may AirPlay to, per iPad group:
    # "room" (the Apple TVs of the iPad's room) or "school" (every Apple TV of its school).
    airplay_allow_list: dict[str, Literal["room", "school"]] | None = None
    # com.apple.webcontent-filter: the automatic filter's lists per iPad group (the device's group
    # picks its lists; without a device, `keys` alone).
    webfilter_by_group: dict[str, WebFilterLists] | None = None


class ProfileSpec(BaseModel):
    """A profile data file (profiles/<name>.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    display_name: str
    description: str = ""
    removal_disallowed: bool = True
    # The platform the profile is for: iPads (iOS) or Apple TVs (tvOS); tests validate against it.
    platform: Literal["iOS", "tvOS"] = "iOS"
    payloads: list[PayloadSpec] = Field(min_length=1)


@dataclass(frozen=True)
class AirPlayDestination:
    """An Apple TV an iPad may AirPlay to: its name and (where known) its AirPlay device id."""

    name: str
    device_id: str = ""


@dataclass(frozen=True)
class DeviceContext:
    """What the device-specific parts of a profile are built from (one iPad or Apple TV)."""

    serial: str
    group: str
    airplay: tuple[AirPlayDestination, ...] = ()
    # The AirPlay destinations of the whole school, for groups allowed to every Apple TV there.
    airplay_school: tuple[AirPlayDestination, ...] = ()


class GroupAssignment(BaseModel):
    """profiles/groups.yaml: organisation, identifier prefix and group -> profile names."""

    model_config = ConfigDict(extra="forbid")

    organization: str
    identifier_prefix: str = Field(pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
    groups: dict[str, list[str]]


# --- the built profile ------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """A built configuration profile: the .mobileconfig dictionary and what identifies it."""

    name: str
    identifier: str
    uuid: str
    display_name: str
    payload_types: tuple[str, ...]
    content: dict[str, Any] = field(repr=False, compare=False)
    content_hash: str = ""

    def to_bytes(self) -> bytes:
        """The unsigned .mobileconfig (XML plist, keys sorted, so equal inputs give equal bytes)."""
        return plistlib.dumps(self.content, fmt=plistlib.FMT_XML, sort_keys=True)


def _hashable(value: Any) -> Any:
    """A JSON-able stand-in of plist values, for hashing."""
    if isinstance(value, dict):
        return {k: _hashable(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_hashable(v) for v in value]
    if isinstance(value, bytes):
        return {"$data": value.hex()}
    if isinstance(value, Secret):
        return {"$secret": _secret_fingerprint(value.reveal())}
    return value


@functools.lru_cache(maxsize=64)
def _secret_fingerprint(value: str) -> str:
    # The fingerprint feeds the PayloadUUID, which devices report back and the database stores.
    # A slow KDF keeps a short Wi-Fi password from being brute-forced out of that UUID.
    return hashlib.pbkdf2_hmac("sha256", value.encode(), b"werne-profile-secret", 100_000).hex()


def content_digest(value: Any) -> str:
    """SHA-256 of plist content (secrets by a slow fingerprint): what a PayloadUUID is derived from."""
    return hashlib.sha256(json.dumps(_hashable(value), sort_keys=True).encode()).hexdigest()


def _reveal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    if isinstance(value, Secret):
        return value.reveal()
    return value


# --- loading ----------------------------------------------------------------------------------

def load_profile_spec(name: str, profiles_dir: Path = PROFILES_DIR) -> ProfileSpec:
    """Read and validate profiles/<name>.yaml."""
    return load_named_spec(profiles_dir, "profile", name, ProfileSpec, ProfileError)


def available_profiles(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    """Names of all profile data files."""
    return sorted(p.stem for p in profiles_dir.glob("*.yaml") if p.name != GROUPS_FILE_NAME)


def load_group_assignment(config: Config | None = None, profiles_dir: Path = PROFILES_DIR) -> GroupAssignment:
    """The group -> profiles map: the inventory's ipad-profiles.yml if present, else profiles/groups.yaml."""
    path = profiles_dir / GROUPS_FILE_NAME
    if config is not None and (config.inventory_dir / INVENTORY_GROUPS_FILE_NAME).is_file():
        path = config.inventory_dir / INVENTORY_GROUPS_FILE_NAME
    assignment = load_model(path, "profile groups", GroupAssignment, ProfileError)
    known = set(available_profiles(profiles_dir))
    for group, names in assignment.groups.items():
        for n in names:
            if n not in known:
                raise ProfileError(f"profile groups: {path}: group {group!r} names unknown profile {n!r}")
    return assignment


def _group_profiles_default() -> dict[str, list[str]]:
    try:
        return dict(load_group_assignment().groups)
    except ProfileError:
        return {}


# Group -> profile names from profiles/groups.yaml, for callers that need no config.
GROUP_PROFILES: dict[str, list[str]] = _group_profiles_default()


@functools.lru_cache(maxsize=4)
def load_mscp(path: Path = MSCP_FILE) -> dict[str, Any]:
    """The derived mSCP data (baselines, rules); read once per path."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"mSCP data {path} does not exist (run tools/derive_mscp.py)") from None
    except (OSError, ValueError) as e:
        raise ProfileError(f"mSCP data {path} is unreadable: {e.__class__.__name__}") from None
    return data


def mscp_payload_keys(baseline: str, payload_type: str, exclude: dict[str, str] | None = None,
                      mscp_file: Path = MSCP_FILE) -> dict[str, Any]:
    """The payload keys that a baseline's rules set for one payload type, with $ODV resolved."""
    data = load_mscp(mscp_file)
    if baseline not in data.get("baselines", {}):
        raise ProfileError(f"mSCP baseline {baseline!r} is not in {mscp_file}")
    exclude = exclude or {}
    rule_ids = [r for s in data["baselines"][baseline]["sections"] for r in s["rules"]]
    unknown = sorted(set(exclude) - set(rule_ids))
    if unknown:
        raise ProfileError(f"mSCP baseline {baseline}: excluded rule {unknown[0]!r} is not in the baseline")
    keys: dict[str, Any] = {}
    for rule_id in rule_ids:
        rule = data["rules"].get(rule_id)
        if rule is None or rule_id in exclude:
            continue
        for m in rule["mobileconfig"]:
            if m["PayloadType"] != payload_type:
                continue
            for k, v in m["keys"].items():
                if v == "$ODV":
                    if baseline not in rule["odv"]:
                        raise ProfileError(f"mSCP rule {rule_id} has no value for baseline {baseline}")
                    v = rule["odv"][baseline]
                keys[k] = v
    return keys


# --- building -----------------------------------------------------------------------------------

def _read_named_secret(secret_name: str, config: Config, profile: str) -> Secret:
    if secret_name == "wifi":
        if config.mdm.wifi_secret_file is None:
            raise ProfileError(f"profile {profile}: no Wi-Fi password configured "
                               "(set mdm.wifi_secret_file to a file holding it)")
        try:
            return read_secret(file=config.mdm.wifi_secret_file, what="Wi-Fi password")
        except SecretError as e:
            raise ProfileError(f"profile {profile}: {e}") from None
    raise ProfileError(f"profile {profile}: unknown secret {secret_name!r} (known: wifi)")


def airplay_allow_list(by_group: Mapping[str, str], device: DeviceContext | None) -> list[dict[str, str]]:
    """The AllowList items: each Apple TV by DeviceID (its AirPlay id, iOS before 18) and DeviceName
    (iOS 18 and later, where Apple dropped DeviceID). No device or no Apple TV: an empty list, which
    lets the iPad AirPlay to nothing."""
    if device is None:
        return []
    scope = by_group.get(device.group)
    chosen = device.airplay_school if scope == "school" else device.airplay if scope == "room" else ()
    items = []
    for d in sorted(chosen, key=lambda x: x.name):
        item = {"DeviceName": d.name}
        if d.device_id:
            item["DeviceID"] = d.device_id.lower()
        items.append(item)
    return items


def _payload_body(spec: PayloadSpec, config: Config, profile: str, device: DeviceContext | None = None
                  ) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if spec.mscp is not None:
        body.update(mscp_payload_keys(spec.mscp.baseline, spec.type, spec.mscp.exclude))
    if spec.ikev2 is not None:
        if spec.type != "com.apple.vpn.managed":
            raise ProfileError(f"profile {profile}: ikev2 settings need payload type com.apple.vpn.managed")
        try:
            body.update(IKEv2Profile.model_validate(spec.ikev2).to_payload_content())
        except ValidationError as e:
            raise ProfileError(f"profile {profile}: ikev2: {first_error(e)}") from None
    if spec.airplay_allow_list is not None:
        if spec.type != "com.apple.airplay":
            raise ProfileError(f"profile {profile}: airplay_allow_list needs payload type com.apple.airplay")
        body["AllowList"] = airplay_allow_list(spec.airplay_allow_list, device)
    body.update(spec.keys)
    if spec.webfilter_by_group is not None:
        if spec.type != "com.apple.webcontent-filter":
            raise ProfileError(f"profile {profile}: webfilter_by_group needs payload type com.apple.webcontent-filter")
        lists = spec.webfilter_by_group.get(device.group) if device is not None else None
        if lists is not None:
            body["PermittedURLs"], body["DenyListURLs"] = list(lists.allow), list(lists.deny)
    for key, secret_name in spec.secrets.items():
        body[key] = _read_named_secret(secret_name, config, profile)
    if not body and spec.airplay_allow_list is None:
        raise ProfileError(f"profile {profile}: payload {spec.type} has no keys")
    return body


def build_profile(spec: ProfileSpec, config: Config, organization: str, identifier_prefix: str,
                  device: DeviceContext | None = None) -> Profile:
    """Build one profile from its spec; the UUIDs depend only on identifier and content. `device`
    fills the device-specific keys (the AirPlay allow list); without it they are empty."""
    identifier = f"{identifier_prefix}.{spec.name}"
    payloads: list[dict[str, Any]] = []
    for index, pspec in enumerate(spec.payloads):
        body = _payload_body(pspec, config, spec.name, device)
        payload_id = f"{identifier}.{pspec.type.rsplit('.', 1)[-1]}.{index}"
        common = {
            "PayloadType": pspec.type,
            "PayloadVersion": 1,
            "PayloadIdentifier": payload_id,
            "PayloadDisplayName": pspec.display_name or spec.display_name,
            "PayloadOrganization": organization,
        }
        payload = {**body, **common}
        payload_uuid = uuid.uuid5(PROFILE_NAMESPACE, f"{payload_id}:{content_digest(payload)}")
        payload["PayloadUUID"] = str(payload_uuid).upper()
        payloads.append(payload)
    top: dict[str, Any] = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadDisplayName": spec.display_name,
        "PayloadDescription": spec.description,
        "PayloadOrganization": organization,
        "PayloadRemovalDisallowed": spec.removal_disallowed,
        "PayloadScope": "System",
        "PayloadContent": payloads,
    }
    if not spec.description:
        del top["PayloadDescription"]
    content_hash = content_digest(top)
    top["PayloadUUID"] = str(uuid.uuid5(PROFILE_NAMESPACE, f"{identifier}:{content_hash}")).upper()
    return Profile(
        name=spec.name,
        identifier=identifier,
        uuid=top["PayloadUUID"],
        display_name=spec.display_name,
        payload_types=tuple(p["PayloadType"] for p in payloads),
        content=_reveal(top),
        content_hash=content_hash,
    )


def build_named_profile(name: str, config: Config, profiles_dir: Path = PROFILES_DIR) -> Profile:
    """Build profiles/<name>.yaml with the organisation and prefix from the group assignment."""
    assignment = load_group_assignment(config, profiles_dir)
    return build_profile(load_profile_spec(name, profiles_dir), config,
                         assignment.organization, assignment.identifier_prefix)


def profile_set_for(group: str, config: Config, profiles_dir: Path = PROFILES_DIR,
                    device: DeviceContext | None = None, extra: tuple[str, ...] = ()) -> list[Profile]:
    """The profiles a device of `group` (pupil, teacher, shared; appletv) must have, built for this
    site; `device` fills the device-specific keys, `extra` adds profiles by name (a school's own)."""
    assignment = load_group_assignment(config, profiles_dir)
    if group not in assignment.groups:
        known = ", ".join(sorted(assignment.groups))
        raise ProfileError(f"unknown iPad group {group!r} (known: {known})")
    names = list(dict.fromkeys([*assignment.groups[group], *extra]))
    return [build_profile(load_profile_spec(n, profiles_dir), config, assignment.organization,
                          assignment.identifier_prefix, device)
            for n in names]


def profile_identifiers_for(group: str, config: Config | None = None,
                            profiles_dir: Path = PROFILES_DIR) -> list[str]:
    """The PayloadIdentifiers a device of `group` must have, without building (so without secrets)."""
    assignment = load_group_assignment(config, profiles_dir)
    if group not in assignment.groups:
        known = ", ".join(sorted(assignment.groups))
        raise ProfileError(f"unknown iPad group {group!r} (known: {known})")
    return [f"{assignment.identifier_prefix}.{n}" for n in assignment.groups[group]]


# --- CMS signing ------------------------------------------------------------------------------

def sign_profile(profile_bytes: bytes, cert: Any, key: Any) -> bytes:
    """CMS (PKCS#7) SignedData over the profile, DER, content attached; what iOS verifies."""
    # Imported here (and below): cryptography costs ~70 ms to import; only signing needs it.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(profile_bytes)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def load_signing_identity(config: Config) -> tuple[Any, Any] | None:
    """(certificate, private key) from mdm.signing_cert_file / signing_key_file, or None if unset."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_file, key_file = config.mdm.signing_cert_file, config.mdm.signing_key_file
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ProfileError("profile signing needs both mdm.signing_cert_file and mdm.signing_key_file")
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as e:
        raise ProfileError(f"profile signing: cannot load certificate {cert_file}: "
                           f"{e.__class__.__name__}") from None
    warn_if_others_can_read(Path(key_file), "profile signing key")
    try:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        # The message never includes key material, only the file name and the kind of failure.
        raise ProfileError(f"profile signing: cannot load private key {key_file} "
                           f"(must be unencrypted PEM): {e.__class__.__name__}") from None
    return cert, key


def profile_payload_for_install(profile: Profile, config: Config) -> bytes:
    """The bytes to send in InstallProfile: signed when a signing identity is configured."""
    raw = profile.to_bytes()
    identity = load_signing_identity(config)
    return sign_profile(raw, *identity) if identity else raw
