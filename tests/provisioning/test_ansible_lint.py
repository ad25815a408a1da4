"""ansible-lint (production profile) is clean on every playbook and every role."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.site import REPO

PLAYBOOKS = REPO / "playbooks"


def roles_of(playbook: Path) -> list[str]:
    names = []
    for play in yaml.safe_load(playbook.read_text(encoding="utf-8")):
        for role in play.get("roles") or []:
            names.append(role["role"] if isinstance(role, dict) else role)
    return names


def test_every_role_a_playbook_uses_exists_and_every_role_is_used():
    playbooks = sorted(PLAYBOOKS.glob("*.yml"))
    used = {r for p in playbooks for r in roles_of(p)}
    present = {d.name for d in (PLAYBOOKS / "roles").iterdir() if d.is_dir()}
    assert {"ssh_hardening", "nftables_firewall", "disk_encryption_fact"} <= used
    assert used == present


@pytest.mark.slow
def test_every_playbook_and_role_passes_ansible_lint_production_profile():
    playbooks = sorted(p.name for p in PLAYBOOKS.glob("*.yml"))
    roles = sorted(f"roles/{d.name}" for d in (PLAYBOOKS / "roles").iterdir() if d.is_dir())
    assert "laptop.yml" in playbooks and "compliance_facts.yml" in playbooks and len(roles) >= 10
    lint = Path(sys.executable).parent / "ansible-lint"
    argv = [str(lint), "-c", ".ansible-lint", "--nocolor", *playbooks, *roles]
    p = subprocess.run(argv, cwd=PLAYBOOKS, capture_output=True, text=True, timeout=600,
                       # The roles run only from the playbooks here, which find playbooks/library/ beside
                       # them; linted alone, a role is told where that folder is.
                       env={"PATH": f"{lint.parent}:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8",
                            "ANSIBLE_LIBRARY": str(PLAYBOOKS / "library")})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out
    # It really looked at them: at least every playbook and a tasks file per role.
    processed = re.search(r"in (\d+) files processed", out)
    assert processed and int(processed.group(1)) >= len(playbooks) + len(roles), out
