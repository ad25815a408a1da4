"""Fake security data for the tests, in the real formats: `tracker_entry` writes one package's
entry as Debian's security tracker publishes it (the shape of tests/data/vulns/debian-tracker-excerpt.json,
which tests/compliance/test_vulns.py holds every fake to), and `tracker_shape` is that contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "vulns"
EXCERPT = DATA / "debian-tracker-excerpt.json"


def tracker_entry(vid: str, release: str, *, fixed: str | None, urgency: str = "medium",
                  repo_version: str = "1.0-1", description: str = "a test vulnerability") -> dict[str, Any]:
    """One vulnerability's record: resolved with `fixed`, or open without a fix (fixed=None)."""
    rel: dict[str, Any] = {"status": "resolved" if fixed else "open", "repositories": {release: repo_version}}
    if fixed:
        rel["fixed_version"] = fixed
    else:
        rel.update({"nodsa_reason": "", "nodsa": "Minor issue"})
    rel["urgency"] = urgency
    return {"scope": "remote", "debianbug": 1000001, "description": description, "releases": {release: rel}}


def tracker_json(packages: dict[str, dict[str, dict[str, Any]]]) -> str:
    return json.dumps(packages, indent=2)


def tracker_shape(data: Any, path: str = "") -> set[tuple[str, str]]:
    """(path, JSON type) of every leaf, with package, id and release names replaced by placeholders."""
    if isinstance(data, dict):
        out: set[tuple[str, str]] = set()
        depth = path.count("/")
        for k, v in data.items():
            name = k
            if depth == 0:
                name = "<package>"
            elif depth == 1:
                name = "<id>"
            elif path.endswith("releases") or path.endswith("repositories"):
                name = "<release>"
            out |= tracker_shape(v, f"{path}/{name}")
        return out
    return {(path, type(data).__name__)}
