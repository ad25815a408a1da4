"""The disaster-recovery drill on a lab server: the go-live drill's server (lab.server) with enrolled
simulated iPads, an escrowed Activation Lock code and a compliance run; `werne backup create` on
it; the server destroyed (its container and disk purged); a fresh one installed from the same
config and `werne backup restore`d; then the same iPads (same identities, never enrolled again)
check in to it. tests/server/test_server_drill_lab.py plays it after the go-live part on the same
server and asserts on the result; bench/backup_drill.py prints its measurements.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import load_config
from lab import server as lab_server
from lab.certs import generated_serials
from lab.errors import LabError

PASSWORD_FILE = "/root/werne-backup.password"
ESCROW_KEY_FILE = f"{lab_server.CONFIG_DIR}/activation-lock.key"
WERNE = "/opt/werne/venv/bin/werne"  # [server] install_dir's venv (as root: not through PATH)
EXTRA_CONFIG = (
    f'\n[activation_lock]\nkey_file = "{ESCROW_KEY_FILE}"\nallowed_users = ["{lab_server.SERVICE_USER}"]\n'
    f'\n[backup]\npassword_file = "{PASSWORD_FILE}"\n'
)


@dataclass
class RecoveryDrill:
    """Everything the drill did and measured, for the test's assertions and the bench's report."""

    srv: lab_server.LabServer
    tmp: Path
    serials: list[str]
    sim: Any
    identities_before: dict[str, str]
    escrowed: list[str]
    created: dict[str, Any] = field(default_factory=dict)
    verified: dict[str, Any] = field(default_factory=dict)
    restored: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    first_address: str = ""

    def werne(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`werne ARGS` on the (current) server as its service account."""
        return lab_server.werne(self.srv, *args, timeout=timeout)

    def werne_json(self, *args: str) -> Any:
        p = self.werne(*args, "--json")
        if not p.stdout.strip():
            raise LabError(f"werne {' '.join(args)}: {p.stderr.strip()[-300:]}")
        return json.loads(p.stdout)

    def as_root(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return self.srv.exec([WERNE, *args], timeout=timeout)


def _root_json(srv: lab_server.LabServer, *args: str) -> dict[str, Any]:
    p = srv.exec([WERNE, *args, "--json"], timeout=1800)
    if p.returncode != 0 or not p.stdout.strip():
        raise LabError(f"werne {' '.join(args)} as root (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return dict(json.loads(p.stdout))


def _ok(p: subprocess.CompletedProcess[str], what: str, codes: tuple[int, ...] = (0,)) -> None:
    if p.returncode not in codes:
        raise LabError(f"{what} (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")


def _install(config_file: Path, srv: lab_server.LabServer, work_dir: Path) -> None:
    from server.install import InstallTarget, install_server

    result = install_server(load_config(config_file), InstallTarget(address=srv.address, user="admin"), work_dir,
                            accept_new=True)
    if not result.ok:
        raise LabError(f"server install on {srv.address}: {result.reason}")


def first_server(tmp: Path, serials: list[str], password: str) -> tuple[lab_server.LabServer, Path]:
    """A fresh lab server and its config, with what the city keeps beside the config: the backup
    password and the Activation Lock escrow key. Nothing is installed yet."""
    from cryptography.fernet import Fernet

    srv = lab_server.fresh_server(tmp / "state", owner_pid=os.getpid())
    config_file = lab_server.prepare(srv, serials, tmp / "werne.toml", extra=EXTRA_CONFIG)
    srv.put(PASSWORD_FILE, password + "\n", 0o600)  # the city keeps it outside the server too
    # The escrow key (the install gives it the service account's group: the webhook reads it).
    srv.put(ESCROW_KEY_FILE, Fernet.generate_key().decode("ascii") + "\n", 0o640)
    return srv, config_file


def enrol(srv: lab_server.LabServer, tmp: Path, serials: list[str]) -> RecoveryDrill:
    """The installed server goes live (push certificate) and the simulated iPads enrol through it."""
    lab_server.go_live(srv)
    sim = lab_server.simulated_ipads(srv, serials, tmp / "ipads")
    drill = RecoveryDrill(srv, tmp, serials, sim, {}, serials[:2], first_address=srv.address)
    if not sim.wait_enrolled(timeout=600):
        raise LabError(f"the iPads did not enrol: {sim.enrol_errors}")
    lab_server.apply_declarations(srv)
    return drill


def make_history(drill: RecoveryDrill) -> None:
    """What a backup must keep: two bypass codes escrowed, one compliance run in the chain."""
    _ok(drill.werne("ipad", "activation-lock", "escrow", *drill.escrowed, "--deadline", "120"), "escrow")
    _ok(drill.werne("compliance", "run", "--ipads", timeout=900), "compliance run", (0, 1))
    drill.identities_before = {d.serial: d.cert_pem for d in drill.sim.devices}


def start_server_with_ipads(tmp: Path, n_ipads: int, password: str) -> RecoveryDrill:
    """The first server: installed, live, n_ipads enrolled, two bypass codes escrowed, one compliance run."""
    serials = generated_serials(n_ipads)
    srv, config_file = first_server(tmp, serials, password)
    t = time.perf_counter()
    _install(config_file, srv, tmp / "install")
    install_s = time.perf_counter() - t
    drill = enrol(srv, tmp, serials)
    drill.timings["first_install_s"] = install_s
    make_history(drill)
    return drill


def back_up_destroy_and_restore(drill: RecoveryDrill, password: str) -> None:
    """backup create (+ verify) on the first server, the archive copied off; the server destroyed;
    a fresh server installed from the same config, the archive restored; the iPads back."""
    from cryptography.fernet import Fernet

    from lab.ipad_sim import Simulator

    srv, tmp = drill.srv, drill.tmp
    t = time.perf_counter()
    drill.created = _root_json(srv, "backup", "create")
    drill.timings["backup_create_s"] = time.perf_counter() - t
    drill.verified = _root_json(srv, "backup", "verify", drill.created["archive"])
    archive = srv.read_bytes(drill.created["archive"])
    (tmp / "archive.wbk").write_bytes(archive)
    # The iPads keep their identities; they wait (switched off) while the server is rebuilt, so
    # that nothing but the restored server ever answers them.
    drill.sim.stop()
    srv.lab.down(purge=True)
    new = lab_server.fresh_server(tmp / "state", owner_pid=os.getpid())
    config_file = lab_server.prepare(new, drill.serials, tmp / "werne.toml", extra=EXTRA_CONFIG)
    new.put(PASSWORD_FILE, password + "\n", 0o600)
    # The city's copy of the escrow key is lost too: a new key lets the install start the webhook;
    # the restore puts the archived key back, and only that one decrypts the escrowed codes.
    new.put(ESCROW_KEY_FILE, Fernet.generate_key().decode("ascii") + "\n", 0o640)
    work_dir = tmp / "install-2"  # the new server's host key is pinned anew; the wheels are reused
    work_dir.mkdir()
    shutil.copytree(tmp / "install" / "wheels", work_dir / "wheels")
    t = time.perf_counter()
    _install(config_file, new, work_dir)
    drill.timings["second_install_s"] = time.perf_counter() - t
    new.put_bytes("/root/restore.wbk", archive)
    drill.srv = new
    t = time.perf_counter()
    drill.restored = _root_json(new, "backup", "restore", "/root/restore.wbk")
    drill.timings["restore_s"] = time.perf_counter() - t
    drill.sim = Simulator(f"https://{new.public_name}/mdm", drill.sim.devices, poll_interval=0.5,
                          tls_ca_file=new.tls_ca, resolve={new.public_name: new.address}).start()


def measurements(drill: RecoveryDrill) -> dict[str, Any]:
    return {"ipads": len(drill.serials), "archive_bytes": drill.created.get("size"),
            "archive_files": drill.created.get("entries"), **{k: round(v, 1) for k, v in drill.timings.items()},
            "restore_reported_s": drill.restored.get("duration_s")}
