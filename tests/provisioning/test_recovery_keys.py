"""LUKS recovery keys without a lab: escrow before sending (one key per laptop, kept across runs),
only ciphertext in the run's extra vars and the lookup that decrypts it, the test-unlock results and
the rule, the audited gate on showing a key, and the werne_luks module itself on a real LUKS volume
in a file (cryptsetup needs no device mapper for keyslots and test unlocks)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.actor import real_user
from core.config import load_config
from core.db import Database
from core.escrow import new_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    key = tmp_path / "rk.key"
    key.write_text(new_key() + "\n")
    key.chmod(0o600)
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\nstate_dir = "{tmp_path / "state"}"\n[recovery_keys]\nkey_file = "{key}"\n'
                   f'allowed_users = ["{real_user()}"]\n', encoding="utf-8")
    config = load_config(cfg)
    db = Database(config.database_url)
    yield config, db, key
    db.dispose()


def lookup_plugin():  # type: ignore[no-untyped-def]
    path = REPO / "playbooks/lookup_plugins/werne_escrow.py"
    spec = importlib.util.spec_from_file_location("werne_escrow_lookup", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LookupModule()


def test_escrowed_before_sent_kept_across_runs_and_shown_only_to_listed_users(site):  # type: ignore[no-untyped-def]
    from core.audit import list_events
    from provisioning.disk.escrow import provision_extravars, show_recovery_key
    from provisioning.errors import RecoveryKeyError

    config, db, key = site
    first = provision_extravars(config, db, ["lap01"], {"lap01": "SHA256:abc"})
    assert provision_extravars(config, db, ["lap01"], {}) == first  # the same key at the next run
    ct = first["werne_recovery_keys"]["lap01"]["ciphertext"]
    assert first["werne_recovery_key_file"] == str(key)
    plain = show_recovery_key(config, db, "lap01")
    assert len(plain) == 55 and plain.count("-") == 7 and plain not in json.dumps(first)
    assert lookup_plugin().run([ct], key_file=str(key)) == [plain]
    with pytest.raises(RecoveryKeyError, match="user 'lehrer' is not in recovery_keys.allowed_users") as e:
        show_recovery_key(config, db, "lap01", actor="lehrer")
    assert e.value.exit_code == 2 and plain not in str(e.value)
    with pytest.raises(RecoveryKeyError, match="no recovery key escrowed"):
        show_recovery_key(config, db, "lap09")
    results = [(ev.actor, ev.detail["result"]) for ev in list_events(db) if ev.action == "laptop.recovery_key.show"]
    assert [r[1].split(":")[0] for r in results] == ["shown", "refused", "refused"]
    # A check run escrows nothing new.
    assert provision_extravars(config, db, ["lap02"], {}, check_mode=True)["werne_recovery_keys"] == {}


def test_a_nodes_job_carries_only_its_laptops_keys_under_a_one_job_key(site, tmp_path):  # type: ignore[no-untyped-def]
    from ansible.errors import AnsibleError

    from provisioning.disk.escrow import NODE_JOB_KEY_FILE, provision_extravars, rewrap_for_node, show_recovery_key

    config, db, key = site
    sent = provision_extravars(config, db, ["lap01", "lap02"], {})
    node_vars, job_key = rewrap_for_node(config, {**sent, "werne_admin_user": "admin"}, ["lap02"])
    assert job_key is not None and job_key.decode() != key.read_text().strip()
    # Only the node's laptop, its keyslot kept; the key file is the job's (the node's worker sets the path).
    assert set(node_vars["werne_recovery_keys"]) == {"lap02"} and node_vars["werne_admin_user"] == "admin"
    assert node_vars["werne_recovery_key_file"] == NODE_JOB_KEY_FILE
    ct = node_vars["werne_recovery_keys"]["lap02"]["ciphertext"]
    job_key_file = tmp_path / NODE_JOB_KEY_FILE
    job_key_file.write_bytes(job_key)
    assert lookup_plugin().run([ct], key_file=str(job_key_file)) == [show_recovery_key(config, db, "lap02")]
    with pytest.raises(AnsibleError, match="does not decrypt with the key file"):
        lookup_plugin().run([ct], key_file=str(key))  # the escrow key does not open it, nor the job key the escrow's
    with pytest.raises(AnsibleError, match="does not decrypt with the key file"):
        lookup_plugin().run([sent["werne_recovery_keys"]["lap02"]["ciphertext"]], key_file=str(job_key_file))
    # A run without recovery keys (the nightly facts) goes to the node as it is.
    assert rewrap_for_node(config, {"werne_admin_user": "admin"}, ["lap02"]) == ({"werne_admin_user": "admin"}, None)


def test_a_key_only_in_a_variable_cannot_reach_ansible(site, monkeypatch):  # type: ignore[no-untyped-def]
    from provisioning.disk.escrow import provision_extravars
    from provisioning.errors import RecoveryKeyError

    config, db, key = site
    monkeypatch.setenv("WERNE_RECOVERY_KEY_KEY", key.read_text().strip())
    config.recovery_keys.key_file = None
    with pytest.raises(RecoveryKeyError, match="recovery_keys.key_file must be set"):
        provision_extravars(config, db, ["lap01"], {})


def test_test_unlock_results_and_the_rule(site):  # type: ignore[no-untyped-def]
    from compliance.engine import evaluate_rule
    from compliance.facts import DeviceFacts, EvalContext
    from compliance.rules import load_baselines
    from provisioning.disk.escrow import provision_extravars, record_results, recovery_key_facts

    config, db, _ = site
    provision_extravars(config, db, ["lap01"], {})
    t0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    rule = load_baselines().rule("lx-recovery-key")

    def judge(now: datetime):  # type: ignore[no-untyped-def]
        facts = {"luks": {"present": True}, "recovery_key": recovery_key_facts(db, ["lap01"])["lap01"]}
        return evaluate_rule(rule, DeviceFacts("lap01", "laptops", facts), EvalContext(config=config, now=now))

    assert judge(t0).evidence == "recovery key escrowed (pending) but never verified on the laptop"
    ok = {"luks": True, "verified": True, "added": True,
          "devices": [{"device": "/dev/nvme0n1p3", "verified": True, "keyslot": 2}]}
    assert record_results(db, {"lap01": ok}, t0) == {"lap01": "recovery key added and verified"}
    assert judge(t0 + timedelta(days=1)).status == "pass"
    assert judge(t0 + timedelta(days=31)).evidence == (
        "last test unlock of /dev/nvme0n1p3 keyslot 2 31 days ago (limit 30)")
    gone = {"luks": True, "verified": False, "detail": "the escrowed recovery key does not open /dev/nvme0n1p3"}
    record_results(db, {"lap01": gone}, t0 + timedelta(days=2))
    r = judge(t0 + timedelta(days=2))
    assert r.status == "fail" and "did not open the volume" in r.evidence
    assert "does not open /dev/nvme0n1p3" in r.evidence


def run_module(module: str, args: dict[str, object], tmp_path: Path) -> dict[str, object]:
    """An Ansible module run as Ansible's args-file mode runs it (the keys only in this test's file)."""
    f = tmp_path / "args.json"
    f.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    p = subprocess.run([sys.executable, str(REPO / "playbooks/library" / module), str(f)], capture_output=True,
                       text=True, timeout=120)
    return json.loads(p.stdout)


def luks(img: Path, *argv: str, key: str) -> int:
    return subprocess.run(["cryptsetup", *argv], input=key, text=True, capture_output=True).returncode


def test_the_module_adds_tests_and_drops_the_enrolment_key_on_a_real_volume(tmp_path):
    from tests.parts import require_tool

    require_tool("cryptsetup", hint="scripts/setup.sh installs cryptsetup-bin")
    img, enrol = tmp_path / "disk.img", tmp_path / "enrol.key"
    img.write_bytes(b"\0" * (20 << 20))
    fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode"]
    assert luks(img, "luksFormat", "--type", "luks2", *fast, "--key-file", "-", str(img), key="user pass") == 0
    enrol.write_text("enrolment")
    assert luks(img, "luksAddKey", *fast, "--key-file", "-", str(img), str(enrol), key="user pass") == 0
    key = "123456-234567-345678-456789-567890-678901-789012-890123"
    args = {"recovery_key": key, "devices": [str(img)], "enrol_key_file": str(enrol)}
    first = run_module("werne_luks.py", args, tmp_path)
    assert (first["changed"], first["verified"], first["added"]) == (True, True, True), first
    slot = first["devices"][0]["keyslot"]  # type: ignore[index]
    assert key not in json.dumps(first) and not enrol.exists()
    assert luks(img, "open", "--test-passphrase", "--key-file", "-", str(img), key="enrolment") != 0
    again = run_module("werne_luks.py", {**args, "keyslot": slot}, tmp_path)
    assert (again["changed"], again["verified"], again["added"]) == (False, True, False), again
    assert luks(img, "luksKillSlot", "--batch-mode", str(img), str(slot), key="") == 0
    gone = run_module("werne_luks.py", args, tmp_path)
    assert (gone.get("failed"), gone["verified"]) == (None, False)
    assert "does not open" in str(gone["detail"]) and "no enrolment key" in str(gone["detail"])
    none = run_module("werne_luks.py", {**args, "devices": [str(tmp_path / "args.json")]}, tmp_path)
    assert (none["luks"], none["verified"], none.get("failed")) == (False, False, None)


def test_the_erase_destroys_every_keyslot_and_refuses_a_laptop_without_luks(tmp_path):
    from tests.parts import require_tool

    require_tool("cryptsetup", hint="scripts/setup.sh installs cryptsetup-bin")
    img = tmp_path / "disk.img"
    img.write_bytes(b"\0" * (20 << 20))
    fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode"]
    assert luks(img, "luksFormat", "--type", "luks2", *fast, "--key-file", "-", str(img), key="user pass") == 0
    (tmp_path / "k2").write_text("recovery")
    assert luks(img, "luksAddKey", *fast, "--key-file", "-", str(img), str(tmp_path / "k2"), key="user pass") == 0
    # poweroff: false, or this test would switch off the machine it runs on.
    done = run_module("werne_lost.py", {"state": "erased", "devices": [str(img)], "test_keys": ["recovery"],
                                        "poweroff": False}, tmp_path)
    assert (done["changed"], done["devices"], done.get("failed")) == (True, [str(img)], None), done
    for k in ("user pass", "recovery"):
        assert luks(img, "open", "--test-passphrase", "--key-file", "-", str(img), key=k) != 0
    dump = subprocess.run(["cryptsetup", "luksDump", str(img)], capture_output=True, text=True).stdout
    assert "Keyslots:\nTokens:" in dump.replace(" ", "").replace("\t", ""), dump
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 4096)
    none = run_module("werne_lost.py", {"state": "erased", "devices": [str(plain)], "poweroff": False}, tmp_path)
    assert none["failed"] is True and "no LUKS volume found" in str(none["msg"])


def test_the_node_worker_names_the_job_key_as_the_controller_does() -> None:
    """deploy/node/werne_node_worker.py runs on the node without werne, so it names the one-job key
    file and the role's extra var itself; they must be the names the controller sends."""
    from core.config import REPO_ROOT
    from provisioning.disk import escrow as disk_escrow

    spec = importlib.util.spec_from_file_location("werne_node_worker_names", REPO_ROOT / "deploy" / "node"
                                                  / "werne_node_worker.py")
    assert spec is not None and spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    assert (worker.RECOVERY_JOB_KEY, worker.RECOVERY_KEY_FILE_VAR) == (disk_escrow.NODE_JOB_KEY_FILE,
                                                                       disk_escrow.KEY_FILE_VAR)
