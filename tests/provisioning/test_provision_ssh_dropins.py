"""The SSH hardening wins over a foreign sshd drop-in that sorts before ours (sshd keeps the first
value it reads, and reads the drop-ins in name order). One real lab laptop, real ansible-runner,
read back with the laptop's own `sshd -T`: --check shows the change and changes nothing; a run
comments out the conflicting lines, removes the old drop-in name and leaves password login off,
which the compliance check confirms; a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import load_config
from core.db import Database
from core.inventory import load_inventory

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DIR = "/etc/ssh/sshd_config.d"
OURS = f"{DIR}/00-werne-hardening.conf"
LEGACY = f"{DIR}/10-werne-hardening.conf"
# Sorts before ours: without the neutralising task, its values win.
EARLY = f"{DIR}/00-local.conf"
EARLY_TEXT = "# left by a local admin\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\nPrintLastLog no\n"
# Sorts after ours (cloud images): no effect today, but it would win as soon as ours is renamed.
LATE = f"{DIR}/50-cloud-init.conf"
LATE_TEXT = "PasswordAuthentication yes\n"
MARK = "# disabled by werne ssh_hardening:"
TASK = "ssh_hardening: Neutralise foreign sshd drop-ins that contradict the hardening"


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(1, gateway=False)
    # What a laptop looks like before: a foreign drop-in sorting first, a cloud-init one, and the
    # drop-in name of the previous werne version.
    for path, text in ((EARLY, EARLY_TEXT), (LATE, LATE_TEXT), (LEGACY, "PermitRootLogin no\n")):
        r = lab.exec("lap01", ["sh", "-c", 'printf %s "$1" > "$2"', "plant", text, path])
        assert r.returncode == 0, r.stderr
    return lab


@pytest.fixture(scope="module")
def cfg(lab, lab_config, werne_cli) -> Path:
    path = lab_config(lab)
    r = werne_cli(path, "laptop", "preflight", "--all", "--accept-new")
    assert r.exit_code == 0, r.output
    return path


def sshd_effective(lab) -> dict[str, str]:
    """What the laptop's sshd really uses (first value per keyword, as `sshd -T` prints it)."""
    r = lab.exec("lap01", ["/usr/sbin/sshd", "-T"])
    assert r.returncode == 0, r.stderr
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, value)
    return out


def files(lab) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for path in (OURS, LEGACY, EARLY, LATE):
        r = lab.exec("lap01", ["cat", path])
        out[path] = r.stdout if r.returncode == 0 else None
    return out


def test_check_mode_shows_the_neutralising_and_changes_nothing(lab, cfg, werne_cli):
    before = files(lab)
    assert before[EARLY] == EARLY_TEXT and before[OURS] is None
    assert sshd_effective(lab)["passwordauthentication"] == "yes"

    r = werne_cli(cfg, "laptop", "provision", "--all", "--check")
    assert r.exit_code == 0, r.output
    assert f"  - {TASK}\n" in r.stdout
    assert f"      +{MARK} PasswordAuthentication yes\n" in r.stdout
    assert f"      +{MARK} KbdInteractiveAuthentication yes\n" in r.stdout
    assert f"      --- {LATE}\n" in r.stdout
    assert "  - ssh_hardening: Remove the drop-in names of earlier werne versions\n" in r.stdout
    assert files(lab) == before


def test_provision_neutralises_the_foreign_dropin_and_password_login_is_off(lab, cfg, werne_cli):
    r = werne_cli(cfg, "laptop", "provision", "--all", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    (host,) = report["hosts"]
    assert host["host"] == "lap01" and host["outcome"] == "changed"
    (change,) = [c for c in host["changes"] if f"{c['role']}: {c['task']}" == TASK]
    assert f"--- {EARLY}\n" in change["diff"] and f"--- {LATE}\n" in change["diff"]
    # Plain Ansible output (the run's stdout artifact) names the files too.
    stdout = Path(report["artifact_dir"], "stdout").read_text(encoding="utf-8")
    assert (f"neutralised {EARLY} (commented out: PasswordAuthentication yes, "
            "KbdInteractiveAuthentication yes)") in stdout
    assert f"neutralised {LATE} (commented out: PasswordAuthentication yes)" in stdout

    effective = sshd_effective(lab)
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["printlastlog"] == "no"  # the foreign file's other settings still apply
    after = files(lab)
    assert after[EARLY] == (
        f"# left by a local admin\n{MARK} PasswordAuthentication yes\n"
        f"{MARK} KbdInteractiveAuthentication yes\nPrintLastLog no\n"
    )
    assert after[LATE] == f"{MARK} PasswordAuthentication yes\n"
    assert after[LEGACY] is None
    assert after[OURS] is not None and "PasswordAuthentication no\n" in after[OURS]
    # The running sshd was reloaded after the whole configuration passed sshd -t.
    r = lab.exec("lap01", ["systemctl", "is-active", "ssh"])
    assert r.stdout.strip() == "active"


def test_compliance_ssh_rules_pass(lab, cfg):
    from compliance.history import load_run
    from compliance.run import run_compliance

    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        summary = run_compliance(config, db, load_inventory(config.inventory_dir), ("laptops",))
        run = load_run(db, summary.run_id)
    finally:
        db.dispose()
    for rule in ("lx-ssh-no-password-auth", "lx-ssh-no-root-login", "lx-ssh-max-auth-tries"):
        assert run.results[("lap01", rule)].status == "pass", run.results[("lap01", rule)].evidence


def test_second_run_changes_nothing(lab, cfg, werne_cli):
    before = files(lab)
    r = werne_cli(cfg, "laptop", "provision", "--all", "--json")
    assert r.exit_code == 0, r.output
    (host,) = json.loads(r.stdout)["hosts"]
    assert (host["host"], host["outcome"], host["changed"], host["changes"]) == ("lap01", "ok", 0, [])
    assert files(lab) == before
