"""The CLI's own rules, checked on the source of cli.py and commands/: only commands/render.py
prints (so every printed line passes terminal_safe), no module imports another's underscore
names, the command modules never import cli.py, and their imports form no circle."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.site import REPO

CLI_SOURCES = [REPO / "cli.py", *sorted((REPO / "commands").glob("*.py"))]
RENDER = REPO / "commands" / "render.py"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def printing(source: str) -> list[str]:
    """Every way `source` writes to the terminal itself: click.echo/secho, print, sys.stdout and
    sys.stderr, rich."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in {("click", "echo"), ("click", "secho"), ("click", "echo_via_pager"),
                                              ("sys", "stdout"), ("sys", "stderr")}:
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append("print")
        elif isinstance(node, ast.ImportFrom) and node.module == "click":
            found += [f"from click import {a.name}" for a in node.names if a.name in {"echo", "secho"}]
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"import {n}" for n in names if n.split(".")[0] == "rich"]
    return found


def imports(source: str) -> list[tuple[str, str | None]]:
    """(module, name) for each `from module import name`; (module, None) for `import module`."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
    return out


def private(module: str, name: str | None) -> bool:
    parts = [*module.split("."), *([name] if name else [])]
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts)


def test_the_checks_can_fail() -> None:
    source = "import click, sys\nclick.echo(x)\nprint(y)\nsys.stderr.write(z)\nfrom rich.table import T\n"
    assert sorted(printing(source)) == ["click.echo", "import rich.table", "print", "sys.stderr"]
    assert [private(m, n) for m, n in imports("from ipad.ops import _send\nimport lab._x\nfrom a import b\n")] == [
        True, True, False]


@pytest.mark.parametrize("path", [p for p in CLI_SOURCES if p != RENDER], ids=lambda p: p.name)
def test_only_the_render_module_prints(path: Path) -> None:
    assert printing(path.read_text(encoding="utf-8")) == []


def test_the_render_module_is_where_printing_happens() -> None:
    # The check above looks at the right thing: render.py itself does print.
    assert "click.echo" in printing(RENDER.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CLI_SOURCES, ids=lambda p: p.name)
def test_no_underscore_names_imported(path: Path) -> None:
    bad = [(m, n) for m, n in imports(path.read_text(encoding="utf-8")) if private(m, n)]
    assert bad == []


def test_command_modules_never_import_cli_and_form_no_circle() -> None:
    ours = {module_name(p) for p in CLI_SOURCES}
    graph: dict[str, set[str]] = {}
    for path in CLI_SOURCES:
        deps = set()
        for module, name in imports(path.read_text(encoding="utf-8")):
            for candidate in (module, f"{module}.{name}"):
                if candidate in ours:
                    deps.add(candidate)
        graph[module_name(path)] = deps
    assert {m for m, deps in graph.items() if "cli" in deps} == set()
    assert graph["cli"] >= {"commands.render", "commands.context"}  # the graph is really read
    tuple(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a circle


def test_no_cli_function_is_too_complex() -> None:
    # McCabe 20 for the CLI (the library's own limit comes with pyproject's lint config).
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run([str(ruff), "check", "--select", "C901", "--config", "lint.mccabe.max-complexity=20",
                        "--output-format", "concise", "cli.py", "commands"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
