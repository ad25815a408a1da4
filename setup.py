"""The data files werne reads at run time (templates, playbooks, schemas, profiles, the demo
inventory, the docs) go into the wheel as data files: a venv installed from it has them in
<venv>/share/werne, where core.config.REPO_ROOT finds them. Everything else is in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

DATA_DIRS = ("apps", "data", "declarations", "deploy", "docs", "inventories/demo", "playbooks", "profiles")
SKIP = {"__pycache__", ".gitignore"}


def data_files() -> list[tuple[str, list[str]]]:
    by_dir: dict[str, list[str]] = {}
    for top in DATA_DIRS:
        for path in sorted(Path(top).rglob("*")):
            if path.is_file() and not SKIP & set(path.parts) and path.suffix != ".pyc":
                by_dir.setdefault(str(Path("share/werne") / path.parent), []).append(str(path))
    return sorted(by_dir.items())


setup(data_files=data_files())
