"""The server drill: the whole life of a server in one story, from a clean start.

Go live: a fresh Debian 12 lab server becomes the MDM server through `werne server install` and one
config. The install is first killed half-way (SIGTERM to the CLI while pip installs werne on the
server) and run again, which completes it. Then the administrator's step (the push certificate from
the lab's stand-in for Apple); 20 iPads enrol over HTTPS through the server's nginx, the ADE way,
their MachineInfo verified against the stand-in for Apple's device CA (then the group sets and the
iPads' mappings in KMFDDM); they get their profiles and answer queries; `werne mdm check` on the
server is all green; a MachineInfo signed outside that CA is refused; a config naming a key the
service account cannot read fails before anything starts, naming the path; and running the install
again changes nothing.

Lose the server (lab.recovery): with an escrowed Activation Lock code and a compliance run in its
history, the server is backed up with `werne backup create`, then destroyed; a fresh server
installed from the same config gets `werne backup restore`; the same iPads check in without
enrolling again (same SCEP identities, no refused check-in), answer a new command, `werne
compliance verify` passes and the escrowed code can be read.

One install and one enrolment serve both halves (they were two drills, each installing a server).
The tests run in file order: the go-live tests on the first server, then the `restored` fixture
replaces it. Timings are measured by bench/golive_drill.py and bench/backup_drill.py, not here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from core.config import REPO_ROOT, load_config
from core.secrets import Secret
from lab import recovery
from lab import server as lab_server
from lab.certs import LAB_HOST, generated_serials
from lab.ipad_sim import bypass_code_for
from server.backup_archive import decrypt, members
from server.install import InstallResult, InstallTarget, install_server
from tests.fixtures.lab import require_root

# The module fixtures (boot, the killed install, the full install, 20 enrolments; later the backup,
# a second server's install and the restore) count against the first test of each half's timeout.
pytestmark = [pytest.mark.lab, pytest.mark.mdm, pytest.mark.slow, pytest.mark.timeout(2700)]

N_IPADS = 20
PASSWORD = "lab drill backup password 2026"
SERVICES = ("werne-webhook", "scepserver", "kmfddm", "nanomdm", "werne-web", "nginx", "postgresql")


@dataclass
class Drill:
    life: recovery.RecoveryDrill  # the server and iPads of the moment (replaced by the restore)
    config_file: Path
    work_dir: Path
    killed: subprocess.CompletedProcess[str]
    completed: InstallResult

    @property
    def srv(self) -> lab_server.LabServer:
        return self.life.srv

    @property
    def tmp(self) -> Path:
        return self.life.tmp

    def install(self, config_file: Path | None = None) -> InstallResult:
        cfg = load_config(config_file or self.config_file)
        return install_server(cfg, InstallTarget(address=self.srv.address, user="admin"), self.work_dir)

    def werne_json(self, *args: str) -> Any:
        return self.life.werne_json(*args)

def _kill_half_way(config_file: Path, srv: lab_server.LabServer, work_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the install through the CLI and SIGTERM it once pip has started on the server."""
    argv = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", "--config", str(config_file),
            "server", "install", "--host", srv.address, "--accept-new", "--work-dir", str(work_dir)]
    marker = "Werne and its dependencies, from the wheels only"
    artifacts = work_dir / "ansible" / "artifacts"
    with subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline and proc.poll() is None:
                # ansible-runner writes each event (a task's start too) as it happens.
                events = [*artifacts.glob("*/job_events/*.json"), *artifacts.glob("*/stdout")]
                if any(marker in f.read_text(errors="replace") for f in events):
                    break
                time.sleep(0.5)
            running = proc.poll() is None
            if running:
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert running, f"the install ended before it got half-way: {out[-500:]} {err[-500:]}"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    require_root()
    from lab.laptops import sweep_orphans

    sweep_orphans()
    tmp = tmp_path_factory.mktemp("server-drill")
    serials = generated_serials(N_IPADS)
    srv, config_file = recovery.first_server(tmp, serials, PASSWORD)
    life: recovery.RecoveryDrill | None = None
    try:
        work_dir = tmp / "install"
        killed = _kill_half_way(config_file, srv, work_dir)
        completed = install_server(load_config(config_file), InstallTarget(address=srv.address, user="admin"),
                                   work_dir)
        assert completed.ok, completed.reason
        life = recovery.enrol(srv, tmp, serials)
        yield Drill(life, config_file, work_dir, killed, completed)
    finally:
        if life is not None:
            life.sim.stop()
        (life.srv if life is not None else srv).lab.down(purge=True)


@pytest.fixture(scope="module")
def restored(drill: Drill) -> recovery.RecoveryDrill:
    """The second half: history made, backed up, the server destroyed, a new one restored."""
    recovery.make_history(drill.life)
    recovery.back_up_destroy_and_restore(drill.life, PASSWORD)
    return drill.life


# ---- go live, on the first server
def test_an_install_killed_half_way_is_completed_by_the_next_run(drill: Drill) -> None:
    assert drill.killed.returncode == 130, drill.killed.stderr
    assert "interrupted" in drill.killed.stdout + drill.killed.stderr
    assert drill.completed.ok and drill.completed.tls == "https"
    # The second run had work left: werne itself (the first was stopped while pip ran).
    assert "Werne and its dependencies, from the wheels only" in drill.completed.changed_tasks
    for unit in SERVICES:
        assert drill.srv.exec(["systemctl", "is-active", unit]).stdout.strip() == "active", unit
    # NanoDEP is left out by the config ([dep] enabled = false): no unit, no binary.
    assert drill.srv.exec(["systemctl", "cat", "nanodep.service"]).returncode != 0
    assert drill.srv.exec(["test", "-e", "/usr/local/bin/depserver"]).returncode != 0


def test_the_server_has_what_the_config_says(drill: Drill) -> None:
    srv = drill.srv
    stat = srv.exec(["stat", "-c", "%U:%G %a", "/etc/werne", "/var/lib/werne", "/etc/werne/werne.toml",
                     "/etc/werne/mdm-api.key", "/etc/werne/nanomdm.env", "/var/lib/werne/scep/depot/ca.key"]).stdout
    assert stat.split("\n")[:6] == ["root:werne 750", "werne:werne 750", "root:werne 640", "root:werne 640",
                                    "root:root 600", "werne:werne 600"], stat
    # One PostgreSQL role, named like the service account, owning NanoMDM's database.
    p = srv.exec(["runuser", "-u", "postgres", "--", "psql", "-tAc",
                  "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'nanomdm'"])
    assert p.stdout.strip() == "werne"
    # The server never reached a package index: werne came from the wheels, the rest from the lab's APT source.
    assert "werne" in srv.exec(["/opt/werne/venv/bin/pip", "list", "--format=freeze"]).stdout
    sources = srv.exec(["sh", "-c", "cat /etc/apt/sources.list.d/*.sources"]).stdout
    assert "apt.lab.werne.test" in sources and "debian.org" not in sources
    # nginx: HTTPS with HSTS, no version anywhere, port 80 redirects.
    ca = str(srv.tls_ca)  # the certificate names the address too, so the address verifies
    r = requests.get(f"https://{srv.address}/", verify=ca, timeout=10)
    assert r.headers.get("Strict-Transport-Security") == "max-age=31536000"
    assert r.headers.get("Server") == "nginx"
    r = requests.get(f"http://{srv.address}/mdm", timeout=10, allow_redirects=False, headers={"Host": LAB_HOST})
    assert (r.status_code, r.headers["Location"]) == (301, f"https://{LAB_HOST}/mdm")
    assert r.headers.get("Server") == "nginx"


def test_twenty_ipads_enrolled_through_the_server_with_machineinfo_verified(drill: Drill) -> None:
    rows = drill.werne_json("ipad", "list")
    assert sorted(x["serial"] for x in rows if x["state"] == "enrolled") == sorted(drill.life.serials)
    # Every iPad went the ADE way: its MachineInfo through nginx to werne's endpoint, served.
    for d in drill.life.sim.devices:
        assert d.cert_pem and d.enrolled
    # A MachineInfo signed outside the device CA (another CA's signer) is refused.
    from lab.certs import make_ca
    from lab.ipad_sim import SimDevice, _machine_info_signer, signed_machine_info

    other = make_ca(drill.tmp / "not-apple")
    device = SimDevice(serial=drill.life.serials[0], udid="00008030-FOREIGN")
    body = signed_machine_info(device, *_machine_info_signer(*other, device.udid))
    r = requests.post(f"https://{drill.srv.address}/mdm/enroll", data=body, timeout=10, verify=str(drill.srv.tls_ca),
                      headers={"Host": LAB_HOST, "Content-Type": "application/pkcs7-signature"})
    # Refused (403, no profile): its signer was not issued by the device CA.
    assert (r.status_code, r.text) == (403, "device not verified\n"), r.status_code


def test_ipads_get_their_profiles_and_answer_queries(drill: Drill) -> None:
    configured = drill.werne_json("ipad", "configure", "--max-devices", "100", "--deadline", "120")
    assert configured["counts"] == {"ok": N_IPADS}, configured
    queried = drill.werne_json("ipad", "query", "--deadline", "120")
    assert queried["counts"] == {"ok": N_IPADS}, queried


def test_mdm_check_on_the_server_is_all_green(drill: Drill) -> None:
    checks = drill.werne_json("mdm", "check")
    bad = {c["name"]: c["detail"] for c in checks["checks"] if not c["ok"]}
    assert bad == {}
    names = [c["name"] for c in checks["checks"]]
    assert "nanodep" not in names and {"tls", "push-cert", "scep", "enrolment", "kmfddm"} <= set(names)
    # Numbers beside the text, for monitoring: what expires gives its days left against its limit.
    values = {c["name"]: c["values"] for c in checks["checks"]}
    for name in ("tls", "push-cert", "scep-ca", "signing-cert"):
        assert isinstance(values[name]["days_left"], int | float), (name, values[name])
        assert values[name]["days_left"] >= values[name]["limit_days"] > 0, (name, values[name])
    assert values["kmfddm"]["werne_sets"] >= 1


def test_a_config_naming_a_file_the_service_account_cannot_read_fails_before_anything(drill: Drill) -> None:
    bad = drill.tmp / "bad.toml"
    bad.write_text(drill.config_file.read_text().replace('signing_key_file = "/etc/werne/profile-signer.key"',
                                                          'signing_key_file = "/root/profile-signer.key"'))
    drill.srv.put("/root/profile-signer.key", "not for werne\n", 0o600)
    before = drill.srv.read("/etc/werne/werne.toml")
    result = drill.install(bad)
    assert not result.ok
    assert result.reason is not None and result.reason.endswith(
        "mdm.signing_key_file /root/profile-signer.key: the service user werne cannot read it")
    assert drill.srv.read("/etc/werne/werne.toml") == before  # the server's config is untouched


def test_running_the_install_again_changes_nothing(drill: Drill) -> None:
    again = drill.install()
    assert again.ok and (again.changed, again.changed_tasks) == (0, []), again.changed_tasks


def test_the_nightly_units_run_in_their_sandbox(drill: Drill) -> None:
    """The hardened oneshot units do their work on the server (systemd-analyze's rating alone
    would not notice a sandbox that takes away what a run needs): the renewal, the compliance run
    with its prune, and the backup as root (pg_dump through runuser, the root-only keys, the
    password file in /root)."""
    srv = drill.srv
    listed = ["sh", "-c", "ls /var/backups/werne/*.wbk 2>/dev/null"]
    before = set(srv.exec(listed).stdout.split())
    for unit in ("werne-renew.service", "werne-compliance.service", "werne-backup.service"):
        started = srv.exec(["systemctl", "start", unit], timeout=2400)
        shown = srv.exec(["systemctl", "show", unit, "-p", "Result", "-p", "ExecMainStatus"]).stdout
        log = srv.exec(["journalctl", "-u", unit, "-n", "15", "--no-pager"]).stdout
        assert started.returncode == 0 and "Result=success" in shown, (unit, shown, started.stderr, log)
    archives = sorted(set(srv.exec(listed).stdout.split()) - before)
    try:
        assert len(archives) == 1, archives
        verified = drill.life.as_root("backup", "verify", archives[0])
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        srv.exec(["rm", "-f", *archives])


# ---- lose the server: back up, destroy, install anew, restore
RESTORED_UNITS = tuple(f"{u}.service" for u in SERVICES if u not in ("nginx", "postgresql"))


def test_the_archive_holds_both_databases_the_keys_and_the_stores(restored: recovery.RecoveryDrill) -> None:
    assert restored.created["databases"] == ["werne's database", "NanoMDM's database"]
    assert restored.created["left_out"] == []
    assert restored.verified["site"] == "lab" and restored.verified["entries"] == restored.created["entries"]
    assert restored.verified["schema"]["werne"] and restored.verified["schema"]["nanomdm"]
    manifest = json.loads(next(members(decrypt((restored.tmp / "archive.wbk").read_bytes(),
                                                Secret(PASSWORD, "test"))))[1])
    paths = {e["path"] for e in manifest["entries"]}
    assert {"/etc/werne/werne.toml", "/etc/werne/activation-lock.key", "/etc/werne/nanomdm.env",
            "/etc/werne/inventory/ipads.csv", "/etc/werne/profile-signer.key", "/var/lib/werne/scep/challenge",
            "/var/lib/werne/scep/depot/ca.key", "/var/lib/werne/mdm/push/push.key", "/var/lib/werne/kmfddm",
            "/var/lib/werne/werne.db", "nanomdm"} <= paths
    assert recovery.PASSWORD_FILE not in paths  # the password stays outside its archive


def test_the_restore_put_everything_back_and_every_service_runs(restored: recovery.RecoveryDrill) -> None:
    r = restored.restored
    assert r["ok"] and {u: r["services"][u] for u in RESTORED_UNITS} == dict.fromkeys(RESTORED_UNITS, "active"), r
    assert r["databases"] == ["NanoMDM's database", "werne's database"]
    srv = restored.srv
    stat = srv.exec(["stat", "-c", "%U:%G %a", "/etc/werne/mdm-api.key", "/etc/werne/nanomdm.env",
                     "/var/lib/werne/scep/depot/ca.key", "/etc/werne/activation-lock.key"]).stdout.split("\n")
    assert stat[:4] == ["root:werne 640", "root:root 600", "werne:werne 600", "root:werne 640"], stat


def test_a_second_restore_onto_the_server_now_holding_data_is_refused(restored: recovery.RecoveryDrill) -> None:
    before = restored.srv.exec(["sha256sum", "/var/lib/werne/scep/depot/ca.key", "/etc/werne/mdm-api.key"]).stdout
    p = restored.as_root("backup", "restore", "/root/restore.wbk")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith("Error: this server is not empty (NanoMDM holds 20 enrolments)"), p.stderr
    after = restored.srv.exec(["sha256sum", "/var/lib/werne/scep/depot/ca.key", "/etc/werne/mdm-api.key"]).stdout
    assert after == before


def test_the_same_ipads_check_in_without_enrolling_again_and_answer_a_new_command(
        restored: recovery.RecoveryDrill) -> None:
    queried = restored.werne_json("ipad", "query", "--deadline", "180")
    assert queried["counts"] == {"ok": N_IPADS}, queried
    # Same identities (no SCEP again), and not one check-in refused (which would make a simulated
    # iPad authenticate anew).
    assert {d.serial: d.cert_pem for d in restored.sim.devices} == restored.identities_before
    assert restored.sim.errors == 0 and all(d.enrolled for d in restored.sim.devices)
    rows = restored.werne_json("ipad", "list")
    assert sorted(x["serial"] for x in rows if x["state"] == "enrolled") == sorted(restored.serials)


def test_compliance_verify_passes_on_the_restored_history(restored: recovery.RecoveryDrill) -> None:
    p = restored.werne("compliance", "verify")
    assert p.returncode == 0, p.stdout + p.stderr


def test_an_escrowed_bypass_code_can_be_read(restored: recovery.RecoveryDrill) -> None:
    serial = restored.escrowed[0]
    device = next(d for d in restored.sim.devices if d.serial == serial)
    p = restored.werne("ipad", "activation-lock", "show", serial)
    assert p.returncode == 0, p.stderr
    assert bypass_code_for(device.udid) in p.stdout

