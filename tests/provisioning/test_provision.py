"""Provisioning against real sshd laptops (the lab) with real ansible-runner.

One lab of three laptops, tests in order: --check changes nothing; a real run changes the files
(read back over SSH) while a stopped laptop is reported unreachable; a second run changes nothing;
a laptop whose host key changed is refused by the pre-check and, without it, by ssh itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from core.models import ProvisioningRun

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DROPIN = "/etc/ssh/sshd_config.d/00-werne-hardening.conf"
# Files the baseline writes; all absent on a fresh laptop except the banner (Debian's default).
WRITTEN = [
    DROPIN,
    "/etc/sysctl.d/60-werne-hardening.conf",
    "/etc/modprobe.d/werne-usb-storage.conf",
    "/etc/security/pwquality.conf.d/50-werne.conf",
    "/etc/profile.d/werne-tmout.sh",
    "/etc/ansible/facts.d/werne_disk.fact",
    "/etc/ansible/facts.d/werne_baseline.fact",
]
SNAPSHOT = (
    "sudo -n sh -c 'cat /etc/issue.net /etc/nftables.conf /etc/ssh/sshd_config; ls -la /etc/sudoers.d; "
    "nft list ruleset; systemctl is-enabled nftables apt-daily.timer 2>&1; "
    + "; ".join(f"test -e {p} && echo present {p} || echo absent {p}" for p in WRITTEN)
    + "'"
)


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(3, gateway=False)


@pytest.fixture(scope="module")
def cfg(lab, lab_config, werne_cli) -> Path:
    path = lab_config(lab, extra="\n[ssh]\nconnect_timeout = 3\nconnect_attempts = 2\n")
    r = werne_cli(path, "laptop", "preflight", "--all", "--accept-new")
    assert r.exit_code == 0, r.output
    return path


def runs(cfg: Path) -> list[ProvisioningRun]:
    db = Database(load_config(cfg).database_url)
    try:
        with db.session() as s:
            out = list(s.scalars(select(ProvisioningRun).order_by(ProvisioningRun.id)))
            for r in out:
                _ = r.results  # load while the session is open
            return out
    finally:
        db.dispose()


def test_check_mode_shows_the_changes_and_changes_nothing(lab, cfg, werne_cli, lab_ssh):
    before = {h: lab_ssh(cfg, h, SNAPSHOT) for h in ("lap01", "lap02", "lap03")}
    assert all(rc == 0 for rc, _ in before.values())
    assert f"absent {DROPIN}" in before["lap01"][1] and "werne_filter" not in before["lap01"][1]

    r = werne_cli(cfg, "laptop", "provision", "--all", "--check")
    assert r.exit_code == 0, r.output
    out = r.stdout
    for h in ("lap01", "lap02", "lap03"):
        assert f"{h}: would change " in out
    # Per host, the task and its diff: the drop-in's content and the banner's old/new lines.
    lap01 = out.split("lap01: would change", 1)[1].split("lap02: would change", 1)[0]
    assert "  - ssh_hardening: Write the SSH hardening drop-in\n" in lap01
    assert "      +PermitRootLogin no\n" in lap01
    assert "      +PasswordAuthentication no\n" in lap01
    assert "      -Debian GNU/Linux 12\n" in lap01
    assert "  - nftables_firewall: Write the firewall ruleset\n" in lap01
    assert "(check mode)" in out

    after = {h: lab_ssh(cfg, h, SNAPSHOT) for h in ("lap01", "lap02", "lap03")}
    assert after == before
    (run,) = runs(cfg)
    assert run.check_mode is True and run.status == "ok"
    assert sorted(x.host for x in run.results) == ["lap01", "lap02", "lap03"]


def test_provision_changes_the_laptops_and_reports_a_stopped_one_unreachable(lab, cfg, werne_cli, lab_ssh):
    # A run killed earlier left its row 'running': this run marks it 'interrupted'.
    db = Database(load_config(cfg).database_url)
    with db.session() as s:
        s.add(ProvisioningRun(actor="killed", playbook="laptop.yml", hosts=["lap01"], status="running"))
    db.dispose()
    lab.stop_host("lap03")
    try:
        r = werne_cli(cfg, "laptop", "provision", "--all")
    finally:
        lab.start_host("lap03")
    assert r.exit_code == 1, r.output
    lines = r.stdout.splitlines()
    assert any(line.split()[:2] == ["lap01", "changed"] for line in lines)
    assert any(line.split()[:2] == ["lap02", "changed"] for line in lines)
    assert any(line.split()[:2] == ["lap03", "unreachable"] for line in lines)
    assert any(line.startswith("lap03: unreachable: ") for line in lines)
    assert "provision: 3/3 hosts done" in r.stderr

    stale, run = runs(cfg)[1:]
    assert stale.status == "interrupted" and stale.finished_at is not None
    assert run.status == "failed" and run.check_mode is False
    res = {x.host: x for x in run.results}
    assert res["lap01"].outcome == res["lap02"].outcome == "changed" and res["lap01"].changed > 0
    assert res["lap03"].outcome == "unreachable" and res["lap03"].reason.startswith("unreachable: ")
    assert Path(run.artifact_dir, "job_events").is_dir()

    for host in ("lap01", "lap02"):
        rc, text = lab_ssh(
            cfg,
            host,
            f"cat {DROPIN} /etc/issue.net; sudo -n nft list ruleset; "
            "sudo -n sshd -T; systemctl is-active nftables apt-daily-upgrade.timer; "
            "cat /etc/ansible/facts.d/werne_disk.fact",
        )
        assert rc == 0, text
        assert "PermitRootLogin no\nPasswordAuthentication no\n" in text
        assert "permitrootlogin no" in text and "maxauthtries 3" in text  # what sshd really uses
        assert "This device belongs to the town administration." in text
        assert "table inet werne_filter" in text and "policy drop;" in text
        assert "10.200.0.0/16" in text and "tcp dport 22 accept" in text
        assert "active\nactive\n" in text
        assert '"luks_present": false' in text


def test_second_run_changes_nothing_and_keeps_secrets_out_of_artifacts(lab, cfg, monkeypatch):
    from provisioning.runner import provision

    # A secret in the controller's environment must not reach the artifacts (which keep the env).
    monkeypatch.setenv("WERNE_MDM_API_KEY", "s3cret-token-value")
    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        report = provision(config, db, load_inventory(config.inventory_dir), ["lap01", "lap02"])
    finally:
        db.dispose()
    assert report.status == "ok"
    assert [(h.host, h.outcome, h.changed) for h in report.hosts] == [("lap01", "ok", 0), ("lap02", "ok", 0)]
    assert all(h.ok > 0 for h in report.hosts)
    found = []
    for root, _dirs, files in os.walk(Path(report.artifact_dir).parent.parent):
        for f in files:
            if b"s3cret-token-value" in Path(root, f).read_bytes():
                found.append(f)
    assert found == []
    key = Path(config.ssh_key_file).read_text().strip().splitlines()[1]
    assert not any(
        key.encode() in Path(root, f).read_bytes()
        for root, _d, files in os.walk(config.state_dir / "artifacts")
        for f in files
    )


def test_changed_host_key_is_refused_by_preflight_and_provisioning(lab, cfg, werne_cli, lab_ssh):
    lab.regenerate_host_key("lap03")
    r = werne_cli(cfg, "laptop", "preflight", "lap03")
    assert r.exit_code == 1
    assert "lap03: host key changed: possible interception\n" in r.stdout

    r = werne_cli(cfg, "laptop", "provision", "lap03")
    assert r.exit_code == 1
    assert "lap03: host key changed: possible interception\n" in r.stdout
    run = runs(cfg)[-1]
    assert run.status == "failed"
    (res,) = run.results
    assert (res.host, res.outcome, res.reason) == (
        "lap03",
        "failed",
        "host key changed: possible interception",
    )
    # Refused before Ansible ran: nothing was written on the laptop.
    assert (
        "absent" in lab.exec("lap03", ["sh", "-c", f"test -e {DROPIN} && echo present || echo absent"]).stdout
    )


def test_ssh_itself_refuses_a_changed_key_when_ansible_runs(lab, cfg, tmp_path):
    # Without the pre-check (a key that changes between check and run): ssh uses the same pins
    # with StrictHostKeyChecking=yes and Ansible reports the host unreachable.
    from provisioning.runner import run_playbook

    lab.regenerate_host_key("lap03")  # changed again: the pin is older than both keys
    config = load_config(cfg)
    result = run_playbook(config, config.inventory_dir / "hosts.yml", ["lap03"], tmp_path / "pdd", "direct")
    out = result.outcomes["lap03"]
    assert out.outcome == "unreachable"
    assert out.reason == "unreachable: host key changed: possible interception (ssh refused the pinned key)"
    assert (
        "absent" in lab.exec("lap03", ["sh", "-c", f"test -e {DROPIN} && echo present || echo absent"]).stdout
    )
