"""Reading the data files profiles and declarations are built from (profiles/, declarations/, the
inventory's ipad-profiles.yml): YAML through core.yamlio (safe tags only, a key given twice is an
error), every failure one line that names the file (and the line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.validation import first_error
from core.yamlio import YAMLInputError, load_file
from ipad.errors import IPadError

# The names of profile and declaration data files (profiles/<name>.yaml, declarations/<name>.yaml).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
M = TypeVar("M", bound=BaseModel)


def load_data_file(path: Path, what: str, error: type[IPadError]) -> Any:
    """The YAML value of a data file; raises `error`("<what>: <path>...: <reason>")."""
    try:
        return load_file(path)
    except YAMLInputError as e:
        if e.reason == "does not exist":
            raise error(f"{what}: {path} does not exist") from None
        if e.reason.startswith("cannot read: "):
            raise error(f"{what}: cannot read {path}: {e.reason.removeprefix('cannot read: ')}") from None
        raise error(f"{what}: {path}:{e.line}: {e.reason}") from None


def load_model(path: Path, what: str, model: type[M], error: type[IPadError]) -> M:
    """A data file validated as `model`; any failure one `error` line naming `what` and the file."""
    try:
        return model.model_validate(load_data_file(path, what, error))
    except ValidationError as e:
        raise error(f"{what}: {path}: {first_error(e)}") from None


def load_named_spec(directory: Path, kind: str, name: str, model: type[M], error: type[IPadError]) -> M:
    """<directory>/<name>.yaml validated as `model`, whose `name` must be the file's name."""
    if not NAME_RE.match(name):
        raise error(f"bad {kind} name {name!r}")
    path = directory / f"{name}.yaml"
    spec = load_model(path, f"{kind} {name}", model, error)
    if getattr(spec, "name", None) != name:
        raise error(f"{kind} {name}: {path}: name is {getattr(spec, 'name', None)!r}, expected {name!r}")
    return spec
