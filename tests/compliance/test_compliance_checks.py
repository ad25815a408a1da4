"""The named Python checks as a registry (compliance.checks): every check module is imported by the
package, every check a shipped baseline names is registered, none is registered without a baseline
using it, and a name cannot be registered twice."""

from __future__ import annotations

from pathlib import Path

import pytest

import compliance.checks
from compliance.checks import CHECK_MODULES, PYTHON_CHECKS
from compliance.checks.registry import python_check
from compliance.rules import load_baselines


def test_the_package_imports_every_check_module() -> None:
    folder = Path(compliance.checks.__file__).parent
    on_disk = {p.stem for p in folder.glob("*.py")} - {"__init__", "registry"}
    assert {m.__name__.rsplit(".", 1)[1] for m in CHECK_MODULES} == on_disk
    # Each module's checks are registered under the module that defines them.
    owners = {fn.__module__ for fn in PYTHON_CHECKS.values()}
    assert owners == {m.__name__ for m in CHECK_MODULES}


def test_baselines_and_registry_name_the_same_checks() -> None:
    used = {r.check.python for b in load_baselines().baselines for r in b.rules if r.check.python}
    assert used == set(PYTHON_CHECKS)
    assert len(used) == 33  # 11 moved out of the engine, 22 from the other check modules


def test_a_check_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'ssh_modern_crypto' is registered twice"):
        python_check("ssh_modern_crypto")(lambda dev, params, ctx: ("pass", ""))
    assert PYTHON_CHECKS["ssh_modern_crypto"].__module__ == "compliance.checks.laptop_hardening"
