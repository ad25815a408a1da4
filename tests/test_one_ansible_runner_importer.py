"""One way to run a playbook: provisioning/ansible.py is the only module that imports ansible_runner."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".tools", ".git", "node_modules", "__pycache__"}


def imports_ansible_runner(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "ansible_runner" or n.startswith("ansible_runner.") for n in names):
            return True
    return False


def test_exactly_one_module_imports_ansible_runner():
    files = [p for p in REPO.rglob("*.py") if not SKIP & set(p.relative_to(REPO).parts)]
    assert len(files) > 50  # the scan really saw the repository
    importers = sorted(str(p.relative_to(REPO)) for p in files if imports_ansible_runner(p))
    assert importers == ["provisioning/ansible.py"]
