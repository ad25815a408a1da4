"""The layer rules of docs/architecture.md, checked on the source: the import graph has no cycle
among packages, no library package reaches the CLI, click or the lab, the two fleets stay apart,
and each external tool has exactly one module that drives it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARY = ("core", "provisioning", "mdm_client", "ipad", "enrolment", "compliance")
PACKAGES = (*LIBRARY, "lab")
LAPTOP_SIDE = {"provisioning"}
IPAD_SIDE = {"mdm_client", "ipad", "enrolment"}


def _sources(*tops: str) -> list[Path]:
    files: list[Path] = []
    for top in tops:
        p = REPO / top
        files += [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))
    return files


def _imports(path: Path) -> set[str]:
    """Every module name `path` imports, at top level or inside functions (dotted, absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif (  # importlib.import_module("lab.mdm") is an import too
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for f in _sources(pkg):
            for name in _imports(f):
                top = name.split(".")[0]
                if top in PACKAGES and top != pkg:
                    graph[pkg].add(top)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    # The checker itself must be able to fail.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_packages() -> None:
    graph = _package_graph()
    assert graph["compliance"] >= {"provisioning", "ipad"}  # the graph is really read
    assert _cycle(graph) is None


@pytest.mark.parametrize("pkg", LIBRARY)
def test_library_never_imports_cli_click_or_lab(pkg: str) -> None:
    bad = sorted(
        f"{f.relative_to(REPO)}: {name}"
        for f in _sources(pkg)
        for name in _imports(f)
        if name.split(".")[0] in {"cli", "click", "lab"}
    )
    assert bad == []


def test_the_two_fleets_do_not_import_each_other() -> None:
    graph = _package_graph()
    laptop_to_ipad = {p: graph[p] & IPAD_SIDE for p in LAPTOP_SIDE if graph[p] & IPAD_SIDE}
    ipad_to_laptop = {p: graph[p] & LAPTOP_SIDE for p in IPAD_SIDE if graph[p] & LAPTOP_SIDE}
    assert (laptop_to_ipad, ipad_to_laptop) == ({}, {})


def test_exactly_one_module_runs_ansible() -> None:
    skip = {".venv", ".tools", ".git", "node_modules", "__pycache__"}
    files = [p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)]
    assert len(files) > 50  # the scan really saw the repository
    importers = sorted(
        str(f.relative_to(REPO))
        for f in files
        if any(n == "ansible_runner" or n.startswith("ansible_runner.") for n in _imports(f))
    )
    assert importers == ["provisioning/ansible.py"]


@pytest.mark.parametrize("client", ["NanoMDMClient", "NanoDEPClient"])
def test_exactly_one_module_makes_each_api_client(client: str) -> None:
    # Only the factory constructs a client; every other caller asks it. The lab and the CLI too
    # (tests and benches may make their own, with test keys).
    makers = sorted(
        str(f.relative_to(REPO))
        for f in _sources(*PACKAGES, "cli.py")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == client
    )
    assert makers == ["mdm_client/factory.py"]
