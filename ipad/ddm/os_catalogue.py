"""Apple's catalogue of OS versions per device model (gdmf.apple.com/v2/pmv), read from a saved snapshot.

Apple's schema points MDM servers at it: DeviceInformation's SoftwareUpdateDeviceID is "the device
identifier that you use to look up available OS updates through https://gdmf.apple.com/v2/pmv"
(apple/device-management, mdm/commands/information.device.yaml). Its JSON has two lists,
PublicAssetSets and AssetSets, each {"iOS": [{ProductVersion, Build, PostingDate, ExpirationDate?,
SupportedDevices: [...]}], "macOS": [...], ...}; dates are YYYY-MM-DD. A version is offered from
its PostingDate until its ExpirationDate (none: still offered); a version in either list counts.

This machine cannot reach Apple, so `werne ipad catalogue import FILE` checks a saved answer and
stores it at ddm.catalogue_file (default <state_dir>/ddm/apple-pmv.json) with the import time.
A catalogue older than ddm.catalogue_max_age_days is refused: Apple withdraws versions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from core import jsonio
from core.config import Config
from core.errors import InputError
from ipad.errors import CatalogueError

PLATFORM = "iOS"  # iPadOS releases are listed under iOS
LISTS = ("PublicAssetSets", "AssetSets")
STORED_FORMAT = 1




@dataclass(frozen=True)
class Release:
    """One OS version/build as Apple offers it, and the device models that can take it."""

    version: str
    build: str
    posted: date
    expires: date | None
    devices: frozenset[str]

    def offered_on(self, day: date) -> bool:
        return self.posted <= day and (self.expires is None or day <= self.expires)


def version_key(v: str) -> tuple[int, ...]:
    """'18.3.1' -> (18, 3, 1); a non-numeric part counts as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in v.strip().split("."))


@dataclass(frozen=True)
class Catalogue:
    """The iOS releases of one snapshot and when it was taken."""

    releases: tuple[Release, ...]
    taken_at: datetime
    source: str

    def offered(self, day: date) -> list[Release]:
        return [r for r in self.releases if r.offered_on(day)]

    def offered_versions(self, day: date) -> list[str]:
        return sorted({r.version for r in self.offered(day)}, key=version_key)

    def versions_for(self, model: str, day: date) -> list[str]:
        """The versions Apple offers this model today, oldest first."""
        return sorted({r.version for r in self.offered(day) if model in r.devices}, key=version_key)

    def known_model(self, model: str) -> bool:
        return any(model in r.devices for r in self.releases)


def _date(value: Any, where: str) -> date:
    if not isinstance(value, str):
        raise CatalogueError(f"{where}: expected a date YYYY-MM-DD, got {type(value).__name__}")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise CatalogueError(f"{where}: {value!r} is not a date YYYY-MM-DD") from None


def parse_pmv(data: Any, source: str) -> list[Release]:
    """The iOS releases of a pmv answer; raises CatalogueError with the first problem."""
    if not isinstance(data, dict) or not any(k in data for k in LISTS):
        raise CatalogueError(f"{source}: not Apple's pmv catalogue (no PublicAssetSets or AssetSets)")
    releases: dict[tuple[str, str], Release] = {}
    for list_name in LISTS:
        sets = data.get(list_name, {})
        if not isinstance(sets, dict):
            raise CatalogueError(f"{source}: {list_name}: expected an object of platforms")
        entries = sets.get(PLATFORM, [])
        if not isinstance(entries, list):
            raise CatalogueError(f"{source}: {list_name}.{PLATFORM}: expected a list")
        for i, e in enumerate(entries):
            where = f"{source}: {list_name}.{PLATFORM}[{i}]"
            if not isinstance(e, dict):
                raise CatalogueError(f"{where}: expected an object")
            version, build, devices = e.get("ProductVersion"), e.get("Build"), e.get("SupportedDevices")
            if not isinstance(version, str) or not version or not all(p.isdigit() for p in version.split(".")):
                raise CatalogueError(f"{where}.ProductVersion: {version!r} is not a version like 18.3")
            if not isinstance(build, str) or not build:
                raise CatalogueError(f"{where}.Build: missing")
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise CatalogueError(f"{where}.SupportedDevices: expected a list of model identifiers")
            expires = e.get("ExpirationDate")
            rel = Release(version, build, _date(e.get("PostingDate"), f"{where}.PostingDate"),
                          _date(expires, f"{where}.ExpirationDate") if expires is not None else None,
                          frozenset(devices))
            old = releases.get((version, build))
            if old is not None:  # listed in both: the union of models, the later expiry
                rel = Release(version, build, min(old.posted, rel.posted),
                              None if old.expires is None or rel.expires is None else max(old.expires, rel.expires),
                              old.devices | rel.devices)
            releases[(version, build)] = rel
    if not releases:
        raise CatalogueError(f"{source}: no {PLATFORM} releases in the catalogue")
    return sorted(releases.values(), key=lambda r: (version_key(r.version), r.build))


def catalogue_path(config: Config) -> Path:
    return config.ddm.catalogue_file or (config.state_dir / "ddm" / "apple-pmv.json")


def _read_json(path: Path, what: str) -> Any:
    try:
        return jsonio.load_file(path, what)
    except InputError as e:  # the file (InputFileError) or its JSON (JSONInputError)
        raise CatalogueError(str(e)) from None


def import_catalogue(config: Config, source: Path, now: datetime | None = None) -> tuple[Path, Catalogue]:
    """Check a saved pmv answer and store it (with the import time) where `ipad update` reads it."""
    now = now or datetime.now(UTC)
    data = _read_json(Path(source), "catalogue")
    releases = parse_pmv(data, str(source))
    path = catalogue_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {"format": STORED_FORMAT, "imported_at": now.isoformat(), "source": Path(source).name, "pmv": data}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stored, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path, Catalogue(tuple(releases), now, Path(source).name)


def load_catalogue(config: Config, now: datetime | None = None) -> Catalogue:
    """The stored catalogue; raises CatalogueError when missing, malformed or older than allowed.

    A file that is a plain pmv answer (not stored by import, e.g. saved by a sync job) is as old as
    its modification time.
    """
    now = now or datetime.now(UTC)
    path = catalogue_path(config)
    hint = "; save https://gdmf.apple.com/v2/pmv and run `werne ipad catalogue import FILE`"
    if not path.is_file():
        raise CatalogueError(f"no catalogue of Apple's OS versions at {path}{hint}")
    data = _read_json(path, "catalogue")
    if isinstance(data, dict) and data.get("format") == STORED_FORMAT and "pmv" in data:
        try:
            taken = datetime.fromisoformat(str(data.get("imported_at")))
        except ValueError:
            raise CatalogueError(f"catalogue {path}: imported_at is not a time") from None
        source, data = str(data.get("source", path.name)), data["pmv"]
    else:
        taken, source = datetime.fromtimestamp(path.stat().st_mtime, UTC), path.name
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=UTC)
    releases = parse_pmv(data, str(path))
    age = (now - taken).days
    limit = config.ddm.catalogue_max_age_days
    if age > limit:
        raise CatalogueError(f"catalogue {path} is {age} days old (ddm.catalogue_max_age_days {limit}){hint}")
    return Catalogue(tuple(releases), taken, source)
