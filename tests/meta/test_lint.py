"""The code base passes ruff (E, F, I, B, UP, C901; pyproject.toml) and mypy (strict, on the packages
pyproject.toml lists), and the libraries never import click."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.site import REPO

LIBRARY_PACKAGES = ["core", "lab", "provisioning", "mdm_client", "ipad", "vpn", "compliance", "enrolment"]


@pytest.mark.lint
def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run([str(ruff), "check", "--output-format", "concise", "."], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.lint
def test_mypy_is_clean():
    # `make test` (CI) runs no separate lint step, so the type check is a test as well.
    mypy = Path(sys.executable).with_name("mypy")
    r = subprocess.run([str(mypy)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_only_cli_imports_click():
    offenders = []
    for pkg in LIBRARY_PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "import click" in text or "from click" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
