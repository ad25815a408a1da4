"""ansible-lint (production profile) is clean on the laptop playbook and every role it uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def roles_of(playbook: Path) -> list[str]:
    names = []
    for play in yaml.safe_load(playbook.read_text(encoding="utf-8")):
        for role in play.get("roles") or []:
            names.append(role["role"] if isinstance(role, dict) else role)
    return names


@pytest.mark.slow
def test_laptop_playbook_and_its_roles_pass_ansible_lint_production_profile():
    roles = roles_of(PLAYBOOKS / "laptop.yml")
    assert {"ssh_hardening", "nftables_firewall", "disk_encryption_fact"} <= set(roles)
    lint = Path(sys.executable).parent / "ansible-lint"
    argv = [str(lint), "-c", ".ansible-lint", "--nocolor", "laptop.yml", *(f"roles/{r}" for r in roles)]
    p = subprocess.run(argv, cwd=PLAYBOOKS, capture_output=True, text=True, timeout=600,
                       env={"PATH": f"{lint.parent}:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Profile 'production' was required, and it passed" in p.stdout + p.stderr
