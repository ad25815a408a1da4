"""A lost laptop on the real lab, reached only through its VPN tunnel from home: a LUKS volume in a
file (crypttab names it, as an installer would), the recovery key escrowed and test-unlocked by
`werne laptop provision`; still opening the volume after the user changed the passphrase; the rule
failing once the recovery keyslot is removed behind werne's back; then the laptop switched off,
`werne laptop erase` queued (with a provisioning run queued before it), and when the laptop comes
online the watcher erases it first: no key opens the volume, the laptop powers off, and the audit
trail shows who ordered the erase and when it ran. The recovery key never reaches the artifacts,
the database in plain text, or the CLI's output other than `recovery-key show`."""

from __future__ import annotations

import json
import random
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

# Four provisioning runs through the tunnel, two compliance runs and a catch-up on a shared machine.
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(2400)]

IMG = "/var/lib/werne-disk.img"
ENROL = "/etc/werne/luks-enrol.key"
USER_PASS = "correct horse battery staple"
ENROL_KEY = "installer-enrolment-key-0001"


def cli(cfg, *args, input=None):  # type: ignore[no-untyped-def]
    from cli import main

    return CliRunner().invoke(main, ["--config", str(cfg), *args], input=input, catch_exceptions=False)


def sh(lab, script: str, input: str | None = None):  # type: ignore[no-untyped-def]
    p = lab.exec("lap01", ["sh", "-c", script], input=input, timeout=120)
    assert p.returncode == 0, (script, p.stdout[-300:], p.stderr[-300:])
    return p.stdout


def opens(lab, key: str, slot: int | None = None) -> bool:  # type: ignore[no-untyped-def]
    extra = f"--key-slot {slot} " if slot is not None else ""
    p = lab.exec("lap01", ["sh", "-c", f"cryptsetup open --test-passphrase {extra}--key-file - {IMG}"], input=key)
    return p.returncode == 0


def wait_online(config, db, inventory, host: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    from provisioning.home.presence import GatewayReader, peers_seen

    reader = GatewayReader(config, inventory)
    deadline = time.monotonic() + timeout
    try:
        while True:
            seen = peers_seen(db, reader.dump(), datetime.now(UTC), config.homeoffice.online_window_s)
            if seen.get(host) and seen[host].online:
                return
            assert time.monotonic() < deadline, f"no handshake from {host}"
            time.sleep(1)
    finally:
        reader.close()


def rule(config, db, inv, rule_id: str):  # type: ignore[no-untyped-def]
    from compliance.history import load_run
    from compliance.run import run_compliance

    s = run_compliance(config, db, inv, ("laptops",))
    r = load_run(db, s.run_id).results[("lap01", rule_id)]
    return r.status, r.evidence


def test_recovery_key_escrowed_verified_then_a_queued_erase_runs_first(lab_factory, tmp_path):
    from core.actor import real_user
    from core.escrow import new_key
    from core.inventory import load_inventory
    from provisioning.disk.models import LaptopRecoveryKey
    from provisioning.home.pending import list_items
    from provisioning.home.reach import inventory_in_use
    from tests.fixtures.vpn import home_office_lab

    lab = lab_factory(1, gateway=True)
    key_file = tmp_path / "recovery.key"
    key_file.write_text(new_key() + "\n")
    key_file.chmod(0o600)
    me = real_user()
    # The lab checks a booting home laptop's sshd from its home router (192.168.178.1): once the
    # baseline's firewall is on, that address must be an admin network for `switch_on` to see it.
    cfg, config, db = home_office_lab(lab, ["lap01"], homeoffice=(
        f'[recovery_keys]\nkey_file = "{key_file}"\nallowed_users = ["{me}"]\n'
        '[provisioning]\nadmin_networks = ["10.200.0.0/16", "10.77.0.0/16", "192.168.178.1/32"]\n'))
    try:
        # The installer's part: a LUKS volume (here in a file; crypttab names it, noauto) with the
        # user's passphrase and werne's enrolment key.
        sh(lab, f"mkdir -p /etc/werne && truncate -s 20M {IMG} && "
                f"cryptsetup luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --batch-mode "
                f"--key-file - {IMG}", input=USER_PASS)
        sh(lab, f"umask 077 && cat > {ENROL}", input=ENROL_KEY)
        sh(lab, f"cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "
                f"--key-file - {IMG} {ENROL}", input=USER_PASS)
        sh(lab, f"echo 'werne-disk {IMG} none luks,noauto' >> /etc/crypttab")
        assert opens(lab, ENROL_KEY) and opens(lab, USER_PASS)
        load = lambda: inventory_in_use(config, db, load_inventory(config.inventory_dir))  # noqa: E731

        # --- provisioning adds the recovery keyslot, escrows the key and test-unlocks it
        r = cli(cfg, "laptop", "provision", "lap01")
        assert r.exit_code == 0, r.output
        with db.session() as s:
            row = s.get(LaptopRecoveryKey, "lap01")
            assert (row.state, row.check_result, row.device) == ("added", "ok", IMG), row.check_detail
            slot, ciphertext = row.keyslot, row.ciphertext
        shown = cli(cfg, "laptop", "recovery-key", "show", "lap01")
        assert shown.exit_code == 0, shown.output
        recovery = shown.output.strip()
        assert len(recovery) == 55 and recovery not in ciphertext
        assert opens(lab, recovery, slot)
        # The enrolment key is gone: its slot removed, its file deleted.
        assert not opens(lab, ENROL_KEY)
        assert lab.exec("lap01", ["test", "-e", ENROL]).returncode == 1
        assert rule(config, db, load(), "lx-recovery-key")[0] == "pass"

        # --- the user changes the passphrase: the escrowed key still opens the volume
        sh(lab, "umask 077 && cat > /root/newpass", input="a new passphrase")
        sh(lab, f"cryptsetup luksChangeKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "
                f"--key-file - {IMG} /root/newpass && rm /root/newpass", input=USER_PASS)
        assert not opens(lab, USER_PASS)
        assert cli(cfg, "laptop", "provision", "lap01").exit_code == 0
        status, evidence = rule(config, db, load(), "lx-recovery-key")
        assert status == "pass" and f"keyslot {slot}" in evidence, evidence

        # --- the recovery keyslot is removed behind werne's back: the next run's test fails, so does the rule
        sh(lab, f"cryptsetup luksKillSlot --batch-mode {IMG} {slot}")
        assert cli(cfg, "laptop", "provision", "lap01").exit_code == 0  # reported, not a failed run
        status, evidence = rule(config, db, load(), "lx-recovery-key")
        assert status == "fail" and "did not open the volume" in evidence, evidence
        # Nowhere in plain text: artifacts, the database file, the config's folder.
        db.dispose()
        # (lab/ holds the laptops' own disks, not werne's state)
        hits = subprocess.run(["grep", "-rlF", "--exclude-dir=lab", recovery, str(config.state_dir)],
                              capture_output=True, text=True)
        assert hits.stdout == "", hits.stdout

        # --- stolen while switched off: erase queued (a provisioning run queued before it)
        lab.switch_off(["lap01"])
        r = cli(cfg, "laptop", "provision", "lap01")
        assert r.exit_code == 0 and "queued" in r.output, r.output
        r = cli(cfg, "laptop", "erase", "lap01", "--reason", "stolen, police report 2026-25", input="lap02\n")
        assert r.exit_code == 2 and "did not match" in r.output  # the typed confirmation
        r = cli(cfg, "laptop", "erase", "lap01", "--reason", "stolen, police report 2026-25", input="lap01\n")
        assert r.exit_code == 0 and "queued as pending item" in r.output, r.output
        pend = json.loads(cli(cfg, "laptop", "pending", "--json").output)
        assert [(i["kind"], i["state"]) for i in pend] == [("provision", "pending"), ("erase", "pending")]
        assert pend[1]["identity"].startswith("SHA256:")

        # --- it comes online: the watcher erases it first, nothing else runs on it
        from compliance.catchup import make_watcher

        lab.switch_on(["lap01"])
        wait_online(config, db, load(), "lap01")
        w = make_watcher(config, db, load, rng=random.Random(25))
        now = datetime.now(UTC)
        w.tick(now)
        w.tick(now + timedelta(seconds=2))
        steps = [(s.action, s.outcome) for s in w.steps]
        assert steps[0] == ("erase", "done"), w.steps
        assert ("provision", "done") not in steps and ("collect", "done") not in steps, w.steps
        items = {i.kind: i for i in list_items(db, ["lap01"], include_closed=True)}
        assert items["erase"].state == "done" and items["provision"].state == "pending"
        assert "the laptop was erased" in (items["provision"].last_error or "")
        # The laptop powers off; its disk (the overlay's upper layer) keeps a volume nobody can open.
        deadline = time.monotonic() + 60
        while lab.host("lap01").running:
            assert time.monotonic() < deadline, "the erased laptop did not power off"
            time.sleep(1)
        disk = lab.hosts_dir / "lap01" / "upper" / IMG.lstrip("/")
        dump = subprocess.run(["cryptsetup", "luksDump", str(disk)], capture_output=True, text=True).stdout
        assert "Keyslots:\nTokens:" in dump.replace(" ", "").replace("\t", ""), dump
        for k in (recovery, "a new passphrase", ENROL_KEY, USER_PASS):
            assert subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(disk)],
                                  input=k, text=True, capture_output=True).returncode != 0
        # The audit trail: who ordered it, and when it ran.
        from core.audit import current_actor, list_events

        actor = current_actor()
        events = [(e.action, e.actor, e.detail) for e in list_events(db) if "erase" in e.action]
        ordered = [e for e in events if e[0] == "laptop.erase" and e[2].get("result") == "ordered"]
        ran = [e for e in events if e[0] == "laptop.catchup.erase" and e[2]["outcome"] == "done"]
        assert ordered and ordered[0][1] == actor and ordered[0][2]["reason"] == "stolen, police report 2026-25"
        assert ran and ran[0][1] == "werne laptop watch" and f"ordered by {actor}" in ran[0][2]["detail"]
    finally:
        db.dispose()
