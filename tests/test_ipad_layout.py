"""The iPad side's layout rules, checked on the source (AST): one module makes the API clients,
and no library package imports the lab (the library finds NanoMDM through the config only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# The library: everything but the CLI, the lab (a test rig), benches and tests.
LIBRARY = ["core", "provisioning", "mdm_client", "ipad", "enrolment", "compliance", "vpn"]
# Where an API client may be made: the library, the CLI and the lab (tests and benches may make
# their own, with test keys).
CLIENT_MAKERS = [*LIBRARY, "lab"]
FACTORY = "mdm_client/factory.py"


def _modules(packages: list[str]) -> list[Path]:
    return sorted(p for pkg in packages if (REPO / pkg).is_dir() for p in (REPO / pkg).rglob("*.py"))


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _constructs(tree: ast.AST, cls: str) -> bool:
    return any(
        isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == cls
        for n in ast.walk(tree)
    )


def test_no_library_package_imports_lab():
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in _modules(LIBRARY)
        for name in sorted(_imported(_tree(path)))
        if name == "lab" or name.startswith("lab.")
    ]
    assert offenders == []


@pytest.mark.parametrize("client", ["NanoMDMClient", "NanoDEPClient"])
def test_exactly_one_module_makes_each_api_client(client: str):
    makers = [
        str(path.relative_to(REPO))
        for path in [*_modules(CLIENT_MAKERS), REPO / "cli.py"]
        if _constructs(_tree(path), client)
    ]
    assert makers == [FACTORY]
