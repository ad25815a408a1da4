"""Apps as data: which App Store apps each iPad group gets (apps/apps.yaml, or the inventory's
ipad-apps.yml, or the file apps.apps_file names), loaded with one-line errors.

The same shape as the profile groups (profiles/groups.yaml): apps by name, each with its App Store
id (adamId), bundle id, whether the pupil may remove it and its managed app configuration; groups
list their apps by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.config import REPO_ROOT, Config
from core.inventory import IPAD_GROUPS
from core.validation import first_error
from core.yamlio import YAMLInputError, load_file
from ipad import commands
from ipad.commands import Command
from ipad.errors import AppsError

APPS_FILE = REPO_ROOT / "apps" / "apps.yaml"
INVENTORY_APPS_FILE_NAME = "ipad-apps.yml"
# InstallApplication's ManagementFlags: 1 = remove the app when the MDM profile is removed.
MANAGEMENT_FLAGS = 1
# Options.PurchaseMethod 1: install with a volume-purchase (Apps and Books) licence.
PURCHASE_METHOD_VOLUME = 1




class AppSpec(BaseModel):
    """One app of the app list."""

    model_config = ConfigDict(extra="forbid", strict=True)

    adam_id: int = Field(gt=0)
    bundle_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z0-9.-]+$")
    removable: bool = True
    pricing_param: str = Field(default="STDQ", pattern=r"^(STDQ|PLUS)$")
    configuration: dict[str, Any] | None = None


class _AppsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apps: dict[str, AppSpec]
    groups: dict[str, list[str]]


@dataclass(frozen=True)
class App:
    """An app by name, as the plan and the commands use it."""

    name: str
    adam_id: str
    bundle_id: str
    removable: bool
    pricing_param: str
    configuration: dict[str, Any] | None

    def install_command(self) -> Command:
        """InstallApplication from the App Store with a device licence (PurchaseMethod 1)."""
        return commands.install_application(
            int(self.adam_id), MANAGEMENT_FLAGS, self.configuration,
            None if self.removable else {"Removable": False}, PURCHASE_METHOD_VOLUME,
        )

    def remove_command(self) -> Command:
        return commands.remove_application(self.bundle_id)


@dataclass(frozen=True)
class AppCatalogue:
    """The app list: apps by name and each group's app names."""

    path: Path
    apps: dict[str, App]
    groups: dict[str, tuple[str, ...]]

    def apps_for(self, group: str | None) -> list[App]:
        return [self.apps[n] for n in self.groups.get(group or "", ())]

    def by_adam_id(self) -> dict[str, App]:
        return {a.adam_id: a for a in self.apps.values()}


def apps_file(config: Config | None) -> Path:
    """Which app list applies: apps.apps_file, else the inventory's ipad-apps.yml, else apps/apps.yaml."""
    if config is not None and config.apps.apps_file is not None:
        return config.apps.apps_file
    if config is not None and (config.inventory_dir / INVENTORY_APPS_FILE_NAME).is_file():
        return config.inventory_dir / INVENTORY_APPS_FILE_NAME
    return APPS_FILE


def load_apps(config: Config | None = None, path: Path | None = None) -> AppCatalogue:
    """Read and validate the app list. Raises AppsError with one line naming the file and the problem."""
    path = path or apps_file(config)
    try:
        data = load_file(path)
    except YAMLInputError as e:
        if e.reason == "does not exist":
            raise AppsError(f"app list {path} does not exist") from None
        if e.reason.startswith("cannot read: "):
            raise AppsError(f"app list {path}: {e.reason}") from None
        raise AppsError(f"app list {path}:{e.line}: {e.reason}") from None
    try:
        parsed = _AppsFile.model_validate(data)
    except ValidationError as e:
        raise AppsError(f"app list {path}: {first_error(e)}") from None
    seen_ids: dict[int, str] = {}
    seen_bundles: dict[str, str] = {}
    for name, spec in parsed.apps.items():
        if spec.adam_id in seen_ids:
            raise AppsError(f"app list {path}: apps {seen_ids[spec.adam_id]!r} and {name!r} have the same "
                            f"adam_id {spec.adam_id}")
        if spec.bundle_id in seen_bundles:
            raise AppsError(f"app list {path}: apps {seen_bundles[spec.bundle_id]!r} and {name!r} have the same "
                            f"bundle_id {spec.bundle_id}")
        seen_ids[spec.adam_id] = name
        seen_bundles[spec.bundle_id] = name
    for group, names in parsed.groups.items():
        if group not in IPAD_GROUPS:
            raise AppsError(f"app list {path}: unknown group {group!r} (groups: {', '.join(IPAD_GROUPS)})")
        for n in names:
            if n not in parsed.apps:
                raise AppsError(f"app list {path}: group {group!r} names unknown app {n!r}")
        if len(set(names)) != len(names):
            raise AppsError(f"app list {path}: group {group!r} names an app twice")
    apps = {
        n: App(n, str(s.adam_id), s.bundle_id, s.removable, s.pricing_param, s.configuration)
        for n, s in parsed.apps.items()
    }
    return AppCatalogue(path, apps, {g: tuple(ns) for g, ns in parsed.groups.items()})
